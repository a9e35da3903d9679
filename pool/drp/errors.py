"""DRP's errors, and the one mapping from an HTTP status to them (both transports use it).

Messages name the method and path of the call, never a credential: paths carry no secrets
(tokens travel in headers only), and response bodies are cut short.
"""

from __future__ import annotations

from pool.errors import ConfigError, CtxpoolError

#: How much of an error response's body a message quotes.
BODY_QUOTE_CHARS = 200


class DrpError(CtxpoolError):
    """A DRP call failed (``status`` is DRP's HTTP status when it answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DrpConfigError(DrpError, ConfigError):
    """DRP's URL, credentials or TLS settings are missing or invalid."""


class DrpAuthError(DrpError):
    """401/403: the credentials are wrong or lack rights (not retried in a tight loop)."""


class DrpNotFoundError(DrpError):
    """404: no such object."""


class DrpUnavailableError(DrpError):
    """DRP cannot be reached, or answered 5xx."""


class DrpFrameTooLargeError(DrpUnavailableError):
    """DRP sent a websocket frame over the client's limit: the connection cannot go on."""


def error_for_status(status: int, method: str, path: str, body: str = "") -> DrpError | None:
    """The error a DRP answer means, or ``None`` for a success (1xx-3xx).

    Args:
        status: DRP's HTTP status.
        method: the call's method (for the message).
        path: the call's path without the endpoint (for the message; carries no secret).
        body: the response body; quoted (cut short) for other 4xx answers only.

    Returns:
        :class:`DrpAuthError` for 401/403, :class:`DrpNotFoundError` for 404,
        :class:`DrpUnavailableError` for 5xx, :class:`DrpError` for other 4xx.
    """
    where = f"DRP {method} {path}"
    if status < 400:
        return None
    if status in (401, 403):
        return DrpAuthError(f"{where}: HTTP {status} (credentials refused)", status)
    if status == 404:
        return DrpNotFoundError(f"{where}: not found", status)
    if status >= 500:
        return DrpUnavailableError(f"{where}: HTTP {status}", status)
    quoted = body[:BODY_QUOTE_CHARS]
    return DrpError(
        f"{where}: HTTP {status}: {quoted}" if quoted else f"{where}: HTTP {status}", status
    )
