"""A small synchronous DRP REST client (requests) for the nodes' own calls: one machine's
params, read and written directly (not queued as integration calls).

It shares the process's :class:`~pool.drp.sync.TokenSource`: every call sends
``Authorization: Bearer``; after a 401 a user token is fetched again and the call tried once
more (a configured token is never exchanged). Errors come from
:func:`~pool.drp.errors.error_for_status`; requests' own exceptions are converted here and not
chained (they hold the request, and with it the token). Tokens never appear in logs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from pool.drp import paths
from pool.drp.auth import bearer_header, renews_after
from pool.drp.errors import DrpAuthError, DrpError, DrpUnavailableError, error_for_status
from pool.drp.sync import TokenSource

log = logging.getLogger(__name__)


class DrpRest:
    """Synchronous calls to one DRP endpoint with the tokens of ``tokens``.

    Args:
        tokens: the process's token source (its config names the endpoint and TLS).
        timeout_s: seconds per call (default: the endpoint's ``timeout_s``).
        session: the HTTP session (default: a new one).
    """

    def __init__(
        self,
        tokens: TokenSource,
        timeout_s: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.tokens = tokens
        self.timeout_s = timeout_s if timeout_s is not None else tokens.config.timeout_s
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``path`` (``/api/v3/...``); returns the parsed JSON reply (``None`` if empty).

        Raises:
            DrpAuthError: 401/403 (after one renewal of a user token), or no token.
            DrpNotFoundError: 404.
            DrpUnavailableError: DRP cannot be reached, timed out or answered 5xx.
            DrpError: any other failure (other 4xx, a reply that is not JSON).
        """
        token = self.tokens.token()
        try:
            return self._send(method, path, token, body)
        except DrpAuthError as exc:
            fresh = self.tokens.renew(token) if renews_after(exc.status) else None
            if fresh is None:
                raise
            log.info("DRP refused the user token (HTTP 401): renewed it, trying once more")
            return self._send(method, path, fresh, body)

    def _send(self, method: str, path: str, token: str, body: Any) -> Any:
        config = self.tokens.config
        headers = {"Authorization": bearer_header(token), "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            resp = self._session.request(
                method,
                config.url + path,
                data=data,
                headers=headers,
                timeout=self.timeout_s,
                verify=config.requests_verify(),
                allow_redirects=False,  # the token goes to DRP only
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            # not chained: a requests error holds the request, and with it the token
            raise DrpUnavailableError(f"DRP {method} {path}: {type(exc).__name__}: {exc}") from None
        except requests.RequestException as exc:
            raise DrpError(f"DRP {method} {path}: {type(exc).__name__}") from None
        error = error_for_status(resp.status_code, method, path, resp.text)
        if error is not None:
            raise error
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise DrpError(f"DRP {method} {path}: response is not JSON") from None

    def get(self, path: str) -> Any:
        """``GET path``; see :meth:`request` for the errors."""
        return self.request("GET", path)

    def set_param(self, kind: str, key: str, name: str, value: Any) -> None:
        """``POST /api/v3/<kind>/<key>/params/<name>``: set one param of an object.

        Raises:
            DrpError: see :meth:`request`.
        """
        self.request("POST", paths.param(kind, key, name), value)

    def delete_param(self, kind: str, key: str, name: str) -> None:
        """``DELETE /api/v3/<kind>/<key>/params/<name>``: clear one param of an object.

        Raises:
            DrpError: see :meth:`request`.
        """
        self.request("DELETE", paths.param(kind, key, name))


__all__ = ["DrpRest"]
