"""Named global limits: their definitions, parsing and key templates.

A limit is defined once in configuration and holds across every node and process together::

    CTXPOOL_LIMITS="http=20/s burst 5 per {host}; redfish=5/s burst 10 concurrency 4 per {host}"

or, in the TOML config file::

    [limits]
    drp-api = "50/s burst 50"
    redfish = { rate = "5/s", burst = 10, concurrency = 4, key = "{host}" }

``rate`` is ``<n>/s``, ``<n>/m`` or ``<n>/h``; ``burst`` is how many calls may go at once after a
quiet period (default 1: evenly spaced); ``concurrency`` caps calls in flight; ``per`` (or
``key``) is a template over the call's fields that gives every target its own bucket (one per
host, one per BMC).
"""

from __future__ import annotations

import json
import re
import string
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pool.errors import ConfigError

#: Limits every installation has unless configuration overrides them (names the tasks use).
DEFAULT_LIMITS: dict[str, str] = {
    "http": "10/s burst 10 per {host}",
    "drp-api": "50/s burst 50",
    # BMCs are slow and small: a few calls at a time each (audits' redfish-health check)
    "redfish": "5/s burst 5 concurrency 4 per {host}",
}

_RATE_RE = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<unit>s|sec|second|m|min|minute|h|hour)\s*$"
)
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_LIMIT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def parse_rate(text: str) -> float:
    """``"50/s"`` -> 50.0 per second, ``"300/m"`` -> 5.0, ``"36/h"`` -> 0.01.

    Raises:
        ValueError: not ``<number>/<s|m|h>`` or not positive.
    """
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} must look like 50/s, 300/m or 100/h")
    per_s = float(match["n"]) / _UNIT_S[match["unit"]]
    if per_s <= 0:
        raise ValueError(f"rate {text!r} must be positive")
    return per_s


def template_fields(template: str) -> list[str]:
    """The field names a key template uses; only plain ``{name}`` fields are allowed.

    Raises:
        ValueError: attribute/index access, format specs or conversions in a field.
    """
    fields = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"key template {template!r}: use plain fields like {{host}}")
        fields.append(name)
    return fields


class LimitSpec(BaseModel):
    """One named limit, as configured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: str = Field(description="Sustained rate: '<n>/s', '<n>/m' or '<n>/h'.")
    burst: int = Field(1, ge=1, le=100_000, description="Calls allowed at once after a pause.")
    concurrency: int | None = Field(None, ge=1, le=100_000, description="Max calls in flight.")
    key: str | None = Field(None, description="Bucket key template, e.g. '{host}'.")
    slot_ttl_s: float = Field(
        30.0, gt=0, description="Lease of a concurrency slot; renewed while the call runs."
    )
    prefetch: int | None = Field(
        None, ge=1, le=1000, description="Messages one node's gate holds (default 1, keyed 8)."
    )

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value.strip()

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value or None

    @cached_property
    def per_s(self) -> float:
        """Tokens per second (parsed once: the limiter reads it on every acquire)."""
        return parse_rate(self.rate)

    @cached_property
    def interval_s(self) -> float:
        """Seconds between two tokens."""
        return 1.0 / self.per_s

    @property
    def max_lag_s(self) -> float:
        """How late an admitted call may start before it must queue for a token again.

        One token interval, between 20 ms and 1 s: a late start can then add at most one call
        to any window.
        """
        return min(1.0, max(0.02, self.interval_s))

    @property
    def gate_prefetch(self) -> int:
        if self.prefetch is not None:
            return self.prefetch
        return 8 if self.key else 1

    def render_key(self, fields: dict[str, Any]) -> str:
        """The bucket key of one call (``"*"`` when the limit has no key template).

        Raises:
            ConfigError: the call lacks a field the template names.
        """
        if not self.key:
            return "*"
        try:
            return self.key.format_map(fields)
        except KeyError as exc:
            raise ConfigError(
                f"limit key template {self.key!r} needs field {exc.args[0]!r}, "
                f"the call has {sorted(fields)}"
            ) from None

    def describe(self) -> str:
        parts = [self.rate, f"burst {self.burst}"]
        if self.concurrency:
            parts.append(f"concurrency {self.concurrency}")
        if self.key:
            parts.append(f"per {self.key}")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> LimitSpec:
        """Parse ``"5/s burst 10 concurrency 4 per {host}"``.

        Raises:
            ValueError: unknown words, missing numbers, invalid values.
        """
        words = text.split()
        if not words:
            raise ValueError("empty limit definition")
        data: dict[str, Any] = {"rate": words[0]}
        rest = words[1:]
        names = {"burst": "burst", "concurrency": "concurrency", "per": "key", "key": "key"}
        names |= {"slot-ttl": "slot_ttl_s", "prefetch": "prefetch"}
        while rest:
            word = rest.pop(0).lower()
            if word not in names:
                raise ValueError(f"unknown word {word!r} in limit {text!r} (use {sorted(names)})")
            if not rest:
                raise ValueError(f"{word!r} needs a value in limit {text!r}")
            value = rest.pop(0)
            data[names[word]] = value.removesuffix("s") if word == "slot-ttl" else value
        return cls.model_validate(data)


class Limits(BaseModel):
    """Every configured limit, by name."""

    model_config = ConfigDict(frozen=True)

    specs: dict[str, LimitSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, Limits):
            return value
        if isinstance(value, str):
            value = parse_limits_text(value)
        if isinstance(value, dict) and "specs" not in value:
            merged: dict[str, Any] = dict(DEFAULT_LIMITS)
            merged.update(value)
            specs = {}
            for name, spec in merged.items():
                if not _LIMIT_NAME_RE.match(name):
                    raise ValueError(f"limit name {name!r} must be lowercase [a-z0-9_.-]")
                try:
                    specs[name] = LimitSpec.parse(spec) if isinstance(spec, str) else spec
                except ValueError as exc:
                    raise ValueError(f"limit {name!r}: {exc}") from exc
            return {"specs": specs}
        return value

    def get(self, name: str) -> LimitSpec:
        """The limit called ``name``.

        Raises:
            ConfigError: no such limit is configured.
        """
        try:
            return self.specs[name]
        except KeyError:
            raise ConfigError(
                f"limit {name!r} is not configured (CTXPOOL_LIMITS has {sorted(self.specs)})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self.specs)


def parse_limits_text(text: str) -> dict[str, Any]:
    """``"a=5/s; b=10/m burst 3"`` or a JSON object -> name -> definition.

    Raises:
        ValueError: an entry is not ``name=definition``.
    """
    text = text.strip()
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("CTXPOOL_LIMITS JSON must be an object")
        return loaded
    out: dict[str, Any] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, spec = entry.partition("=")
        if not sep:
            name, sep, spec = entry.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"limit entry {entry!r} must be name=definition")
        out[name.strip()] = spec.strip()
    return out
