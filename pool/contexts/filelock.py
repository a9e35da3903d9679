"""An exclusive lock between the processes and threads of one host: ``flock`` on a file.

The nodes' caches (drpcli, image archives) sit in a directory shared by the pool processes
of a node and by the nodes of a host; the lock makes one of them download while the others
wait and then find the result. ``flock`` locks an open file description, so two threads of
one process exclude each other too, and the kernel releases the lock when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[float]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Yields:
        The seconds spent waiting for the lock.

    Raises:
        OSError: the lock file cannot be created or locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        waited_s = time.monotonic() - started
        if waited_s > 1.0:
            log.debug("waited %.1fs for %s", waited_s, path)
        yield waited_s
    finally:
        os.close(fd)  # releases the lock
