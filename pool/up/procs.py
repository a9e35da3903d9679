"""Child processes of ``ctxpool up``: each in its own process group with its log in the state
directory; readiness by probe; stopped in reverse order within one shared deadline (SIGTERM,
then SIGKILL to the whole group), so that Ctrl-C leaves no stray process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ChildFailedError(Exception):
    """A child exited or did not become ready in time."""


@dataclass
class Child:
    """One started process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """The processes of one stack, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        """Start ``argv`` in a new process group, output to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        child = Child(name, list(argv), log_path, proc)
        self.children.append(child)
        return child

    def wait_ready(
        self, child: Child, ready: Callable[[], bool], timeout_s: float, what: str
    ) -> None:
        """Wait until ``ready()`` holds.

        Raises:
            ChildFailedError: the child exited first, or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                raise ChildFailedError(
                    f"{child.name} exited ({child.proc.returncode}) before {what}; its log "
                    f"({child.log_path}) ends:\n{child.log_tail()}"
                )
            try:
                if ready():
                    return
            except Exception as exc:  # a probe that cannot connect yet
                log.debug("%s: not ready: %s", child.name, exc)
            time.sleep(0.2)
        raise ChildFailedError(
            f"{child.name}: no {what} within {timeout_s:.0f}s; its log ({child.log_path}) "
            f"ends:\n{child.log_tail()}"
        )

    def dead(self) -> list[Child]:
        """Children that exited on their own."""
        return [c for c in self.children if not c.alive()]

    def stop_all(self, deadline_s: float = 8.0) -> None:
        """SIGTERM every child (newest first), wait, then SIGKILL what is left of each
        process group; all within ``deadline_s``."""
        end = time.monotonic() + deadline_s
        for child in reversed(self.children):
            _signal_group(child, signal.SIGTERM)
        for child in reversed(self.children):
            remaining = max(end - time.monotonic() - 1.0, 0.1)
            try:
                child.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time: killed", child.name)
        for child in self.children:
            _signal_group(child, signal.SIGKILL)  # the group: pool children, helpers
            try:
                child.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) survived SIGKILL", child.name, child.proc.pid)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, sig)
