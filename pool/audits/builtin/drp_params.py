"""``drp-params``: a DRP machine's params (aggregated with its profiles') against an expected set.

It reads ``GET /api/v3/machines/<uuid>?aggregate=true`` through the node's DRP client
(:class:`~pool.drp.rest.DrpRest`, token auth and renewal) under the global limit ``drp-api``,
and compares every expected param by JSON value (``true`` is not ``1``). The result lists
the mismatches; values of params whose names match ``redact`` never appear in it.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pool.audits.checks import Check, CheckContext, CheckResult
from pool.calls.http import backoff_s
from pool.drp import paths
from pool.drp.errors import DrpAuthError, DrpError, DrpNotFoundError, DrpUnavailableError
from pool.limits.task import Deferred

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
_MISSING = object()


class DrpParamsParams(BaseModel):
    """Parameters of ``drp-params``."""

    model_config = ConfigDict(extra="forbid")

    expected: dict[str, Any] = Field(
        default_factory=dict, description="Param name -> the value it must have."
    )
    absent: list[str] = Field(default_factory=list, description="Params that must not be set.")
    aggregate: bool = Field(True, description="Include params inherited from profiles.")
    redact: list[str] = Field(
        default_factory=lambda: ["*password*", "*secret*", "*token*"],
        description="Globs of param names whose values never appear in results.",
    )
    timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _something(self) -> DrpParamsParams:
        if not self.expected and not self.absent:
            raise ValueError("name at least one param in expected or absent")
        return self


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), but booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def compare_params(
    actual: dict[str, Any],
    expected: dict[str, Any],
    absent: list[str] | tuple[str, ...] = (),
    redact: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The mismatches of ``actual`` params, each ``{"param", "expected", "actual"}`` (plus
    ``"missing": true`` for a param not set, ``"unwanted": true`` for a set one that must
    not be), sorted by param. Values of params matching a ``redact`` glob are replaced."""
    out = []

    def shown(name: str, value: Any) -> Any:
        if any(fnmatch.fnmatchcase(name.lower(), pat.lower()) for pat in redact):
            return REDACTED
        return value

    for name in sorted(expected):
        value = actual.get(name, _MISSING)
        if value is _MISSING:
            out.append(
                {
                    "param": name,
                    "expected": shown(name, expected[name]),
                    "actual": None,
                    "missing": True,
                }
            )
        elif not same_value(value, expected[name]):
            out.append(
                {
                    "param": name,
                    "expected": shown(name, expected[name]),
                    "actual": shown(name, value),
                }
            )
    for name in sorted(set(absent)):
        if name in actual:
            out.append(
                {
                    "param": name,
                    "expected": None,
                    "actual": shown(name, actual[name]),
                    "unwanted": True,
                }
            )
    return out


def describe(mismatch: dict[str, Any]) -> str:
    """One phrase for a mismatch (for the summary line)."""
    if mismatch.get("missing"):
        return f"{mismatch['param']} not set"
    if mismatch.get("unwanted"):
        return f"{mismatch['param']} is set"
    actual, expected = _short(mismatch["actual"]), _short(mismatch["expected"])
    return f"{mismatch['param']}={actual} (expected {expected})"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


class DrpParamsCheck(Check):
    """A DRP machine's (aggregated) params against an expected set."""

    name = "drp-params"
    version = "1"
    params_model = DrpParamsParams
    limit = "drp-api"
    default_timeout_s = 30.0
    description = "a DRP machine's params (aggregated) against expected values (target: uuid)"

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, DrpParamsParams)
        path = paths.obj("machines", target) + ("?aggregate=true" if params.aggregate else "")
        try:
            machine = ctx.drp.get(path)
        except DrpNotFoundError:
            return CheckResult(result="error", summary=f"DRP has no machine {target}")
        except DrpUnavailableError as exc:
            raise Deferred(backoff_s(1), str(exc)) from None
        except DrpAuthError as exc:
            return CheckResult(result="error", summary=str(exc))
        except DrpError as exc:
            return CheckResult(result="error", summary=str(exc))
        if not isinstance(machine, dict):
            return CheckResult(result="error", summary=f"DRP {path}: not a machine object")
        actual = machine.get("Params") or {}
        if not isinstance(actual, dict):
            return CheckResult(result="error", summary=f"DRP {path}: Params is not an object")
        found = compare_params(actual, params.expected, params.absent, params.redact)
        detail: dict[str, Any] = {
            "machine": str(machine.get("Name", "")),
            "checked": len(params.expected) + len(params.absent),
            "mismatches": found,
        }
        if found:
            summary = "; ".join(describe(m) for m in found)
            return CheckResult(result="fail", summary=summary[:2000], detail=detail)
        return CheckResult(
            result="pass", summary=f"{detail['checked']} params as expected", detail=detail
        )
