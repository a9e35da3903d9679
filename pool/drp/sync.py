"""A thread-safe, synchronous DRP token source for the nodes' write-back (requests).

One per process (hung off the runtime, rebuilt after a fork). A configured token is used as
is; with a user and password the source fetches a user token once with Basic auth, shares it
between threads, fetches it again at 80% of its TTL, and once after DRP refused it with 401
(:mod:`pool.drp.auth` decides when). Tokens never appear in logs or exceptions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from pool.drp.auth import TokenState
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpError, DrpUnavailableError, error_for_status

log = logging.getLogger(__name__)


class TokenSource:
    """Bearer tokens for one DRP endpoint, shared by the threads of one process.

    Args:
        config: the endpoint and its credentials.
        session: the HTTP session for token calls (default: a new one).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        config: DrpConfig,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        if config.plain_http:
            log.warning("DRP URL %s is plain http: development only", config.url)
        self._session = session or requests.Session()
        self._state = TokenState(config, clock)
        self._lock = threading.Lock()

    @property
    def renewable(self) -> bool:
        """Whether tokens come from a user and password (a configured token is final)."""
        return self._state.renewable

    def token(self) -> str:
        """The token to send now (fetched on first use and when due for renewal).

        Raises:
            DrpAuthError: DRP refused the user and password, or returned no token.
            DrpUnavailableError: DRP cannot be reached or answered 5xx.
            DrpError: any other failure of the token call.
        """
        with self._lock:
            return self._state.current() or self._fetch()

    def renew(self, refused: str) -> str | None:
        """A new token after DRP answered 401 to ``refused``, to try the call once more.

        Returns ``None`` for a configured token, which is never exchanged. Threads refused
        with the same token share one fetch.

        Raises:
            DrpAuthError, DrpUnavailableError, DrpError: see :meth:`token`.
        """
        with self._lock:
            if not self._state.refused(refused):
                return None
            return self._state.current() or self._fetch()

    def close(self) -> None:
        self._session.close()

    def _fetch(self) -> str:
        path, headers = self._state.fetch_call()
        try:
            resp = self._session.get(
                self.config.url + path,
                headers={**headers, "Accept": "application/json"},
                timeout=self.config.timeout_s,
                verify=self.config.requests_verify(),
                allow_redirects=False,  # Basic credentials go to DRP only
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            # not chained: a requests error holds the request, and with it the credentials
            raise DrpUnavailableError(f"DRP GET {path}: {type(exc).__name__}: {exc}") from None
        except requests.RequestException as exc:
            raise DrpError(f"DRP GET {path}: {type(exc).__name__}") from None
        error = error_for_status(resp.status_code, "GET", path, resp.text)
        if error is not None:
            raise error
        try:
            reply: Any = resp.json()
        except ValueError:
            raise DrpError(f"DRP GET {path}: response is not JSON") from None
        return self._state.accept(reply)
