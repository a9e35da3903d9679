"""DRP API calls the nodes and the bridge make (owner write-back, error params), as
:class:`~pool.calls.http.HttpRequest` objects built in the worker that runs them.

Credentials come from the worker's settings (``CTXPOOL_DRP_TOKEN`` or
``CTXPOOL_DRP_USERNAME``/``CTXPOOL_DRP_PASSWORD``), never from the task message, so they are
neither queued nor logged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from pool.calls.http import HttpRequest
from pool.drp.params import ERROR_PARAM, OWNER_PARAM
from pool.errors import ConfigError
from pool.settings import Settings

DRP_LIMIT = "drp-api"


class DrpCall(BaseModel):
    """A DRP API call as it travels in a task message (no credentials)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern=r"^/api/v3/[^\s]*$")
    body: Any = None
    timeout_s: float = Field(30.0, gt=0, le=600)


def set_param(uuid: str, key: str, value: Any) -> DrpCall:
    """``POST /api/v3/machines/<uuid>/params/<key>``: set one machine param."""
    return DrpCall(
        method="POST", path=f"/api/v3/machines/{_seg(uuid)}/params/{_seg(key)}", body=value
    )


def delete_param(uuid: str, key: str) -> DrpCall:
    """``DELETE /api/v3/machines/<uuid>/params/<key>``: clear one machine param."""
    return DrpCall(method="DELETE", path=f"/api/v3/machines/{_seg(uuid)}/params/{_seg(key)}")


def patch_machine(uuid: str, ops: list[dict[str, Any]]) -> DrpCall:
    """``PATCH /api/v3/machines/<uuid>`` with RFC 6902 operations (``test`` ops included)."""
    return DrpCall(method="PATCH", path=f"/api/v3/machines/{_seg(uuid)}", body=ops)


def _seg(part: str) -> str:
    return quote(part, safe="")


def auth_headers(settings: Settings) -> dict[str, str]:
    """``Authorization`` for DRP from settings.

    Raises:
        ConfigError: neither a token nor a user and password is configured.
    """
    if settings.drp_token is not None:
        return {"Authorization": f"Bearer {settings.drp_token.get_secret_value()}"}
    if settings.drp_username and settings.drp_password is not None:
        raw = f"{settings.drp_username}:{settings.drp_password.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
    raise ConfigError("DRP credentials missing: set CTXPOOL_DRP_TOKEN or USERNAME/PASSWORD")


def to_http(call: DrpCall, settings: Settings) -> HttpRequest:
    """The HTTP request of ``call`` against ``CTXPOOL_DRP_URL``, with credentials.

    Raises:
        ConfigError: ``CTXPOOL_DRP_URL`` or credentials are not configured.
    """
    if not settings.drp_url:
        raise ConfigError("CTXPOOL_DRP_URL is not set: cannot call DRP")
    headers = {**auth_headers(settings), "Accept": "application/json"}
    if call.method == "PATCH":
        headers["Content-Type"] = "application/json-patch+json"
    return HttpRequest(
        method=call.method,
        url=settings.drp_url.rstrip("/") + call.path,
        headers=headers,
        json_body=call.body if call.body is not None or call.method in ("POST", "PUT") else None,
        timeout_s=call.timeout_s,
        limit=DRP_LIMIT,
        verify_tls=settings.drp_verify_tls,
        ca_bundle=settings.drp_ca_bundle,
    )


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
