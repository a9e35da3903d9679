"""DRP's file space over the API port (``/api/v3/files/<path>``), synchronous (requests).

The nodes fetch drpcli and context image archives with it. Downloads stream to disk in
chunks (never the whole file in memory), are hashed while they stream, land in a temporary
file next to the destination and are renamed into place only once complete and verified, so
a reader never sees half a file.

Auth: ``Authorization: Bearer`` from the process's :class:`~pool.drp.sync.TokenSource`, renewed
once after a 401 (a configured token is never exchanged). A full URL (a Context's
``Meta.Imagepull``) gets DRP's token only when it points at DRP's own host and port. Tokens
never appear in messages: they name the file's path, or a URL without its query.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

from pool.drp import paths
from pool.drp.auth import bearer_header, renews_after
from pool.drp.errors import (
    DrpError,
    DrpNotFoundError,
    DrpUnavailableError,
    error_for_status,
)
from pool.drp.sync import TokenSource

log = logging.getLogger(__name__)

#: DRP's checksum header on ``HEAD`` and ``GET /api/v3/files/<path>``.
SHA256_HEADER = "X-DRP-SHA256SUM"
FILES = f"{paths.API}/files"


class DrpChecksumError(DrpError):
    """A downloaded file's sha256 is not the one expected (nothing is kept)."""

    def __init__(self, where: str, expected: str, actual: str) -> None:
        super().__init__(f"{where}: sha256 is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``HEAD`` says of a file: its sha256 (hex, lower case) and size in bytes, each
    ``None`` when the server did not say."""

    source: str
    sha256: str | None
    size_bytes: int | None


def _norm_sha(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().lower().removeprefix("sha256:") or None


class DrpFiles:
    """Files of one DRP endpoint (and archive URLs a Context names). Thread-safe.

    Args:
        tokens: the process's token source (carries the endpoint's config).
        session: the HTTP session (default: a new one).
        connect_timeout_s: seconds to connect.
        read_timeout_s: seconds the server may stay silent: per chunk, not per file, so a
            large archive may take as long as it streams.
        chunk_bytes: size of the chunks written to disk.
    """

    def __init__(
        self,
        tokens: TokenSource,
        session: requests.Session | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self.tokens = tokens
        self.config = tokens.config
        self._session = session or requests.Session()
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._chunk_bytes = chunk_bytes
        drp = urlsplit(self.config.url)
        self._drp_origin = (drp.scheme, drp.hostname, drp.port or _default_port(drp.scheme))

    def close(self) -> None:
        self._session.close()

    def url_for(self, source: str) -> str:
        """The URL of ``source``: a path in DRP's file space, or a full ``http(s)://`` URL."""
        if "://" in source:
            return source
        return f"{self.config.url}{FILES}/{quote(source.lstrip('/'), safe='/')}"

    def is_drp(self, url: str) -> bool:
        """Whether ``url`` points at DRP's own endpoint (only then is its token sent)."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname, parts.port or _default_port(parts.scheme))
        return origin == self._drp_origin

    # ---- calls ----------------------------------------------------------------------------

    def head(self, source: str) -> FileInfo | None:
        """``HEAD`` of a file: ``None`` when it does not exist (404).

        Args:
            source: a path in DRP's file space (``drpcli.amd64.linux``) or a full URL.

        Raises:
            DrpUnavailableError: DRP (or the URL's server) cannot be reached or answered 5xx.
            DrpAuthError: the credentials were refused (after one renewal).
            DrpError: any other failure.
        """
        resp = self._request("HEAD", source, stream=False)
        with resp:
            if resp.status_code == 404:
                return None
            self._raise_for(resp, "HEAD", source)
            size = resp.headers.get("Content-Length")
            return FileInfo(
                source=source,
                sha256=_norm_sha(resp.headers.get(SHA256_HEADER)),
                size_bytes=int(size) if size and size.isdigit() else None,
            )

    def download(self, source: str, dest: Path, expected_sha256: str | None = None) -> str:
        """Stream ``source`` into ``dest`` (a temporary file in ``dest``'s directory, renamed
        once complete), hashing as it streams.

        The sha256 is checked against ``expected_sha256`` when given, else against DRP's
        ``X-DRP-SHA256SUM`` header when the server sends one. On any failure nothing is
        left at ``dest`` or in its directory.

        Args:
            source: a path in DRP's file space or a full URL.
            dest: where the file goes (its directory must exist).
            expected_sha256: the sha256 (hex) the file must have.

        Returns:
            The file's sha256 (hex, lower case).

        Raises:
            DrpNotFoundError: no such file (404).
            DrpChecksumError: the bytes do not hash to what is expected.
            DrpUnavailableError: unreachable, 5xx, a read timeout or a cut stream.
            DrpAuthError: the credentials were refused (after one renewal).
            DrpError: any other failure (including a local write error).
        """
        where = f"GET {self._describe(source)}"
        resp = self._request("GET", source, stream=True)
        with resp:
            self._raise_for(resp, "GET", source)
            expected = _norm_sha(expected_sha256) or _norm_sha(resp.headers.get(SHA256_HEADER))
            actual, size = self._stream_to(resp, dest, expected, where)
        log.info("downloaded %s: %d bytes, sha256 %s", self._describe(source), size, actual)
        return actual

    def _stream_to(
        self, resp: requests.Response, dest: Path, expected: str | None, where: str
    ) -> tuple[str, int]:
        """Write ``resp``'s body to ``dest`` through a temporary file; (sha256, bytes)."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in resp.iter_content(self._chunk_bytes):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                except requests.RequestException as exc:
                    raise DrpUnavailableError(
                        f"{where}: the stream broke after {size} bytes: {type(exc).__name__}"
                    ) from None
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise DrpChecksumError(where, expected, actual)
            os.replace(tmp, dest)
        except OSError as exc:
            raise DrpError(f"{where}: cannot write {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return actual, size

    # ---- transport ------------------------------------------------------------------------

    def _request(self, method: str, source: str, stream: bool) -> requests.Response:
        url = self.url_for(source)
        if not self.is_drp(url):
            return self._send(method, url, source, None, stream)
        token = self.tokens.token()
        resp = self._send(method, url, source, token, stream)
        if not renews_after(resp.status_code):
            return resp
        fresh = self.tokens.renew(token)
        if fresh is None:
            return resp
        resp.close()
        log.info("DRP refused the user token for %s: renewed it, trying once more", method)
        return self._send(method, url, source, fresh, stream)

    def _send(
        self, method: str, url: str, source: str, token: str | None, stream: bool
    ) -> requests.Response:
        headers = {"Authorization": bearer_header(token)} if token else {}
        verify = self.config.requests_verify() if self.is_drp(url) else True
        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                stream=stream,
                timeout=self._timeout,
                verify=verify,
                allow_redirects=True,  # requests drops Authorization when the host changes
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            # not chained: a requests error holds the request, and with it the token
            raise DrpUnavailableError(
                f"{method} {self._describe(source)}: {type(exc).__name__}"
            ) from None
        except requests.RequestException as exc:
            raise DrpError(f"{method} {self._describe(source)}: {type(exc).__name__}") from None

    def _raise_for(self, resp: requests.Response, method: str, source: str) -> None:
        body = "" if method == "HEAD" or resp.status_code < 400 else _short_body(resp)
        error = error_for_status(resp.status_code, method, self._describe(source), body)
        if error is not None:
            raise error

    def _describe(self, source: str) -> str:
        """``source`` for messages: a file path as DRP's API path, a URL without its query."""
        if "://" not in source:
            return f"{FILES}/{source.lstrip('/')}"
        parts = urlsplit(source)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _short_body(resp: requests.Response) -> str:
    try:
        return next(resp.iter_content(256), b"").decode(errors="replace")
    except requests.RequestException:
        return ""


__all__ = ["DrpChecksumError", "DrpFiles", "DrpNotFoundError", "FileInfo"]
