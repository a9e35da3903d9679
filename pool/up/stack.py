"""``ctxpool up`` and ``ctxpool down``.

``up`` starts, in the foreground and in this order: an embedded Redis (when neither
``CTXPOOL_BROKER_URL`` nor ``CTXPOOL_REDIS_URL`` is set), the DRP simulator seeded with the
demo (when ``CTXPOOL_DRP_URL`` is not set; it listens on the Docker bridge gateway, where
containers reach it), one worker node, the bridge, Flower and the metrics exporter. It prints
where everything is, then a live summary until Ctrl-C, which stops every process it started
within 10 s. The demo's containers stay unless ``--clean`` (or ``ctxpool down``) asks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import docker
import redis as redis_lib

from pool.contexts.dockerapi import engine_call
from pool.contexts.engine import DockerEngine
from pool.contexts.store import StateStore
from pool.errors import CtxpoolError
from pool.settings import Settings
from pool.up import redis as embedded
from pool.up.flower import flower_auth
from pool.up.image import ensure_demo_image
from pool.up.procs import ChildFailedError, Children
from pool.up.summary import Summary

log = logging.getLogger(__name__)

#: Tags the demo's machines use (and the node serves) when ``CTXPOOL_TAGS`` is not set.
DEMO_NODE_TAGS = ("ci", "audit", "default")
STOP_DEADLINE_S = 8.0


class UpError(Exception):
    """``ctxpool up`` cannot start; the message is the one line the user sees."""


@dataclass
class StackInfo:
    """What a running ``up`` started (``<state_dir>/up.json``), for ``down`` and the summary."""

    pid: int
    node: str
    redis_url: str
    drp_url: str | None
    demo: bool
    flower_url: str
    started_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> StackInfo | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


@contextlib.contextmanager
def single_instance(state_dir: Path) -> Iterator[IO[str]]:
    """Hold ``<state_dir>/up.lock`` while ``up`` runs.

    Raises:
        UpError: another ``ctxpool up`` holds it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "up.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise UpError(
            f"ctxpool up is already running (pid {pid}, state dir {state_dir}); "
            "stop it with Ctrl-C there or `ctxpool down`"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield handle
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def bridge_gateway(client: docker.DockerClient) -> str:
    """The Docker bridge network's gateway: where containers reach this host."""
    with engine_call("inspect network bridge"):
        net = client.api.inspect_network("bridge")
    for cfg in (net.get("IPAM") or {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    return "172.17.0.1"


def _http_status(url: str, auth: str | None = None, timeout_s: float = 2.0) -> int:
    req = urllib.request.Request(url)  # noqa: S310 - our own local services
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Stack:
    """One ``ctxpool up``."""

    def __init__(self, settings: Settings, clean: bool, out: IO[str] = sys.stdout) -> None:
        self.settings = settings
        self.clean = clean
        self.out = out
        self.state_dir = settings.state_dir
        self.children = Children(self.state_dir / "logs")
        self.env: dict[str, str] = {k: v for k, v in os.environ.items()}
        self.py = sys.executable
        self._stop = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ---- start ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, show the summary until Ctrl-C, stop everything.

        Raises:
            UpError: a precondition failed (no engine, a second up, a child died at start).
        """
        with single_instance(self.state_dir):
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
            try:
                info = self._start()
                info.save(self.state_dir / "up.json")
                return self._watch(info)
            except ChildFailedError as exc:
                raise UpError(str(exc)) from None
            finally:
                t0 = time.monotonic()
                self.children.stop_all(STOP_DEADLINE_S)
                self.say(f"ctxpool up: stopped everything in {time.monotonic() - t0:.1f}s")
                if self.clean:
                    removed = remove_demo_containers(self.settings, self.settings.node_name)
                    self.say(f"ctxpool up: removed {removed} demo containers")
                with contextlib.suppress(OSError):
                    (self.state_dir / "up.json").unlink()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop = True

    def _engine(self) -> docker.DockerClient:
        try:
            engine = DockerEngine.from_settings(self.settings)
            engine.version()
        except CtxpoolError as exc:
            raise UpError(
                f"no Docker engine reachable ({exc}); start dockerd or set CTXPOOL_DOCKER_URL"
            ) from None
        return engine.client

    def _start(self) -> StackInfo:
        s = self.settings
        client = self._engine()
        redis_url = self._redis()
        if not (os.environ.get("CTXPOOL_BROKER_URL") or os.environ.get("CTXPOOL_REDIS_URL")):
            # embedded: one Redis is the broker and the store (configured URLs stay as given)
            self.env.update(CTXPOOL_BROKER_URL=redis_url, CTXPOOL_REDIS_URL=redis_url)
        self.env.setdefault("CTXPOOL_SEND_EVENTS", "true")
        # a local stack: nodes notice each other (and a fresh store's wait ends) in seconds
        self.env.setdefault("CTXPOOL_HEARTBEAT_S", "2")
        demo = not s.drp_url
        drp_url = s.drp_url
        if demo:
            drp_url = self._simulator(client)
        tags = list(s.tags) or (list(DEMO_NODE_TAGS) if demo else ["default"])
        self._node(tags)
        bridge = self._bridge() if drp_url else None
        flower_url, auth_line = self._flower()
        exporter = self._exporter()
        node_port = s.node_metrics_port
        self.say("")
        self.say(f"ctxpool up: node {s.node_name} serving tags {','.join(tags)}")
        self.say(f"  Flower     {flower_url}  ({auth_line})")
        if exporter:
            self.say(f"  metrics    {exporter} (pool), http://127.0.0.1:{node_port}/metrics (node)")
        if bridge:
            self.say(f"  bridge     {bridge}/metrics, {bridge}/healthz")
        what = "DRP simulator (demo)" if demo else "DRP"
        self.say(f"  {what:<10} {drp_url}")
        self.say(f"  Redis      {redis_url}")
        self.say(f"  logs       {self.children.log_dir}")
        self.say("Ctrl-C stops everything (demo containers stay; `ctxpool down` removes them)")
        self.say("")
        return StackInfo(
            pid=os.getpid(),
            node=s.node_name,
            redis_url=redis_url,
            drp_url=drp_url,
            demo=demo,
            flower_url=flower_url,
        )

    def _redis(self) -> str:
        if os.environ.get("CTXPOOL_BROKER_URL") or os.environ.get("CTXPOOL_REDIS_URL"):
            return self.settings.redis_url
        try:
            binary = embedded.redis_server_binary()
        except CtxpoolError as exc:
            raise UpError(str(exc)) from None
        port = embedded.pick_port()
        child = self.children.start(
            "redis", embedded.redis_command(binary, self.state_dir / "redis", port), self.env
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis_lib.Redis.from_url(url, socket_timeout=1)
        self.children.wait_ready(child, lambda: bool(client.ping()), 20, "Redis answering")
        client.close()
        return url

    def _simulator(self, client: docker.DockerClient) -> str:
        image = ensure_demo_image(client)
        host = bridge_gateway(client)
        port = self.settings.sim_port
        if not embedded.port_free(port, host):
            port = embedded.pick_port(0)
        token = secrets.token_urlsafe(24)
        token_file = self.state_dir / "drpsim-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        env = {**self.env, "CTXPOOL_DRP_TOKEN": token}
        argv = [self.py, "-m", "broker_bridge.drpsim", "--host", host, "--port", str(port),
                "--seed-demo", image]  # fmt: skip
        child = self.children.start("drpsim", argv, env)
        url = f"http://{host}:{port}"
        self.children.wait_ready(
            child,
            lambda: _http_status(f"{url}/api/v3/machines", f"Bearer {token}") == 200,
            20,
            "simulator answering",
        )
        self.env.update(
            CTXPOOL_DRP_URL=url,
            CTXPOOL_DRP_TOKEN=token,
            CTXPOOL_DRP_ENDPOINTS=url,
            # the demo's contexts are plain busybox images: the node injects drpcli
            CTXPOOL_AGENT_INJECT="true",
        )
        return url

    def _node(self, tags: list[str]) -> None:
        s = self.settings
        argv = [self.py, "-m", "celery", "-A", "pool", "worker", "-E", "--pool", "threads",
                "-c", os.environ.get("CTXPOOL_CONCURRENCY", "8"), "-l", "info",
                "-n", f"{s.node_name}@%h", "-Q", ",".join(f"tag-{t}" for t in tags)]  # fmt: skip
        child = self.children.start("node", argv, self.env)
        self.children.wait_ready(
            child, lambda: " ready." in child.log_path.read_text(errors="replace"), 60,
            "worker ready",
        )  # fmt: skip

    def _bridge(self) -> str:
        port = self.settings.bridge_metrics_port
        child = self.children.start("bridge", [self.py, "-m", "broker_bridge"], self.env)
        url = f"http://127.0.0.1:{port}"
        if port:
            self.children.wait_ready(
                child, lambda: _http_status(f"{url}/healthz") in (200, 503), 30, "bridge health"
            )
        return url

    def _flower(self) -> tuple[str, str]:
        s = self.settings
        auth = flower_auth(s)
        env = {**self.env, "FLOWER_BASIC_AUTH": auth.basic_auth}  # not on the command line
        argv = [self.py, "-m", "celery", "-A", "pool", "flower", f"--port={s.flower_port}",
                "--address=0.0.0.0", "--persistent=True",
                f"--db={self.state_dir / 'flower.db'}"]  # fmt: skip
        child = self.children.start("flower", argv, env)
        url = f"http://127.0.0.1:{s.flower_port}"
        self.children.wait_ready(
            child, lambda: _http_status(f"{url}/healthcheck") == 200, 40, "Flower answering"
        )
        if auth.generated:
            where = s.state_dir / "flower-credentials.json"
            return url, f"user {auth.user}, password {auth.password} (generated, kept in {where})"
        return url, f"user {auth.user}, password from CTXPOOL_FLOWER_PASSWORD"

    def _exporter(self) -> str | None:
        port = self.settings.metrics_port
        if not port:
            return None
        argv = [self.py, "-m", "pool.cli", "metrics", "--port", str(port)]
        child = self.children.start("metrics", argv, self.env)
        url = f"http://127.0.0.1:{port}/metrics"
        self.children.wait_ready(child, lambda: _http_status(url) == 200, 20, "metrics answering")
        return url

    # ---- run --------------------------------------------------------------------------------

    def _watch(self, info: StackInfo) -> int:
        store = StateStore.from_url(info.redis_url, self.settings.key_prefix)
        summary = Summary(
            self.settings, info.redis_url, store, info.drp_url, self.env.get("CTXPOOL_DRP_TOKEN")
        )
        tty = self.out.isatty()
        last_print = 0.0
        while not self._stop:
            dead = self.children.dead()
            if dead:
                child = dead[0]
                self.say(
                    f"ctxpool up: {child.name} exited ({child.proc.returncode}); stopping. "
                    f"Its log ({child.log_path}) ends:\n{child.log_tail()}"
                )
                return 1
            now = time.monotonic()
            if tty or now - last_print >= 5.0:
                text = summary.render()
                if tty:
                    text = "\033[H\033[2J" + text
                self.say(text)
                last_print = now
            time.sleep(1.0)
        return 0


def remove_demo_containers(settings: Settings, node: str) -> int:
    """Remove every context container the ``up`` node ``node`` ran (by owner label)."""
    try:
        engine = DockerEngine.from_settings(settings)
        refs = engine.list_containers(owner=node)
        for ref in refs:
            engine.remove_container(ref, "ctxpool down")
    except CtxpoolError as exc:
        print(f"ctxpool: {exc}", file=sys.stderr)
        return 0
    return len(refs)


def down(settings: Settings) -> int:
    """Stop a running ``up`` (SIGTERM, wait for it) and remove its demo containers."""
    info = StackInfo.load(settings.state_dir / "up.json")
    node = info.node if info else settings.node_name
    if info is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
            print(f"ctxpool down: stopping ctxpool up (pid {info.pid})", flush=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(info.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    removed = remove_demo_containers(settings, node)
    print(f"ctxpool down: removed {removed} containers of node {node}")
    return 0


__all__ = ["Stack", "UpError", "down"]
