"""Who a request is, and what a machine token may do.

Three kinds of credentials, as DRP has them:

- the simulator's user token (``Bearer`` or ``?token=``), principal ``"token"``: everything;
- a user and password (``Basic``), principal ``<user>``: everything;
- a machine token from ``GET /api/v3/<kind>/<uuid>/token?ttl=<s>``, principal
  ``machine:<uuid>``: that object's own REST paths (``/api/v3/<kind>/<uuid>`` and below, any
  method) and reading files; anything else answers 403, and an expired token 401.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Lifetime of a machine token when the request names no ``ttl``, in seconds.
DEFAULT_MACHINE_TOKEN_TTL_S = 3600
MACHINE_PREFIX = "machine:"


@dataclass(frozen=True)
class MachineGrant:
    """What one machine token stands for."""

    kind: str
    uuid: str
    expires_at: float  # on the book's clock


class TokenBook:
    """The credentials the simulator accepts. Thread-safe (tokens are issued on the loop and
    may be checked from tests)."""

    def __init__(
        self,
        token: str,
        users: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.users = dict(users)
        self._clock = clock
        self._machine: dict[str, MachineGrant] = {}
        self._lock = threading.Lock()

    def issue_machine_token(
        self, kind: str, uuid: str, ttl_s: int = DEFAULT_MACHINE_TOKEN_TTL_S
    ) -> str:
        """A new token for the object ``uuid`` of ``kind``, valid for ``ttl_s`` seconds.

        Raises:
            ValueError: ``ttl_s`` is not positive.
        """
        if ttl_s <= 0:
            raise ValueError(f"a token's ttl must be positive, not {ttl_s}")
        token = f"mt-{uuid[:8]}-{secrets.token_hex(16)}"
        with self._lock:
            self._machine[token] = MachineGrant(kind, uuid, self._clock() + ttl_s)
        return token

    def principal(self, authorization: str, query_token: str | None) -> str | None:
        """The principal of a request, or None when its credentials are unknown or expired.

        Args:
            authorization: the ``Authorization`` header ("" when absent).
            query_token: the ``token`` query parameter, if any (websocket clients).
        """
        if authorization.startswith("Bearer "):
            return self._token_principal(authorization[7:])
        if authorization.startswith("Basic "):
            try:
                raw = base64.b64decode(authorization[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = raw.partition(":")
            return user if self.users.get(user) == password else None
        if query_token:
            return self._token_principal(query_token)
        return None

    def _token_principal(self, token: str) -> str | None:
        if token == self.token:
            return "token"
        with self._lock:
            grant = self._machine.get(token)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return f"{MACHINE_PREFIX}{grant.kind}/{grant.uuid}"


def machine_of(principal: str) -> tuple[str, str] | None:
    """``(kind, uuid)`` of a machine principal; None for users and the user token."""
    if not principal.startswith(MACHINE_PREFIX):
        return None
    kind, _, uuid = principal[len(MACHINE_PREFIX) :].partition("/")
    return kind, uuid


def permitted(principal: str, method: str, path: str) -> bool:
    """Whether ``principal`` may make a ``method`` request for URL path ``path``.

    Users and the user token may do anything. A machine token may use its own object's paths
    (``/api/v3/<kind>/<uuid>`` and below; the key must be the UUID, not ``Name:``) and read
    files (``GET``/``HEAD /api/v3/files/...``), nothing else.
    """
    machine = machine_of(principal)
    if machine is None:
        return True
    kind, uuid = machine
    own = f"/api/v3/{kind}/{uuid}"
    if path == own or path.startswith(own + "/"):
        return True
    return method in ("GET", "HEAD") and path.startswith("/api/v3/files/")
