"""Targets of network checks: ``host``, ``host:port``, ``[v6]:port`` or a URL's authority."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class HostPort:
    """A parsed network target."""

    host: str
    port: int | None

    def authority(self) -> str:
        """``host`` or ``host:port`` (IPv6 addresses in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host


def parse_target(target: str) -> HostPort:
    """Parse ``bmc1``, ``bmc1:8443``, ``[fe80::1]:443`` or ``https://bmc1:8443/...``.

    Raises:
        ValueError: empty, with user info (credentials never travel in targets), or a
            port outside 1-65535.
    """
    text = target.strip()
    if not text:
        raise ValueError("empty target")
    parts = urlsplit(text if "//" in text else f"//{text}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a target must not carry user info: pass credentials as params")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"target {target!r}: invalid port") from None
    if not parts.hostname:
        raise ValueError(f"target {target!r} has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"target {target!r}: port must be 1-65535")
    return HostPort(parts.hostname, port)
