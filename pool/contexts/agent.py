"""Where the injected ``drpcli`` comes from: a local file, or DRP's file space (cached).

:class:`LocalAgent` serves ``CTXPOOL_DRPCLI`` (sites that stage it by hand); its sha256 is
computed again only when the file's mtime, size or inode change. :class:`DrpAgent` serves
``drpcli.<arch>.linux`` from DRP, cached by sha256 under
``<cache_dir>/agent/<sha256>/drpcli`` (mode 0755): content-addressed, so the nodes of one host
share it and a new binary never overwrites one that containers have bind-mounted. DRP is
asked (``HEAD``) at most every ``agent_check_s`` and the binary is downloaded only when its
sha256 changed, by one process of the host at a time (a file lock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pool.contexts.artifacts import Agent
from pool.contexts.filelock import file_lock
from pool.drp.errors import DrpError
from pool.drp.files import DrpFiles
from pool.errors import ArtifactUnavailableError

log = logging.getLogger(__name__)

BINARY_NAME = "drpcli"
BINARY_MODE = 0o755


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 (hex) of a file, read in chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class LocalAgent:
    """``CTXPOOL_DRPCLI``: a drpcli binary on this host. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._lock = threading.Lock()
        self._stat: tuple[int, int, int] | None = None
        self._agent: Agent | None = None

    def current(self) -> Agent:
        """The local drpcli (its sha256 recomputed when the file changed).

        Raises:
            ArtifactUnavailableError: the file is missing or unreadable.
        """
        with self._lock:
            try:
                st = self.path.stat()
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._agent is None or key != self._stat:
                    self._agent = Agent(str(self.path), sha256_file(self.path))
                    self._stat = key
                    log.info("drpcli %s: sha256 %s", self.path, self._agent.sha256)
            except OSError as exc:
                raise ArtifactUnavailableError(
                    f"drpcli: CTXPOOL_DRPCLI={self.path} cannot be read: {exc.strerror or exc}"
                ) from None
            return self._agent


class DrpAgent:
    """drpcli from DRP's file space, cached on this host by sha256. Thread-safe.

    Args:
        files: DRP's file client.
        cache_dir: the host's cache (``Settings.cache_dir``); binaries go under ``agent/``.
        file_pattern: the binary's path in DRP's file space, ``{arch}`` filled in
            (``Settings.drpcli_file``).
        arch: the engine's architecture (``amd64``, ``arm64``); asked once.
        check_s: seconds between two ``HEAD`` checks of DRP (``Settings.agent_check_s``).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        files: DrpFiles,
        cache_dir: Path,
        file_pattern: str,
        arch: Callable[[], str],
        check_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.root = cache_dir / "agent"
        self.file_pattern = file_pattern
        self.check_s = check_s
        self._arch_of = arch
        self._arch: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._agent: Agent | None = None
        self._next_check = 0.0
        self._degraded = False
        #: Downloads this instance made (for tests and logs).
        self.downloads = 0

    def current(self) -> Agent:
        """The drpcli to inject: the cached one until DRP's sha256 changes.

        Raises:
            ArtifactUnavailableError: DRP has no such file (404), or cannot serve it now and
                no copy is cached.
            EngineError: the engine's architecture could not be asked.
        """
        with self._lock:
            now = self._clock()
            if self._agent is not None and now < self._next_check:
                return self._agent
            self._agent = self._refresh()
            self._next_check = now + self.check_s
            return self._agent

    def binary(self, sha256: str) -> Path:
        """Where the binary of ``sha256`` is cached."""
        return self.root / sha256 / BINARY_NAME

    def _refresh(self) -> Agent:
        if self._arch is None:
            self._arch = self._arch_of()
        path = self.file_pattern.format(arch=self._arch)
        try:
            info = self.files.head(path)
        except DrpError as exc:
            return self._fallback(path, exc)
        if self._degraded:
            log.info("drpcli: DRP serves %s again", path)
            self._degraded = False
        if info is None:
            raise ArtifactUnavailableError(
                f"drpcli: DRP's file space has no {path} (HEAD /api/v3/files/{path} is 404): "
                "upload drpcli there, or set CTXPOOL_DRPCLI to a local binary "
                "(or CTXPOOL_AGENT_INJECT=false)"
            )
        if info.sha256 is not None and self.binary(info.sha256).is_file():
            return self._use(info.sha256)
        with file_lock(self.root / ".lock"):
            # another process of this host may have fetched it while we waited
            if info.sha256 is not None and self.binary(info.sha256).is_file():
                return self._use(info.sha256)
            return self._use(self._download(path, info.sha256))

    def _download(self, path: str, expected: str | None) -> str:
        """Fetch ``path`` into the cache (under the host lock); returns its sha256."""
        incoming = self.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        staged = incoming / BINARY_NAME
        try:
            sha = self.files.download(path, staged, expected)
        except DrpError as exc:
            return self._fallback(path, exc).sha256
        staged.chmod(BINARY_MODE)  # before it is visible under its sha: never seen as 0600
        final = self.binary(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        self.downloads += 1
        log.info("drpcli: cached %s as %s", path, final)
        return sha

    def _use(self, sha256: str) -> Agent:
        assert self._arch is not None
        pointer = self.root / f"current.{self._arch}"
        if self._agent is None or self._agent.sha256 != sha256:
            tmp = pointer.parent / f".{pointer.name}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(sha256)
            os.replace(tmp, pointer)  # what a restart uses while DRP is down
            if self._agent is not None:
                log.info("drpcli changed: sha256 %s -> %s", self._agent.sha256, sha256)
        return Agent(str(self.binary(sha256)), sha256)

    def _fallback(self, path: str, exc: DrpError) -> Agent:
        """DRP cannot serve drpcli now: the binary in use, else the host's last one."""
        agent = self._agent or self._cached()
        if agent is None:
            raise ArtifactUnavailableError(
                f"drpcli: DRP cannot serve {path} now and this host has no cached copy: {exc}"
            ) from None
        if not self._degraded:
            log.warning(
                "drpcli: DRP cannot serve %s now (%s); using the cached binary (sha256 %s)",
                path,
                exc,
                agent.sha256,
            )
            self._degraded = True
        return agent

    def _cached(self) -> Agent | None:
        pointer = self.root / f"current.{self._arch}"
        try:
            sha = pointer.read_text().strip()
        except OSError:
            return None
        return Agent(str(self.binary(sha)), sha) if sha and self.binary(sha).is_file() else None
