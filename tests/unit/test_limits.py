"""Limit definitions: parsing and validation at load time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pool.errors import ConfigError
from pool.limits.spec import DEFAULT_LIMITS, Limits, LimitSpec, parse_rate
from pool.settings import Settings


@pytest.mark.parametrize(
    ("text", "per_s"), [("50/s", 50.0), ("300/m", 5.0), ("36/h", 0.01), ("2.5/sec", 2.5)]
)
def test_parse_rate(text: str, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["50", "50/d", "-1/s", "0/s", "x/s", ""])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_spec_from_text() -> None:
    spec = LimitSpec.parse("5/s burst 10 concurrency 4 per {host} slot-ttl 12s")
    assert (spec.per_s, spec.burst, spec.concurrency, spec.key) == (5.0, 10, 4, "{host}")
    assert spec.slot_ttl_s == 12.0
    assert spec.gate_prefetch == 8  # keyed limits hold several messages at the gate
    assert spec.describe() == "5/s burst 10 concurrency 4 per {host}"
    plain = LimitSpec.parse("20/s")
    assert (plain.burst, plain.concurrency, plain.key, plain.gate_prefetch) == (1, None, None, 1)
    assert plain.max_lag_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("5/s brust 3", "unknown word 'brust'"),
        ("5/s burst", "needs a value"),
        ("5/s burst 0", "greater than or equal to 1"),
        ("5/s concurrency x", "concurrency"),
        ("5/s per {host.name}", "plain fields"),
        ("5/s per {host!r}", "plain fields"),
    ],
)
def test_spec_errors_are_clear(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        LimitSpec.parse(text)


def test_render_key() -> None:
    spec = LimitSpec.parse("5/s per {host}-{method}")
    assert spec.render_key({"host": "bmc1", "method": "GET", "extra": 1}) == "bmc1-GET"
    assert LimitSpec.parse("5/s").render_key({}) == "*"
    with pytest.raises(ConfigError, match="needs field 'method'"):
        spec.render_key({"host": "bmc1"})


def test_settings_env_string_merges_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPOOL_LIMITS", "redfish=5/s burst 10 concurrency 4 per {host}; x=300/m")
    limits = Settings().limits
    assert set(limits.names()) == {"redfish", "x", *DEFAULT_LIMITS}
    assert limits.get("redfish").concurrency == 4
    with pytest.raises(ConfigError, match="'nope' is not configured"):
        limits.get("nope")


def test_settings_override_default_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPOOL_LIMITS", '{"http": "20/s", "b": {"rate": "1/s", "burst": 2}}')
    limits = Settings().limits
    assert limits.get("http").describe() == "20/s burst 1"
    assert limits.get("b").burst == 2


def test_settings_toml(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "ctxpool.toml"
    cfg.write_text(
        '[limits]\nredfish = { rate = "5/s", burst = 10, concurrency = 4, key = "{host}" }\n'
        'drp-api = "100/s burst 20"\n'
    )
    monkeypatch.setenv("CTXPOOL_CONFIG_FILE", str(cfg))
    limits = Settings().limits
    assert limits.get("redfish").key == "{host}"
    assert limits.get("drp-api").describe() == "100/s burst 20"


@pytest.mark.parametrize(
    "value", ["a=5/x", "Bad Name=5/s", "no-equals-sign", "a=5/s burst 1 colour red"]
)
def test_settings_reject_bad_limits_at_load(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(limits=value)  # type: ignore[arg-type]


def test_limits_object_passes_through() -> None:
    limits = Limits.model_validate("a=1/s")
    assert Limits.model_validate(limits) is limits
