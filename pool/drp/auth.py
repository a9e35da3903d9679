"""Token lifetime, shared by both transports (the async client and the nodes' token source).

- A configured token (``CTXPOOL_DRP_TOKEN``) is sent as is and never exchanged.
- With a user and password, a user token is fetched once
  (``GET /api/v3/users/<user>/token?ttl=<s>`` with Basic auth), sent as
  ``Authorization: Bearer``, and fetched again at :data:`RENEW_AT_SHARE` of its TTL, or once
  after DRP answered 401 to it (see :func:`renews_after`).

:class:`TokenState` holds that decision and nothing else: no I/O and no lock, so each
transport wraps it in its own lock (``asyncio`` or ``threading``) and its own HTTP client.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from pool.drp import paths
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpAuthError

log = logging.getLogger(__name__)

#: A user token is fetched again after this share of its TTL.
RENEW_AT_SHARE = 0.8


def basic_header(username: str, password: SecretStr) -> str:
    """``Authorization`` value for Basic auth (only ever sent to fetch a user token)."""
    raw = f"{username}:{password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def bearer_header(token: str) -> str:
    """``Authorization`` value for a token."""
    return f"Bearer {token}"


def renews_after(status: int | None) -> bool:
    """Whether an answer with ``status`` means "fetch a new user token and try once more".

    Only 401 (the token is unknown or expired); 403 means the user lacks rights, which a new
    token of the same user does not fix.
    """
    return status == 401


def token_from_reply(data: Any, who: str) -> str:
    """The ``Token`` of DRP's token reply.

    Args:
        data: the parsed JSON reply.
        who: what the token is for (for the message), e.g. ``user rocketskates``.

    Raises:
        DrpAuthError: the reply carries no usable token.
    """
    token = data.get("Token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or any(ch.isspace() for ch in token):
        raise DrpAuthError(f"DRP returned no usable token for {who}")
    return token


class TokenState:
    """Which token to send now, and when a user token must be fetched (not thread-safe).

    Args:
        config: the endpoint's credentials.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, config: DrpConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._token = config.token.get_secret_value() if config.token is not None else None
        self._renew_at = float("inf") if self._token is not None else 0.0

    @property
    def renewable(self) -> bool:
        """Whether tokens come from a user and password (a configured token is final)."""
        return self._config.renewable

    def current(self) -> str | None:
        """The token to send now, or ``None``: fetch a user token first (:meth:`fetch_call`)."""
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return None

    def fetch_call(self) -> tuple[str, dict[str, str]]:
        """Path and headers of the user token call.

        Raises:
            DrpAuthError: the token is configured (never exchanged) or was refused.
        """
        cfg = self._config
        if cfg.username is None or cfg.password is None:
            raise DrpAuthError("DRP refused the configured token (CTXPOOL_DRP_TOKEN)", 401)
        path = paths.user_token(cfg.username, cfg.user_token_ttl_s)
        return path, {"Authorization": basic_header(cfg.username, cfg.password)}

    def accept(self, reply: Any) -> str:
        """Keep the token of a user token reply; returns it.

        Raises:
            DrpAuthError: the reply carries no usable token.
        """
        user = self._config.username or ""
        self._token = token_from_reply(reply, f"user {user}")
        renew_in_s = self._config.user_token_ttl_s * RENEW_AT_SHARE
        self._renew_at = self._clock() + renew_in_s
        log.info("fetched a DRP token for user %s (renewed in %.0fs)", user, renew_in_s)
        return self._token

    def refused(self, token: str) -> bool:
        """DRP answered 401 to ``token``: whether to fetch a new one and try once more.

        A configured token is never exchanged (``False``). Of several calls refused with the
        same token, only the first forgets it, so they share one new fetch.
        """
        if not self.renewable:
            return False
        if self._token == token:
            self._token = None
        return True
