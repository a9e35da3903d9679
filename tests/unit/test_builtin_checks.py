"""Pure logic of the built-in checks: parsing, comparison, verdicts; registry and limits."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from pydantic import ValidationError

from pool.audits.builtin import container, drp_params, http, redfish, tls
from pool.audits.builtin.targets import parse_target
from pool.audits.checks import CheckContext, load_checks
from pool.contexts.jobs import LABEL_JOB, LABEL_JOB_EXPIRES, LABEL_JOB_OWNER, job_kwargs
from pool.contexts.models import JobSpec, Resources
from pool.limits.spec import DEFAULT_LIMITS, Limits
from pool.settings import Settings

# ---- registry ---------------------------------------------------------------------------------


def test_registry_knows_every_builtin_check() -> None:
    checks = load_checks(refresh=True)
    for name in ("redfish-health", "drp-params", "tls-expiry", "http", "container"):
        assert checks[name].name == name
        assert checks[name].version
    assert checks["redfish-health"].limit == "redfish"
    assert checks["drp-params"].limit == "drp-api"
    assert checks["http"].limit == checks["tls-expiry"].limit == "http"
    assert checks["container"].limit is None


def test_limits_of_checks_are_configured_by_default() -> None:
    limits = Limits.model_validate({})
    assert "redfish" in DEFAULT_LIMITS
    spec = limits.get("redfish")
    assert spec.concurrency == 4
    assert spec.render_key({"host": "bmc1:8443"}) == "bmc1:8443"


# ---- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "authority"),
    [
        ("bmc1", "bmc1", None, "bmc1"),
        ("bmc1:8443", "bmc1", 8443, "bmc1:8443"),
        ("https://bmc1:8443/redfish/v1", "bmc1", 8443, "bmc1:8443"),
        ("[fe80::1]:443", "fe80::1", 443, "[fe80::1]:443"),
    ],
)
def test_parse_target(text: str, host: str, port: int | None, authority: str) -> None:
    where = parse_target(text)
    assert (where.host, where.port, where.authority()) == (host, port, authority)


@pytest.mark.parametrize("text", ["", "https://admin:pw@bmc1", "bmc1:99999", "https://"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"target|user info") as info:
        parse_target(text)
    assert "pw" not in str(info.value).replace("pass", "")


# ---- redfish-health ---------------------------------------------------------------------------

SYSTEM = {
    "Id": "1",
    "Status": {"State": "Enabled", "Health": "OK"},
    "PowerState": "On",
    "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}]},
}


def test_redfish_facts_and_mismatches() -> None:
    params = redfish.RedfishParams(firmware="1.*")
    assert redfish.needs_manager(SYSTEM, params)
    facts = redfish.system_facts("1", SYSTEM, {"FirmwareVersion": "1.00"})
    assert (facts.health, facts.power_state, facts.firmware) == ("OK", "On", "1.00")
    assert facts.firmware_source == "manager"
    assert redfish.mismatches(facts, params) == []

    off = redfish.system_facts("1", {**SYSTEM, "PowerState": "Off"}, {"FirmwareVersion": "0.9"})
    assert redfish.mismatches(off, params) == [
        "power Off (expected On)",
        "firmware 0.9 (expected 1.*)",
    ]
    sick = redfish.system_facts("1", {**SYSTEM, "Status": {"Health": "Critical"}}, None)
    assert redfish.mismatches(sick, redfish.RedfishParams()) == ["health Critical (expected OK)"]
    # no expectations: nothing to miss
    nothing = redfish.RedfishParams(health=[], power_state=None)
    assert redfish.mismatches(sick, nothing) == []


def test_redfish_bios_version_preferred_in_auto() -> None:
    system = {**SYSTEM, "BiosVersion": "U30 v2.54"}
    params = redfish.RedfishParams(firmware="U30 v2.5*")
    assert not redfish.needs_manager(system, params)
    facts = redfish.system_facts("1", system, None)
    assert (facts.firmware, facts.firmware_source) == ("U30 v2.54", "bios")
    assert redfish.mismatches(facts, params) == []
    assert redfish.needs_manager(
        system, redfish.RedfishParams(firmware="x", firmware_source="manager")
    )
    assert not redfish.needs_manager(system, redfish.RedfishParams())  # firmware not checked


def test_redfish_member_ids_and_params() -> None:
    collection = {"Members": [{"@odata.id": "/redfish/v1/Systems/a/"}, {"@odata.id": "/x/b"}]}
    assert redfish.member_ids(collection) == ["a", "b"]
    assert redfish.member_ids({}) == []
    with pytest.raises(ValidationError):
        redfish.RedfishParams(system_id="../Managers")
    with pytest.raises(ValidationError) as info:
        redfish.RedfishParams(password="hunter2", bogus=1)  # type: ignore[call-arg]
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(redfish.RedfishParams(password="hunter2"))  # type: ignore[arg-type]


def test_redfish_limit_bucket_per_bmc() -> None:
    check = redfish.RedfishHealthCheck()
    params = check.parse_params({})
    assert check.limit_fields("https://bmc7:8443", params)["host"] == "bmc7:8443"
    assert check.limit_fields("bmc7", params)["host"] == "bmc7"


# ---- drp-params -------------------------------------------------------------------------------


def test_same_value_is_json_equality() -> None:
    assert drp_params.same_value(1, 1.0)
    assert not drp_params.same_value(True, 1)
    assert not drp_params.same_value("1", 1)
    assert drp_params.same_value({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not drp_params.same_value({"a": [1]}, {"a": [1, 2]})
    assert not drp_params.same_value({"a": 1}, {"b": 1})
    assert not drp_params.same_value(None, False)


def test_compare_params_lists_every_mismatch_sorted() -> None:
    actual: dict[str, Any] = {
        "ntp/servers": ["a", "b"],
        "bios/mode": "legacy",
        "kernel-console": "ttyS0",
        "ipmi/password": "sekrit",
        "debug": True,
    }
    expected = {
        "ntp/servers": ["a", "b"],
        "bios/mode": "uefi",
        "raid/level": 10,
        "ipmi/password": "other",
    }
    found = drp_params.compare_params(
        actual, expected, absent=["debug", "nope"], redact=["*password*"]
    )
    assert found == [
        {"param": "bios/mode", "expected": "uefi", "actual": "legacy"},
        {"param": "ipmi/password", "expected": "<redacted>", "actual": "<redacted>"},
        {"param": "raid/level", "expected": 10, "actual": None, "missing": True},
        {"param": "debug", "expected": None, "actual": True, "unwanted": True},
    ]
    assert "sekrit" not in str(found)
    assert [drp_params.describe(m) for m in found] == [
        "bios/mode=legacy (expected uefi)",
        "ipmi/password=<redacted> (expected <redacted>)",
        "raid/level not set",
        "debug is set",
    ]
    assert drp_params.compare_params(actual, {"bios/mode": "legacy"}) == []


def test_drp_params_needs_something_to_check() -> None:
    with pytest.raises(ValidationError):
        drp_params.DrpParamsParams()
    assert drp_params.DrpParamsParams(absent=["x"]).aggregate


# ---- tls-expiry -------------------------------------------------------------------------------


def _probe(valid: bool = True) -> tls.TlsProbe:
    return tls.TlsProbe(b"", valid, None if valid else "self-signed certificate", "TLSv1.3")


def test_tls_evaluate() -> None:
    params = tls.TlsParams(min_days=30)
    ok = tls.evaluate({"days_left": 365.0}, _probe(), params)
    assert ok.result == "pass"
    assert ok.detail["chain_valid"] is True
    soon = tls.evaluate({"days_left": 3.5}, _probe(), params)
    assert (soon.result, soon.summary) == ("fail", "expires in 3.5 days (< 30)")
    gone = tls.evaluate({"days_left": -2.0}, _probe(), params)
    assert gone.summary == "expired 2.0 days ago"
    bad = tls.evaluate({"days_left": 365.0}, _probe(False), params)
    assert bad.result == "fail"
    assert "chain invalid: self-signed" in bad.summary
    lenient = tls.evaluate(
        {"days_left": 365.0}, _probe(False), tls.TlsParams(require_valid_chain=False)
    )
    assert lenient.result == "pass"
    assert "chain invalid" in lenient.summary


def test_tls_cert_facts(tmp_path: Any) -> None:
    from tests.tlscerts import make_ca, make_leaf

    ca = make_ca()
    now = datetime.datetime.now(datetime.UTC)
    leaf = make_leaf(ca, "localhost", days=10)
    facts = tls.cert_facts(leaf.der, now)
    assert 9.9 < facts["days_left"] <= 10.0
    assert facts["subject"] == "CN=localhost"
    assert facts["issuer"] == "CN=ctxpool test CA"
    assert facts["self_signed"] is False
    with pytest.raises(ValueError, match=r"certificate|ASN|parse|error"):
        tls.cert_facts(b"not a certificate", now)


def test_tls_limit_fields_match_http_keys() -> None:
    check = tls.TlsExpiryCheck()
    params = check.parse_params({})
    assert check.limit_fields("example.org:443", params)["host"] == "example.org"
    assert check.limit_fields("example.org:8443", params)["host"] == "example.org:8443"


# ---- http -------------------------------------------------------------------------------------


def test_http_evaluate() -> None:
    params = http.HttpParams(body_regex=r'"ok":\s*true', max_latency_ms=500)
    assert http.evaluate(200, 12.0, '{"ok": true}', params) == []
    assert http.evaluate(503, 900.0, "down", params) == [
        "HTTP 503 (expected 200)",
        "900 ms (max 500)",
        "body does not match '\"ok\":\\\\s*true'",
    ]
    assert http.evaluate(204, 1.0, "", http.HttpParams(expected_status=[200, 204])) == []


def test_http_params_validation() -> None:
    with pytest.raises(ValidationError):
        http.HttpParams(body_regex="(unclosed")
    with pytest.raises(ValidationError):
        http.HttpParams(expected_status=[42])
    with pytest.raises(ValidationError):
        http.HttpParams(expected_status=[])


def test_http_request_and_keys_reuse_the_integration() -> None:
    check = http.HttpCheck()
    params = check.parse_params({"method": "head", "headers": {"X-Api-Key": "k"}})
    req = http.request_for("https://svc.example:8443/health?token=abc", params, 5.0)  # type: ignore[arg-type]
    assert (req.method, req.timeout_s, req.limit) == ("HEAD", 5.0, "http")
    fields = check.limit_fields("https://svc.example:8443/health?token=abc", params)
    assert fields["host"] == "svc.example:8443"
    assert fields["method"] == "HEAD"


def test_http_safe_error_cuts_queries() -> None:
    exc = ValueError("Max retries exceeded with url: /health?token=abc123 (Caused by X)")
    text = http.safe_error(exc)
    assert "abc123" not in text
    assert text.startswith("ValueError: Max retries exceeded with url: /health?")


def test_http_run_refuses_non_urls() -> None:
    ctx = CheckContext(settings=Settings(), deadline=time.monotonic() + 5)
    check = http.HttpCheck()
    result = check.run("ftp://x/y?secret=1", check.parse_params({}), ctx)
    assert result.result == "error"
    assert "secret" not in result.summary


# ---- container --------------------------------------------------------------------------------


def test_container_interpret_exit_codes() -> None:
    assert container.interpret(0, "").result == "pass"
    failed = container.interpret(3, "disk /dev/sda degraded\n")
    assert (failed.result, failed.summary) == ("fail", "exit 3: disk /dev/sda degraded")
    assert failed.detail == {"exit_code": 3}


def test_container_interpret_json() -> None:
    out = 'progress...\n{"result": "fail", "summary": "2 disks", "detail": {"disks": 2}}\nbye\n'
    verdict = container.interpret(0, out)
    assert (verdict.result, verdict.summary) == ("fail", "2 disks")
    assert verdict.detail == {"exit_code": 0, "reported": {"disks": 2}}
    # a non-zero exit cannot pass
    lying = container.interpret(1, '{"result": "pass"}')
    assert lying.result == "fail"
    assert "exit 1 despite reporting pass" in lying.summary
    # JSON without a valid result is ignored: the exit code decides
    assert container.interpret(0, '{"result": "maybe"}\n{"x": 1}').result == "pass"
    assert container.interpret(0, '{"result": "error"}').result == "error"


def test_container_params() -> None:
    with pytest.raises(ValidationError):
        container.ContainerParams(image="x", env={"CTXPOOL_TARGET": "other"})
    params = container.ContainerParams(image="x", timeout_s=2)
    assert container.ContainerCheck().timeout_s(params) == 2 + container.OVERHEAD_S


def test_job_kwargs_secure_defaults() -> None:
    settings = Settings(default_memory_mb=256, default_pids=64)
    job = JobSpec(
        image="img",
        command=["sh", "-c", "true"],
        timeout_s=10,
        resources=Resources(cpus=0.5),
        labels={"ctxpool.job-check": "container"},
    )
    kw = job_kwargs(job, settings, "ctxpool-job-1", "node-a", now=1000.0)
    assert kw["privileged"] is False
    assert kw["cap_drop"] == ["ALL"]
    assert kw["security_opt"] == ["no-new-privileges"]
    assert (kw["mem_limit"], kw["nano_cpus"], kw["pids_limit"]) == ("256m", 500_000_000, 64)
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True
    assert "/tmp" in kw["tmpfs"]
    assert kw["restart_policy"] == {"Name": "no"}
    assert kw["labels"][LABEL_JOB] == "ctxpool-job-1"
    assert kw["labels"][LABEL_JOB_OWNER] == "node-a"
    assert int(kw["labels"][LABEL_JOB_EXPIRES]) == 1000 + 10 + 300
    assert "ctxpool.uuid" not in kw["labels"]  # context sweeps must never see a job
    networked = job_kwargs(
        job.model_copy(update={"network": True, "read_only": False}), settings, "n", "o", 0.0
    )
    assert "network_mode" not in networked
    assert "read_only" not in networked
