"""``deploy/prometheus``: the scrape configuration and alert rules are valid for Prometheus
(``promtool``, from Debian's ``prometheus`` package: ``scripts/bootstrap.sh``
``ensure_promtool``), every alert passes its unit tests, and the rules only use documented
metrics."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.support import REPO, need
from tests.unit.test_metrics_doc import documented

DEPLOY = REPO / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    need(tool is not None, "promtool is not installed (apt-get install prometheus)")
    assert tool is not None
    out = subprocess.run(
        [tool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "ctxpool-rules.yml"),
        ("test", "rules", "ctxpool-rules.test.yml"),
    ],
)
def test_promtool_accepts_the_deploy_files(args: tuple[str, ...]) -> None:
    out = promtool(*args)
    assert "SUCCESS" in out


def rules() -> list[dict[str, str]]:
    loaded = yaml.safe_load((DEPLOY / "ctxpool-rules.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((DEPLOY / "ctxpool-rules.test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == {rule["alert"] for rule in rules()}


def test_rules_use_documented_metrics_only() -> None:
    names = {name for metrics in documented().values() for name in metrics}
    used = {m for rule in rules() for m in re.findall(r"\bctxpool_\w+", rule["expr"])}
    assert used
    assert used <= names, used - names


def test_the_scrape_config_scrapes_each_kind_of_process() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    ports = {
        job["job_name"]: {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
        for job in config["scrape_configs"]
    }
    assert ports == {
        "ctxpool-exporter": {"9808"},
        "ctxpool-bridge": {"9809"},
        "ctxpool-node": {"9810"},
    }
