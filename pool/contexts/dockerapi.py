"""The one conversion point of docker-py and transport errors into the ctxpool error tree.

Every Docker API call runs inside :func:`engine_call`; its errors leave as ``EngineError``
subclasses (docker-py's own ``create_api_error_from_http_exception`` is the model), and each is
counted here by kind (``ctxpool_docker_errors_total{kind}``, :func:`error_kind`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import docker.errors
import requests

from pool.errors import EngineError, EngineUnavailableError, PermanentContextError
from pool.instruments import Instruments, instruments


class EngineNotFoundError(EngineError):
    """The engine has no such object (404)."""


class EngineConflictError(EngineError):
    """The engine refused because of a conflicting state (409: name taken, removal running)."""


def error_kind(err: EngineError) -> str:
    """The ``kind`` label of a converted error: ``unavailable``, ``not-found``, ``conflict``,
    ``permanent`` or ``other`` (timeouts, 5xx, unknown)."""
    if isinstance(err, EngineUnavailableError):
        return "unavailable"
    if isinstance(err, EngineNotFoundError):
        return "not-found"
    if isinstance(err, EngineConflictError):
        return "conflict"
    if isinstance(err, PermanentContextError):
        return "permanent"
    return "other"


def convert(exc: Exception, what: str, metrics: Instruments | None = None) -> EngineError:
    """Map a docker-py or transport error to the ctxpool tree, and count it by kind in
    ``metrics`` (default: this process's :func:`~pool.instruments.instruments`).

    - cannot connect → :class:`EngineUnavailableError`;
    - timeouts and other transport trouble, 5xx → :class:`EngineError` (transient);
    - 404 / 409 → internal not-found / conflict errors (callers decide what they mean);
    - other 4xx (the engine rejects the request as made), and docker-py's own refusals of
      invalid arguments → :class:`PermanentContextError`: retrying the same spec cannot help.
    """
    err = _convert(exc, what)
    (metrics or instruments()).docker_error(error_kind(err))
    return err


def _convert(exc: Exception, what: str) -> EngineError:
    # APIError is a requests HTTPError too: classify it by its status first
    if isinstance(exc, docker.errors.APIError):
        detail = exc.explanation or str(exc)
        if exc.status_code == 404:
            return EngineNotFoundError(f"{what}: {detail}")
        if exc.status_code == 409:
            return EngineConflictError(f"{what}: {detail}")
        if exc.is_client_error():
            return PermanentContextError(f"{what}: {detail}")
        return EngineError(f"{what}: {detail}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return EngineUnavailableError(f"{what}: Docker engine unreachable: {exc}")
    if isinstance(exc, requests.exceptions.RequestException):
        return EngineError(f"{what}: Docker engine did not answer: {exc}")
    if isinstance(exc, docker.errors.InvalidArgument | docker.errors.InvalidVersion):
        return PermanentContextError(f"{what}: {exc}")
    if isinstance(exc, docker.errors.DockerException) and "connect" in str(exc).lower():
        # docker.from_env() wraps a refused socket in a bare DockerException
        return EngineUnavailableError(f"{what}: Docker engine unreachable: {exc}")
    return EngineError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Every Docker API call runs in here: its errors leave as ``EngineError`` subclasses."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise convert(exc, what) from exc
