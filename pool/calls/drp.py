"""DRP API calls the nodes make (owner write-back, error params): a :class:`DrpCall` travels in
the task message; the worker that runs it adds DRP's URL and a token (:func:`send`).

Tokens come from the worker's own token source (:class:`pool.drp.sync.TokenSource`: a
configured ``CTXPOOL_DRP_TOKEN``, or a user token fetched once per process with
``CTXPOOL_DRP_USERNAME``/``CTXPOOL_DRP_PASSWORD``), never from the message, so they are
neither queued nor logged. Every call sends ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pool.calls.http import HttpRequest, HttpResult, backoff_s, perform
from pool.contexts.models import ContainerInfo
from pool.drp import paths
from pool.drp.auth import bearer_header, renews_after
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpUnavailableError
from pool.drp.params import CONTAINER_INFO_PARAM, ERROR_PARAM, OWNER_PARAM
from pool.drp.sync import TokenSource
from pool.limits.task import Deferred

log = logging.getLogger(__name__)

DRP_LIMIT = "drp-api"
_T = TypeVar("_T")


class DrpCall(BaseModel):
    """A DRP API call as it travels in a task message (no credentials)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern=r"^/api/v3/[^\s]*$")
    body: Any = None
    timeout_s: float = Field(30.0, gt=0, le=600)


def set_param(uuid: str, key: str, value: Any) -> DrpCall:
    """``POST /api/v3/machines/<uuid>/params/<key>``: set one machine param."""
    return DrpCall(method="POST", path=paths.machine_param(uuid, key), body=value)


def delete_param(uuid: str, key: str) -> DrpCall:
    """``DELETE /api/v3/machines/<uuid>/params/<key>``: clear one machine param."""
    return DrpCall(method="DELETE", path=paths.machine_param(uuid, key))


def patch_machine(uuid: str, ops: list[dict[str, Any]]) -> DrpCall:
    """``PATCH /api/v3/machines/<uuid>`` with RFC 6902 operations (``test`` ops included)."""
    return DrpCall(method="PATCH", path=paths.obj("machines", uuid), body=ops)


def to_http(call: DrpCall, config: DrpConfig, token: str) -> HttpRequest:
    """The HTTP request of ``call`` against ``config``'s endpoint, with ``token`` as Bearer."""
    headers = {"Authorization": bearer_header(token), "Accept": "application/json"}
    if call.method == "PATCH":
        headers["Content-Type"] = "application/json-patch+json"
    return HttpRequest(
        method=call.method,
        url=config.url + call.path,
        headers=headers,
        json_body=call.body if call.body is not None or call.method in ("POST", "PUT") else None,
        timeout_s=call.timeout_s,
        limit=DRP_LIMIT,
        verify_tls=config.verify_tls,
        ca_bundle=config.ca_bundle,
    )


def send(call: DrpCall, tokens: TokenSource, task_id: str, attempt: int) -> HttpResult:
    """Make one attempt of ``call`` with a token; after a 401 renew a user token and try once
    more (a configured token is never exchanged: the 401 is the result).

    Args:
        call: the call.
        tokens: this process's token source.
        task_id: recorded with the result.
        attempt: 1-based number of this attempt.

    Raises:
        Deferred: DRP answered 429/5xx or could not be reached (also while fetching a token).
        DrpAuthError: DRP refused the user and password (fixing them is up to the operator).
        DrpError: the token call failed otherwise.
    """
    token = _token(tokens.token, attempt)
    result = perform(to_http(call, tokens.config, token), task_id, attempt)
    if not renews_after(result.status):
        return result
    fresh = _token(lambda: tokens.renew(token), attempt)
    if fresh is None:
        return result
    log.info("DRP refused the user token for %s: renewed it, trying once more", describe(call))
    return perform(to_http(call, tokens.config, fresh), task_id, attempt)


def _token(get: Callable[[], _T], attempt: int) -> _T:
    """``get()``, with DRP being unreachable turned into a deferral of the call."""
    try:
        return get()
    except DrpUnavailableError as exc:
        raise Deferred(backoff_s(attempt), f"no DRP token: {exc}") from None


def describe(call: DrpCall) -> str:
    body = "" if call.body is None else f" {json.dumps(call.body)[:80]}"
    return f"{call.method} {call.path}{body}"


class DrpWriteBack:
    """The reconciler's :class:`~pool.contexts.reconcile.Reporter` for DRP: each outcome
    becomes one DRP call, queued through ``tasks.integrations.drp`` under the ``drp-api``
    limit (so 1,000 placements at once reach DRP at the limit's rate)."""

    def __init__(self, send: Callable[[DrpCall], None]) -> None:
        self.send = send

    def owner_changed(self, uuid: str, owner: str) -> None:
        self.send(set_param(uuid, OWNER_PARAM, owner))

    def error_set(self, uuid: str, error: str) -> None:
        self.send(set_param(uuid, ERROR_PARAM, error))

    def error_cleared(self, uuid: str) -> None:
        self.send(delete_param(uuid, ERROR_PARAM))

    def container_started(self, uuid: str, info: ContainerInfo) -> None:
        self.send(set_param(uuid, CONTAINER_INFO_PARAM, info.to_param()))
