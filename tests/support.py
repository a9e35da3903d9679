"""Shared test and benchmark helpers: services, the local test image, worker subprocesses."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest
import redis

REPO = Path(__file__).resolve().parent.parent
TEST_IMAGE = "ctxpool-test/busybox:latest"
#: An image that tests keep only as an archive (see :func:`build_archived_image`).
ARCHIVED_IMAGE = "ctxpool-test/archived:1"
BUSYBOX_APPLETS = (
    "sh", "sleep", "env", "cat", "ls", "echo", "true", "false", "ps", "id",
    "wget", "date", "hostname",
)  # fmt: skip

T = TypeVar("T")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def need(condition: bool, reason: str) -> None:
    """Skip when a service is absent locally; fail when ``CI`` is set."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def test_redis_url() -> str:
    """Redis for tests: broker and state store (database 15 unless told otherwise)."""
    return os.environ.get("CTXPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_broker_url() -> str:
    """Broker for tests: Redis by default; ``CTXPOOL_TEST_BROKER_URL=amqp://...`` for RabbitMQ."""
    return os.environ.get("CTXPOOL_TEST_BROKER_URL", test_redis_url())


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(test_redis_url(), decode_responses=True, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        need(False, f"no Redis at {test_redis_url()} ({exc})")
    return client


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure means: no engine here
        need(False, f"no Docker engine ({exc})")
        raise
    return client


def _busybox_rootfs() -> bytes:
    """A tar of a root file system: ``/bin/busybox`` and its applet links, ``/tmp``, ``/etc``."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    need(Path(busybox).exists(), "busybox is not installed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def _import_busybox(client: docker.DockerClient, tag: str, changes: list[str]) -> str:
    repo, _, version = tag.rpartition(":")
    client.api.import_image_from_data(
        _busybox_rootfs(), repository=repo, tag=version, changes=changes
    )
    return tag


def build_test_image(client: docker.DockerClient, tag: str = TEST_IMAGE) -> str:
    """Import a busybox image from Debian's ``busybox-static`` (no registry is reachable).

    Its default command sleeps forever, like an agent waiting for jobs. An image of that tag
    built earlier is kept as it is (it may lack applets added to ``BUSYBOX_APPLETS`` since:
    scripts run them as ``busybox <applet>`` when the link is missing).
    """
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    return _import_busybox(client, tag, ['CMD ["/bin/sleep", "86400"]'])


def build_archived_image(client: docker.DockerClient, tag: str = ARCHIVED_IMAGE) -> str:
    """A second small busybox image, distinct from the test image (its own label, so its own
    id), for "an image that exists only as an archive": save it with
    :func:`save_image_archive`, remove it from the engine, serve the archive.

    Returns:
        Its id (``sha256:...``).
    """
    _import_busybox(
        client,
        tag,
        [f'LABEL ctxpool.test.archived="{tag}"', 'CMD ["/bin/sleep", "86400"]'],
    )
    return str(client.images.get(tag).id)


def save_image_archive(client: docker.DockerClient, image: str, dest: Path) -> Path:
    """Write ``docker save`` of ``image`` to ``dest`` chunk by chunk (archives may be large);
    the archive names ``image`` when it is one of the image's tags, so loading it tags it.

    Returns:
        ``dest``.

    Raises:
        docker.errors.ImageNotFound: the engine has no such image.
    """
    img = client.images.get(image)
    named: str | bool = image if image in img.tags else bool(img.tags)
    with dest.open("wb") as out:
        for chunk in img.save(named=named):
            out.write(chunk)
    return dest


def wait_for(
    probe: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or probe}")
        time.sleep(interval_s)
        last = probe()
    return last


def queue_depth(queue: str) -> int:
    """Messages waiting in ``queue`` on the test broker (Redis or RabbitMQ), via kombu."""
    from kombu import Connection

    with Connection(test_broker_url()) as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except conn.channel_errors:
            return 0  # not declared yet: nothing waits


def purge_queues(names: list[str]) -> None:
    """Empty queues on the test broker (RabbitMQ keeps them across tests; Redis is flushed)."""
    from kombu import Connection

    with Connection(test_broker_url()) as conn:
        for name in names:
            try:
                conn.default_channel.queue_purge(name)
            except conn.channel_errors:
                conn.close()  # not declared: nothing to purge (AMQP closed the channel)
                conn.connect()


class Process:
    """A ctxpool process of the test's own, in its own session, logging to ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker's pool children included)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


class Worker(Process):
    """A real ``celery -A pool worker`` subprocess serving as one ctxpool node."""

    def __init__(
        self,
        node: str,
        queues: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        concurrency: int = 4,
        pool: str = "threads",
        app: str = "pool",
    ) -> None:
        super().__init__(log_dir / f"worker-{node}.log")
        self.app = app
        self.node = node
        self.queues = queues
        self.env = env or {}
        self.concurrency = concurrency
        self.pool = pool

    def start(self) -> Worker:
        env = {**self.env, "CTXPOOL_NODE_NAME": self.node}
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-n",
            f"{self.node}@%h",
            "--pool",
            self.pool,
            "-c",
            str(self.concurrency),
            "-l",
            "info",
            "--without-mingle",
            "--without-gossip",
        ]
        if self.queues:
            cmd += ["-Q", ",".join(self.queues)]
        self.spawn(cmd, env)
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.node} exited:\n{self.log()[-3000:]}")
            return f"{self.node}@" in self.log() and " ready." in self.log()

        wait_for(ready, timeout_s, what=f"worker {self.node} ready")

    def rss_kb(self) -> int:
        """Resident memory of the worker's main process and its pool children, in KiB."""
        assert self.proc is not None
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                continue
        return total


def container_state(client: docker.DockerClient, name_prefix: str) -> dict[str, Any]:
    """Containers whose name starts with ``name_prefix``: name -> attrs (Config, HostConfig)."""
    out = {}
    for row in client.api.containers(all=True, filters={"name": name_prefix}):
        name = row["Names"][0].lstrip("/")
        if not name.startswith(name_prefix):
            continue
        try:
            out[name] = client.api.inspect_container(row["Id"])
        except docker.errors.NotFound:
            continue  # removed meanwhile
    return out


class RecordingServer:
    """A loopback HTTP server that records every call's arrival (for limit tests and benches).

    Any path answers 200 unless told otherwise: ``delay_s`` makes calls slow (concurrency
    tests), ``throttle_first`` answers the first N calls of each path with 429 and
    ``Retry-After: retry_after_s``. ``max_in_flight`` is the most calls it ever served at once.
    """

    def __init__(
        self, delay_s: float = 0.0, throttle_first: int = 0, retry_after_s: int = 1
    ) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay_s = delay_s
        self.throttle_first = throttle_first
        self.retry_after_s = retry_after_s
        self.arrivals: list[tuple[float, str, int]] = []  # (monotonic time, path, status)
        self.requests: list[tuple[str, str, str, str]] = []  # (method, path, body, auth)
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                with server._lock:
                    server.requests.append(
                        (self.command, self.path, body, self.headers.get("Authorization", ""))
                    )
                status, headers = server._arrive(self.path)
                try:
                    if status == 200 and server.delay_s:
                        time.sleep(server.delay_s)
                    reply = b'{"ok": true}'
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    self.close_connection = True  # the caller died (a killed worker)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _arrive(self, path: str) -> tuple[int, dict[str, str]]:
        with self._lock:
            now = time.monotonic()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            seen = self._seen.get(path, 0)
            self._seen[path] = seen + 1
            if seen < self.throttle_first:
                self.arrivals.append((now, path, 429))
                return 429, {"Retry-After": str(self.retry_after_s)}
            self.arrivals.append((now, path, 200))
            return 200, {}

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def served(self) -> list[tuple[float, str]]:
        """Calls answered 200: (arrival, path)."""
        with self._lock:
            return [(t, p) for t, p, s in self.arrivals if s == 200]


def window_counts(times: list[float], window_s: float) -> list[int]:
    """For every arrival, how many arrivals fall in the window starting there (sliding)."""
    times = sorted(times)
    counts, j = [], 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window_s:
            j += 1
        counts.append(j - i)
    return counts


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own on a free port, without persistence: killed and
    started again, it comes back empty (Redis lost its data)."""

    def __init__(self, log_dir: Path) -> None:
        self.binary = shutil.which("redis-server") or ""
        need(bool(self.binary), "redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--maxmemory-policy", "noeviction",
               "--logfile", str(self.log_path)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        wait_for(lambda: _pings(client), 10, 0.05, what=f"redis-server on :{self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _pings(client: redis.Redis[bytes]) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class BridgeProcess(Process):
    """``python -m broker_bridge`` as a process of its own (so a test can ``kill -9`` it)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(log_dir / "bridge.log")
        self.env = env

    def start(self) -> BridgeProcess:
        self.spawn([sys.executable, "-m", "broker_bridge"], self.env)
        return self
