"""The built-in checks against real services: sushy-tools' Redfish emulator, the DRP
simulator, loopback TLS and HTTP servers, and the Docker engine."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from broker_bridge.drpsim import DrpSim
from pool.audits.checks import CheckContext, CheckResult, get_check
from pool.contexts.engine import DockerEngine
from pool.contexts.jobs import LABEL_JOB, list_jobs
from pool.contexts.models import JobSpec
from pool.drp.config import DrpConfig
from pool.drp.rest import DrpRest
from pool.drp.sync import TokenSource
from pool.settings import Settings
from tests.support import RecordingServer, free_port, need, wait_for
from tests.tlscerts import TlsServer, make_ca, make_leaf, make_self_signed

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]

BMC_USER, BMC_PASSWORD = "admin", "redfish-pw-7"


def run_check(
    name: str,
    target: str,
    params: dict[str, Any],
    settings: Settings | None = None,
    **providers: Any,
) -> CheckResult:
    """Run one check the way the audit runner does: registry, params model, deadline."""
    check = get_check(name)
    parsed = check.parse_params(params)
    ctx = CheckContext(
        settings=settings or Settings(),
        deadline=time.monotonic() + check.timeout_s(parsed),
        node="checks-test",
        batch="b-test",
        **providers,
    )
    return check.run(target, parsed, ctx)


# ---- redfish-health: sushy-tools' emulator ---------------------------------------------------


class Bmc:
    """One ``sushy-emulator`` (fake driver, basic auth) on a loopback port: one BMC."""

    def __init__(self, directory: Path, systems: list[dict[str, Any]]) -> None:
        import bcrypt

        directory.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(BMC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (directory / "htpasswd").write_text(f"{BMC_USER}:{hashed}\n")
        (directory / "emulator.conf").write_text(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(directory / 'htpasswd')!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        )
        self.port = free_port()
        self.log = directory / "emulator.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from sushy_tools.emulator.main import main; main()",
                    "--config",
                    str(directory / "emulator.conf"),
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._up, 20, 0.1, what=f"sushy-emulator on :{self.port}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sushy-emulator exited:\n{self.log.read_text()[-2000:]}")
        try:
            return requests.get(self.url("/redfish/v1/"), timeout=1).status_code in (200, 401)
        except requests.RequestException:
            return False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.target}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def bmcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Bmc]]:
    try:
        import sushy_tools  # noqa: F401
    except ImportError:
        need(False, "sushy-tools is not installed (pip install sushy-tools)")
    base = tmp_path_factory.mktemp("bmcs")
    made: dict[str, Bmc] = {}
    try:
        made["good"] = Bmc(
            base / "good",
            [
                {
                    "uuid": "a0000000-0000-4000-8000-00000000000a",
                    "name": "node-a",
                    "power_state": "On",
                },
            ],
        )
        made["off"] = Bmc(
            base / "off",
            [
                {
                    "uuid": "b0000000-0000-4000-8000-00000000000b",
                    "name": "node-b",
                    "power_state": "Off",
                },
            ],
        )
        made["reset"] = Bmc(
            base / "reset",
            [
                {
                    "uuid": "c0000000-0000-4000-8000-00000000000c",
                    "name": "node-c",
                    "power_state": "On",
                },
            ],
        )
        yield made
    finally:
        for bmc in made.values():
            bmc.stop()


def redfish_settings() -> Settings:
    return Settings(redfish_username=BMC_USER, redfish_password=BMC_PASSWORD)  # type: ignore[arg-type]


REDFISH = {"scheme": "http", "power_state": "On", "health": ["OK"], "firmware": "1.*"}


def test_redfish_health_flags_the_bmc_in_an_unexpected_state(
    bmcs: dict[str, Bmc], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = run_check("redfish-health", bmcs["good"].target, REDFISH, redfish_settings())
    assert good.result == "pass", good
    system = good.detail["systems"]["a0000000-0000-4000-8000-00000000000a"]
    assert system == {
        "health": "OK",
        "power_state": "On",
        "firmware": "1.00",  # the emulator's Manager.FirmwareVersion
        "firmware_source": "manager",
        "mismatches": [],
    }
    off = run_check("redfish-health", bmcs["off"].target, REDFISH, redfish_settings())
    assert off.result == "fail", off
    assert off.summary == "b0000000-0000-4000-8000-00000000000b: power Off (expected On)"
    # an expectation on firmware that the BMC does not meet
    old = run_check(
        "redfish-health", bmcs["good"].target, {**REDFISH, "firmware": "2.*"}, redfish_settings()
    )
    assert old.result == "fail"
    assert "firmware 1.00 (expected 2.*)" in old.summary
    assert BMC_PASSWORD not in caplog.text


def test_redfish_health_sees_a_power_off_through_redfish(bmcs: dict[str, Bmc]) -> None:
    bmc = bmcs["reset"]
    system = "c0000000-0000-4000-8000-00000000000c"
    before = run_check(
        "redfish-health", bmc.target, {**REDFISH, "system_id": system}, redfish_settings()
    )
    assert before.result == "pass", before
    reply = requests.post(
        bmc.url(f"/redfish/v1/Systems/{system}/Actions/ComputerSystem.Reset"),
        json={"ResetType": "ForceOff"},
        auth=(BMC_USER, BMC_PASSWORD),
        timeout=5,
    )
    assert reply.status_code in (200, 202, 204), reply.text

    # the fake driver applies a power change 1-11 s later, like hardware
    def off() -> CheckResult | None:
        result = run_check(
            "redfish-health", bmc.target, {**REDFISH, "system_id": system}, redfish_settings()
        )
        return result if result.result == "fail" else None

    after = wait_for(off, timeout_s=20, interval_s=0.5, what="the check to see the system off")
    assert after.detail["systems"][system]["power_state"] == "Off"


def test_redfish_health_wrong_credentials_and_unreachable_are_errors(
    bmcs: dict[str, Bmc],
) -> None:
    refused = run_check(
        "redfish-health",
        bmcs["good"].target,
        {**REDFISH, "username": "admin", "password": "wrong-pw-123"},
    )
    assert refused.result == "error"
    assert "HTTP 401 (user admin refused)" in refused.summary
    assert "wrong-pw-123" not in refused.model_dump_json()
    gone = run_check("redfish-health", f"127.0.0.1:{free_port()}", REDFISH, redfish_settings())
    assert gone.result == "error"
    assert "ConnectionError" in gone.summary


# ---- drp-params: the DRP simulator -----------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim() as s:
        yield s


def drp_provider(sim: DrpSim) -> Callable[[], DrpRest]:
    return lambda: DrpRest(TokenSource(DrpConfig(url=sim.url, token=sim.token)))  # type: ignore[arg-type]


def test_drp_params_compares_aggregated_params(sim: DrpSim) -> None:
    sim.put_profile("site-defaults", {"ntp/servers": ["10.0.0.1"], "bios/mode": "uefi"})
    good = sim.create_machine("m-good", params={"raid/level": 10})
    bad = sim.create_machine(
        "m-bad", params={"raid/level": 5, "bios/mode": "legacy", "ipmi/password": "pw-in-drp"}
    )
    for machine in (good, bad):
        sim.update_machine(machine["Uuid"], Profiles=["site-defaults"])
    params = {
        "expected": {"ntp/servers": ["10.0.0.1"], "bios/mode": "uefi", "raid/level": 10},
        "absent": ["ipmi/password"],
    }
    provider = drp_provider(sim)
    passed = run_check("drp-params", good["Uuid"], params, drp_provider=provider)
    assert passed.result == "pass", passed
    assert passed.detail["machine"] == "m-good"
    failed = run_check("drp-params", bad["Uuid"], params, drp_provider=provider)
    assert failed.result == "fail"
    assert failed.summary == (
        "bios/mode=legacy (expected uefi); raid/level=5 (expected 10); ipmi/password is set"
    )
    assert "pw-in-drp" not in failed.model_dump_json()
    # without aggregation the profile's params are missing
    direct = run_check(
        "drp-params", good["Uuid"], {**params, "aggregate": False}, drp_provider=provider
    )
    assert direct.result == "fail"
    assert "ntp/servers not set" in direct.summary
    # it went through the DRP client with the token, asking for aggregation
    assert any(
        path == f"/api/v3/machines/{good['Uuid']}?aggregate=true" and auth == f"Bearer {sim.token}"
        for _, path, auth in sim.seen
    )
    missing = run_check("drp-params", "no-such-machine", params, drp_provider=provider)
    assert (missing.result, missing.summary) == ("error", "DRP has no machine no-such-machine")


# ---- tls-expiry: loopback TLS servers --------------------------------------------------------


def test_tls_expiry(tmp_path: Path) -> None:
    ca = make_ca()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.pem)
    long_lived = make_leaf(ca, "localhost", days=400).write(tmp_path, "long")
    expiring = make_leaf(ca, "localhost", days=5).write(tmp_path, "soon")
    self_signed = make_self_signed("localhost", days=400).write(tmp_path, "self")
    params = {"min_days": 30, "ca_bundle": str(bundle), "server_name": "localhost"}

    with TlsServer(*long_lived) as server:
        ok = run_check("tls-expiry", server.target, params)
        assert ok.result == "pass", ok
        assert ok.detail["chain_valid"] is True
        assert 399 < ok.detail["days_left"] <= 400
        # the same server, judged by the system CAs, does not chain
        system = run_check("tls-expiry", server.target, {"server_name": "localhost"})
        assert system.result == "fail"
        assert system.detail["chain_valid"] is False
        # the host name is checked: the certificate does not name this one
        other = run_check("tls-expiry", server.target, {**params, "server_name": "other.test"})
        assert other.result == "fail"
        assert "hostname" in (other.detail["verify_error"] or "").lower()

    with TlsServer(*expiring) as server:
        soon = run_check("tls-expiry", server.target, params)
        assert soon.result == "fail"
        assert soon.detail["chain_valid"] is True
        assert soon.summary.startswith("expires in 4.") or soon.summary.startswith("expires in 5.")

    with TlsServer(*self_signed) as server:
        alone = run_check("tls-expiry", server.target, params)
        assert alone.result == "fail"
        assert alone.detail["chain_valid"] is False
        assert alone.detail["self_signed"] is True
        assert "chain invalid: self-signed certificate" in alone.summary
        # its dates are read all the same
        assert alone.detail["days_left"] > 399

    nobody = run_check("tls-expiry", f"127.0.0.1:{free_port()}", params)
    assert nobody.result == "error"


# ---- http: a loopback server -----------------------------------------------------------------


def test_http_status_latency_and_body() -> None:
    with RecordingServer() as server:
        url = f"{server.url}/health?token=s3cr3t"
        ok = run_check("http", url, {"body_regex": r'"ok":\s*true', "max_latency_ms": 2000})
        assert ok.result == "pass", ok
        assert ok.detail["status"] == 200
        assert ok.detail["body_matched"] is True
        assert ok.detail["url"] == f"{server.url}/health"  # the query (a secret) is cut
        assert "s3cr3t" not in ok.model_dump_json()
        assert server.requests[-1][1] == "/health?token=s3cr3t"

        body = run_check("http", url, {"body_regex": "ready"})
        assert (body.result, body.detail["body_matched"]) == ("fail", False)

        status = run_check("http", url, {"expected_status": [204]})
        assert (status.result, status.summary) == ("fail", "HTTP 200 (expected 204)")

    with RecordingServer(delay_s=0.3) as slow:
        late = run_check("http", f"{slow.url}/x", {"max_latency_ms": 100})
        assert late.result == "fail"
        assert late.detail["latency_ms"] >= 300

    with RecordingServer(throttle_first=1, retry_after_s=7) as busy:
        from pool.limits.task import Deferred

        with pytest.raises(Deferred) as deferred:
            run_check("http", f"{busy.url}/x", {})
        assert deferred.value.delay_s == 7.0

    down = run_check("http", f"http://127.0.0.1:{free_port()}/x?k=v", {})
    assert down.result == "error"
    assert "ConnectionError" in down.summary
    assert "k=v" not in down.summary


# ---- container: the Docker engine ------------------------------------------------------------


@pytest.fixture
def engine(docker_engine: docker.DockerClient, test_image: str) -> Iterator[DockerEngine]:
    settings = Settings(
        node_name="checks-test",
        allowed_images=["ctxpool-test/*"],
        pull_missing_images=False,
        default_memory_mb=64,
        default_pids=32,
    )
    yield DockerEngine(docker_engine, settings)
    for row in list_jobs(docker_engine, "checks-test"):
        docker_engine.api.remove_container(row["Id"], force=True)


def container_check(
    engine: DockerEngine, params: dict[str, Any], target: str = "m-1"
) -> CheckResult:
    return run_check("container", target, params, engine.settings, engine_provider=lambda: engine)


def test_container_check_pass_fail_and_json(engine: DockerEngine, test_image: str) -> None:
    ok = container_check(
        engine, {"image": test_image, "command": ["sh", "-c", 'test "$CTXPOOL_TARGET" = m-1']}
    )
    assert ok.result == "pass", ok
    bad = container_check(
        engine, {"image": test_image, "command": ["sh", "-c", "echo degraded >&2; exit 3"]}
    )
    assert (bad.result, bad.detail["exit_code"]) == ("fail", 3)
    assert bad.detail["stderr"] == "degraded"
    script = (
        'printf \'{"result": "fail", "summary": "1 disk", "detail": {"target": "%s"}}\\n\' '
        '"$CTXPOOL_TARGET"'
    )
    reported = container_check(engine, {"image": test_image, "command": ["sh", "-c", script]})
    assert (reported.result, reported.summary) == ("fail", "1 disk")
    assert reported.detail["reported"] == {"target": "m-1"}
    assert list_jobs(engine.client, "checks-test") == []


def test_container_check_runs_locked_down(
    engine: DockerEngine, test_image: str, docker_engine: docker.DockerClient
) -> None:
    seen: dict[str, Any] = {}

    def inspect_running() -> bool:
        rows = list_jobs(docker_engine, "checks-test")
        if rows:
            seen.update(docker_engine.api.inspect_container(rows[0]["Id"]))
        return bool(rows)

    watcher = threading.Thread(target=lambda: wait_for(inspect_running, 20, 0.05, "a job"))
    watcher.start()
    result = container_check(engine, {"image": test_image, "command": ["sleep", "2"]})
    watcher.join()
    assert result.result == "pass", result
    host = seen["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["PidsLimit"] == 32
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert seen["Config"]["Labels"][LABEL_JOB].startswith("ctxpool-job-")
    assert "ctxpool.uuid" not in seen["Config"]["Labels"]
    assert seen["Config"]["Env"].count("CTXPOOL_TARGET=m-1") == 1


def test_job_output_shows_the_lockdown(engine: DockerEngine, test_image: str) -> None:
    """What the container itself sees (the path the container check takes)."""
    script = (
        "busybox touch /rootfs-write 2>/dev/null && echo rw || echo ro; "
        "busybox touch /tmp/x && echo tmp-ok; "
        "busybox grep CapEff /proc/self/status; busybox grep NoNewPrivs /proc/self/status; "
        "ls /sys/class/net"
    )
    job = engine.run_job(JobSpec(image=test_image, command=["sh", "-c", script]))
    assert job.exit_code == 0, job
    lines = job.stdout.split()
    assert "ro" in lines
    assert "tmp-ok" in lines
    assert lines[lines.index("CapEff:") + 1] == "0000000000000000"
    assert lines[lines.index("NoNewPrivs:") + 1] == "1"
    assert [x for x in lines if x in ("lo", "eth0")] == ["lo"]  # no network but loopback
    assert list_jobs(engine.client) == []


def test_container_check_timeout_kills_and_removes(
    engine: DockerEngine, test_image: str, docker_engine: docker.DockerClient
) -> None:
    started = time.monotonic()
    result = container_check(
        engine, {"image": test_image, "command": ["sleep", "60"], "timeout_s": 2}
    )
    took = time.monotonic() - started
    assert result.result == "timeout", result
    assert took < 15, f"took {took:.1f}s"
    assert list_jobs(docker_engine, "checks-test") == []
    assert docker_engine.api.containers(all=True, filters={"label": LABEL_JOB + "=x"}) == []


def test_container_check_disallowed_image_makes_no_container(
    engine: DockerEngine, docker_engine: docker.DockerClient
) -> None:
    events_since = int(time.time())
    result = container_check(engine, {"image": "evil/miner:latest", "command": ["true"]})
    assert result.result == "error"
    assert "not allowed" in result.summary
    creates = docker_engine.api.events(
        since=events_since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": LABEL_JOB},
    )
    assert list(creates) == []
    assert list_jobs(docker_engine, "checks-test") == []


def test_container_check_unknown_command_is_an_error_and_removed(
    engine: DockerEngine, test_image: str, docker_engine: docker.DockerClient
) -> None:
    result = container_check(engine, {"image": test_image, "command": ["/no/such/binary"]})
    assert result.result in ("error", "fail"), result
    assert list_jobs(docker_engine, "checks-test") == []


def test_remove_stale_jobs_finds_leftovers_by_label(
    engine: DockerEngine, test_image: str, docker_engine: docker.DockerClient
) -> None:
    """A job container left behind (a node killed mid-job) is found by its labels once its
    expiry has passed, and only then."""
    from pool.contexts.jobs import job_kwargs, remove_stale_jobs

    job = JobSpec(image=test_image, command=["sleep", "60"], timeout_s=5)
    kwargs = job_kwargs(job, engine.settings, "ctxpool-job-leftover", "checks-test", time.time())
    docker_engine.containers.create(test_image, **kwargs)
    assert remove_stale_jobs(docker_engine, "checks-test") == 0
    assert len(list_jobs(docker_engine, "checks-test")) == 1
    assert remove_stale_jobs(docker_engine, "other-node", now=time.time() + 3600) == 0
    assert remove_stale_jobs(docker_engine, "checks-test", now=time.time() + 3600) == 1
    assert list_jobs(docker_engine, "checks-test") == []
