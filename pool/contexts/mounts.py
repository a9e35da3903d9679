"""``context/volumes`` and ``context/publish-ports``, checked against the node's allowlist.

Pure functions: parse DRP's text (``--mount`` specs, ``-p`` specs) into models and decide
what the operator allows. Anything outside the allowlist is a :class:`PolicyViolationError`,
a permanent error on the context. Whatever the allowlist says, a context never mounts ``/``,
the container engine's socket or a directory holding it, nor the kernel's pseudo file systems.

- A bind mount is allowed when its host path (as written, and with symlinks resolved) matches
  a glob of ``CTXPOOL_ALLOWED_MOUNTS`` (read-only: the mount is made read-only whatever the
  spec says) or of ``CTXPOOL_ALLOWED_RW_MOUNTS`` (as the spec says). Globs match whole paths;
  ``/srv/ctx/*`` covers everything below ``/srv/ctx``.
- A named volume is allowed through a ``volume:<glob>`` entry in the same settings.
- ``tmpfs`` mounts are always allowed (no host path).
- A published port needs an explicit host port inside ``CTXPOOL_ALLOWED_PORTS``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pool.errors import MountNotAllowedError, PortNotAllowedError
from pool.settings import Settings

MountType = Literal["bind", "volume", "tmpfs"]

#: Host paths no context may mount, nor any directory above them (engine sockets).
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/containerd/containerd.sock",
)
#: Host trees no context may mount anything of.
DENIED_TREES = ("/proc", "/sys", "/dev", "/var/lib/docker", "/var/lib/containers")

_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "target": "target",
    "destination": "target",
    "dst": "target",
    "readonly": "readonly",
    "ro": "readonly",
    "tmpfs-size": "tmpfs_size",
    "tmpfs-mode": "tmpfs_mode",
}
_PORT_RE = re.compile(
    r"^(?:(?P<ip>\[[0-9a-fA-F:]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?(?:(?P<host>\d+(?:-\d+)?)?:)?"
    r"(?P<ctr>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp|sctp))?$"
)


class MountSpec(BaseModel):
    """One ``--mount`` spec as DRP's ``context/volumes`` gives it."""

    model_config = ConfigDict(frozen=True)

    type: MountType = "volume"  # docker's default for --mount without type=
    source: str = ""
    target: str
    readonly: bool = False
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None


class PortSpec(BaseModel):
    """One published port (a ``-p`` range is expanded into one spec per port)."""

    model_config = ConfigDict(frozen=True)

    host_ip: str = ""
    host_port: int
    container_port: int
    proto: Literal["tcp", "udp", "sctp"] = "tcp"


def split_specs(value: object, seps: str = ";") -> list[str]:
    """DRP's param value (a string with ``seps`` separators, or a list of strings) as a list.

    Raises:
        ValueError: neither a string nor a list of strings.
    """
    if value is None or value == "":
        return []
    items: Iterable[object] = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected strings, got {type(item).__name__}")
        out.extend(part.strip() for part in re.split(f"[{re.escape(seps)}]", item))
    return [part for part in out if part]


def parse_mount(text: str) -> MountSpec:
    """Parse one ``--mount`` spec (``type=bind,source=/a,target=/b,readonly``).

    Raises:
        MountNotAllowedError: not a spec ctxpool understands (unknown keys are refused:
            volume drivers and options could reach outside the allowlist).
    """
    fields: dict[str, object] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        name = _KEYS.get(key.strip().lower())
        if name is None:
            raise MountNotAllowedError(f"context/volumes: {text!r}: option {key!r} not allowed")
        if name == "readonly":
            if sep and value.strip().lower() not in ("1", "true", "0", "false"):
                raise MountNotAllowedError(f"context/volumes: {text!r}: bad readonly={value}")
            fields[name] = not sep or value.strip().lower() in ("1", "true")
        elif name in ("tmpfs_size", "tmpfs_mode"):
            try:
                fields[name] = int(value, 8 if name == "tmpfs_mode" else 10)
            except ValueError:
                raise MountNotAllowedError(f"context/volumes: {text!r}: bad {key}") from None
        else:
            fields[name] = value.strip()
    if not fields.get("target"):
        raise MountNotAllowedError(f"context/volumes: {text!r}: no target")
    try:
        return MountSpec.model_validate(fields)
    except ValueError as exc:
        raise MountNotAllowedError(f"context/volumes: {text!r}: {exc}") from None


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _forbidden(path: str, extra_sockets: Sequence[str]) -> str | None:
    if path == "/":
        return "the host's root file system"
    for sock in (*ENGINE_SOCKETS, *extra_sockets):
        if _within(sock, path):
            return f"the container engine's socket ({sock})"
    for tree in DENIED_TREES:
        if _within(path, tree):
            return f"a host system tree ({tree})"
    return None


def _matches(path: str, globs: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(path + "/", g)
        for g in globs
        if not g.startswith("volume:")
    )


def allowed_mount(
    spec: MountSpec,
    settings: Settings,
    realpath: Callable[[str], str] = os.path.realpath,
    engine_socket: str | None = None,
) -> MountSpec:
    """The mount as the node will make it (read-only unless allowed for writing).

    Raises:
        MountNotAllowedError: outside the allowlist, or a path no context may mount.
    """
    ro_globs, rw_globs = settings.allowed_mounts, settings.allowed_rw_mounts
    what = f"context/volumes: {spec.type} mount of {spec.source or '(none)'} at {spec.target}"
    if not spec.target.startswith("/"):
        raise MountNotAllowedError(f"{what}: the target must be an absolute path")
    if spec.type == "tmpfs":
        return spec
    if spec.type == "volume":
        name = spec.source
        rw = any(fnmatch.fnmatchcase(f"volume:{name}", g) for g in rw_globs)
        if not name or not (rw or any(fnmatch.fnmatchcase(f"volume:{name}", g) for g in ro_globs)):
            raise MountNotAllowedError(
                f"{what}: named volume not allowed (CTXPOOL_ALLOWED_MOUNTS needs volume:<glob>)"
            )
        return spec if rw else spec.model_copy(update={"readonly": True})
    source = spec.source
    if not source.startswith("/") or ".." in source.split("/"):
        raise MountNotAllowedError(f"{what}: the host path must be absolute, without '..'")
    normal = os.path.normpath(source)
    resolved = realpath(normal)
    sockets = [engine_socket] if engine_socket else []
    for path in {normal, resolved}:
        reason = _forbidden(path, sockets)
        if reason is not None:
            raise MountNotAllowedError(f"{what}: refused, it would expose {reason}")
    rw = _matches(normal, rw_globs) and _matches(resolved, rw_globs)
    ro = rw or (_matches(normal, ro_globs) and _matches(resolved, ro_globs))
    if not ro:
        allowed = ", ".join([*ro_globs, *rw_globs]) or "nothing"
        raise MountNotAllowedError(
            f"{what}: host path not allowed (CTXPOOL_ALLOWED_MOUNTS allows {allowed})"
        )
    readonly = spec.readonly or not rw
    return spec.model_copy(update={"source": normal, "readonly": readonly})


def _port_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    lo, hi = int(first), int(last or first)
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(text)
    return list(range(lo, hi + 1))


def parse_ports(text: str) -> list[PortSpec]:
    """Parse one ``-p`` spec (``[ip:][hostPort:]containerPort[/proto]``, ranges allowed).

    Raises:
        PortNotAllowedError: not a ``-p`` spec, or no explicit host port.
    """
    match = _PORT_RE.match(text.strip())
    if match is None:
        raise PortNotAllowedError(f"context/publish-ports: {text!r} is not in -p format")
    if not match["host"]:
        raise PortNotAllowedError(
            f"context/publish-ports: {text!r}: name the host port (a random one is not allowed)"
        )
    try:
        hosts, ctrs = _port_range(match["host"]), _port_range(match["ctr"])
    except ValueError:
        raise PortNotAllowedError(f"context/publish-ports: {text!r}: bad port number") from None
    if len(hosts) != len(ctrs):
        raise PortNotAllowedError(f"context/publish-ports: {text!r}: ranges differ in length")
    ip = (match["ip"] or "").strip("[]")
    proto = match["proto"] or "tcp"
    return [
        PortSpec(host_ip=ip, host_port=h, container_port=c, proto=proto)
        for h, c in zip(hosts, ctrs, strict=True)
    ]


def allowed_ports(texts: Sequence[str], settings: Settings) -> list[PortSpec]:
    """Every published port of a context, checked against ``CTXPOOL_ALLOWED_PORTS``.

    Raises:
        PortNotAllowedError: a spec is malformed or a host port is outside the range.
    """
    out = [port for text in texts for port in parse_ports(text)]
    if not out:
        return out
    window = settings.port_range
    for port in out:
        if window is None or not window[0] <= port.host_port <= window[1]:
            allowed = f"{window[0]}-{window[1]}" if window else "none"
            raise PortNotAllowedError(
                f"context/publish-ports: host port {port.host_port} not allowed "
                f"(CTXPOOL_ALLOWED_PORTS: {allowed})"
            )
    return out


def allowed_mounts(
    texts: Sequence[str], settings: Settings, engine_socket: str | None = None
) -> list[MountSpec]:
    """Every mount of a context, parsed and checked.

    Raises:
        MountNotAllowedError: a spec is malformed or outside the allowlist.
    """
    return [
        allowed_mount(parse_mount(text), settings, engine_socket=engine_socket) for text in texts
    ]
