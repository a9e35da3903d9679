"""The concrete checks through the whole audit machinery: real workers, the global limits'
gates, real services (issue 11, must-shows 1 and 3).

- ``redfish-health`` items pass the ``redfish`` limit's gates; a gate on a node without the
  audit's tag forwards them to ``audit-<tag>``, so only nodes with the tag run them; the BMC
  powered off is flagged.
- ``container`` items run in real containers; a timeout kills the container, the item is
  ``timeout``, and no job container is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from pool.appconfig import CtxpoolCelery
from pool.audits.service import Audits
from pool.contexts.jobs import LABEL_JOB
from pool.queues import audit_queue
from tests import support
from tests.integration.test_checks_live import BMC_PASSWORD, BMC_USER, Bmc

pytestmark = pytest.mark.integration


@pytest.fixture
def audits(producer_app: CtxpoolCelery) -> Audits:
    return Audits(producer_app)


@pytest.fixture
def tag(run_id: str) -> str:
    support.purge_queues([audit_queue(run_id)])
    return run_id


@pytest.fixture
def two_bmcs(tmp_path: Path) -> Iterator[tuple[Bmc, Bmc]]:
    try:
        import sushy_tools  # noqa: F401
    except ImportError:
        support.need(False, "sushy-tools is not installed (pip install sushy-tools)")
    good = Bmc(tmp_path / "good", [{"uuid": "a0000000-0000-4000-8000-0000000000aa",
                                    "name": "good", "power_state": "On"}])  # fmt: skip
    try:
        off = Bmc(tmp_path / "off", [{"uuid": "b0000000-0000-4000-8000-0000000000bb",
                                      "name": "off", "power_state": "Off"}])  # fmt: skip
    except BaseException:
        good.stop()
        raise
    yield good, off
    good.stop()
    off.stop()


def test_redfish_health_through_the_limit_gates_flags_the_bmc_powered_off(
    start_worker: Callable[..., support.Worker],
    audits: Audits,
    tag: str,
    two_bmcs: tuple[Bmc, Bmc],
) -> None:
    creds = {"CTXPOOL_REDFISH_USERNAME": BMC_USER, "CTXPOOL_REDFISH_PASSWORD": BMC_PASSWORD}
    start_worker("rf-1", [f"tag-{tag}"], **creds)
    # a node without the audit's tag: its gate may admit items, but must not run them
    start_worker("rf-other", [f"tag-{tag}-other"], **creds)
    good, off = two_bmcs
    targets = [good.target, off.target] * 5
    batch = audits.submit(
        "redfish-health",
        targets,
        {"scheme": "http", "power_state": "On", "health": ["OK"]},
        tag=tag,
    )
    info = audits.wait(batch, timeout_s=120)
    assert info.complete
    report = audits.report(batch)
    assert report is not None
    assert len(report.rows) == len(targets)
    for row in report.rows:
        assert row.node == "rf-1", row  # only the node with the tag ran items
        if row.target == off.target:
            assert row.state == "fail", row
            assert "Off" in row.summary
        else:
            assert row.state == "pass", row
    assert BMC_PASSWORD not in str(report.model_dump())


def test_container_check_timeout_kills_through_a_batch(
    start_worker: Callable[..., support.Worker],
    audits: Audits,
    tag: str,
    test_image: str,
    docker_engine: docker.DockerClient,
) -> None:
    start_worker("ct-1", [f"tag-{tag}"])
    ok = audits.submit(
        "container",
        ["t-ok", "t-bad"],
        {"image": test_image, "command": ["sh", "-c", 'test "$CTXPOOL_TARGET" = t-ok']},
        tag=tag,
    )
    slow = audits.submit(
        "container",
        ["t-slow"],
        {"image": test_image, "command": ["sleep", "60"], "timeout_s": 3},
        tag=tag,
    )
    audits.wait(ok, timeout_s=90)
    states = {r.target: r.state for r in (audits.report(ok) or pytest.fail("no report")).rows}
    assert states == {"t-ok": "pass", "t-bad": "fail"}
    info = audits.wait(slow, timeout_s=90)
    assert info.complete
    (row,) = (audits.report(slow) or pytest.fail("no report")).rows
    assert row.state == "timeout", row

    def no_jobs() -> bool:
        return not docker_engine.api.containers(all=True, filters={"label": LABEL_JOB})

    support.wait_for(no_jobs, 30, 0.5, what="every job container removed")


def test_drp_params_over_a_machine_filter_writes_results_back_to_drp(
    start_worker: Callable[..., support.Worker],
    producer_app: CtxpoolCelery,
    tag: str,
) -> None:
    from broker_bridge.drpsim import DrpSim
    from pool.appconfig import create_app
    from pool.audits.service import machine_targets

    with DrpSim() as sim:
        drp_env = {"CTXPOOL_DRP_URL": sim.url, "CTXPOOL_DRP_TOKEN": sim.token}
        start_worker("dp-1", [f"tag-{tag}"], **drp_env)
        good = [sim.create_machine(f"web-{i}", "", {"site": "ams"})["Uuid"] for i in range(3)]
        bad = sim.create_machine("web-9", "", {"site": "fra"})["Uuid"]
        sim.create_machine("db-1", "", {"site": "ams"})
        app = create_app()
        settings = producer_app.ctxpool_settings.model_copy(
            update={"drp_url": sim.url, "drp_token": sim.token}
        )
        app.use_settings(settings)
        audits = Audits(app)
        targets = machine_targets(audits.runtime, "Name=Re(^web-)")
        assert sorted(targets) == sorted([*good, bad])  # the filter, not every machine
        batch = audits.submit(
            "drp-params", targets, {"expected": {"site": "ams"}}, tag=tag, writeback=True
        )
        audits.wait(batch, timeout_s=90)
        report = audits.report(batch)
        assert report is not None
        states = {r.target: r.state for r in report.rows}
        assert states == {**dict.fromkeys(good, "pass"), bad: "fail"}

        def written() -> bool:
            return all(
                isinstance((sim.get(u) or {}).get("Params", {}).get("audit/drp-params"), dict)
                for u in targets
            )

        support.wait_for(written, 60, 0.5, what="results written back to DRP")
        result = sim.get(bad)["Params"]["audit/drp-params"]  # type: ignore[index]
        assert result["result"] == "fail"
        assert result["batch"] == batch
        assert "at" in result
        assert "detail" in result
        app.close()
