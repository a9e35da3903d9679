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
