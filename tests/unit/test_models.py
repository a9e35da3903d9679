"""Pure logic: settings, specs, the env contract, queue names, CLI tables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pool.appconfig import celery_config
from pool.cli import format_contexts, format_nodes
from pool.contexts.models import ContextSpec, ContextStatus, Desired, RunState
from pool.membership import Membership, NodeView
from pool.queues import node_queue, tag_queue, tags_of
from pool.settings import Settings, redact_url


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPOOL_TAGS", "ci, audit")
    monkeypatch.setenv("CTXPOOL_ALLOWED_IMAGES", "registry.local/*,drp/*")
    monkeypatch.setenv("CTXPOOL_CAPACITY", "7")
    monkeypatch.setenv("CTXPOOL_NODE_NAME", "node-7")
    s = Settings()
    assert s.tags == ["ci", "audit"]
    assert s.allowed_images == ["registry.local/*", "drp/*"]
    assert (s.capacity, s.node_name, s.engine) == (7, "node-7", "docker-context")
    assert s.membership_ttl_s == 3 * s.heartbeat_s


def test_settings_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "ctxpool.toml"
    cfg.write_text('capacity = 3\ntags = ["gpu"]\n')
    monkeypatch.setenv("CTXPOOL_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("CTXPOOL_CAPACITY", "5")  # env wins over the file
    s = Settings()
    assert (s.capacity, s.tags) == (5, ["gpu"])
    monkeypatch.setenv("CTXPOOL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError):
        Settings()


@pytest.mark.parametrize(
    ("field", "value"),
    [("capacity", 0), ("node_name", "bad name"), ("tags", "ok,bad/tag"), ("heartbeat_s", -1)],
)
def test_settings_reject_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_settings_redact_passwords() -> None:
    s = Settings(broker_url="redis://:s3cret@h:6379/0", redis_url="amqp://u:pw@h//")
    text = str(s.redacted())
    assert "s3cret" not in text
    assert "pw@" not in text
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_celery_config_invariants() -> None:
    conf = celery_config(Settings(visibility_timeout_s=7200))
    assert conf["accept_content"] == ["json"]
    assert conf["task_serializer"] == "json"
    assert conf["task_acks_late"]
    assert conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 7200
    assert conf["task_default_queue"] == "tag-default"
    amqp = celery_config(Settings(broker_url="amqp://guest:guest@localhost//"))
    assert amqp["broker_transport_options"] == {}


def test_spec_env_contract_and_name() -> None:
    spec = ContextSpec(
        uuid="abc-1",
        context="runner",
        image="i",
        token="tok",
        endpoints=["https://a", "https://b"],
        env={"X": "1"},
    )
    assert spec.container_name == "drp-runner-abc-1"
    env = spec.container_env()
    assert env == {
        "X": "1",
        "RS_UUID": "abc-1",
        "RS_TOKEN": "tok",
        "RS_CONTEXT": "runner",
        "RS_ENDPOINTS": "https://a https://b",
        "RS_ENDPOINT": "https://a",
    }
    fallback = ContextSpec(uuid="u", context="c", image="i").container_env(["https://d"])
    assert fallback["RS_ENDPOINT"] == "https://d"


def test_spec_hides_token() -> None:
    spec = ContextSpec(uuid="u", context="c", image="i", token="very-secret")
    assert "very-secret" not in repr(spec)
    assert "very-secret" not in str(spec)
    assert "very-secret" not in spec.model_dump_json()
    assert "very-secret" in spec.to_store()
    assert ContextSpec.model_validate_json(spec.to_store()).token.get_secret_value() == (
        "very-secret"
    )


def test_spec_hash_ignores_token_and_tag_only() -> None:
    base = ContextSpec(uuid="u", context="c", image="i:1", token="a", tag="x")
    assert base.spec_hash() == base.model_copy(update={"token": "b", "tag": "y"}).spec_hash()
    assert base.spec_hash() != base.model_copy(update={"image": "i:2"}).spec_hash()
    assert base.spec_hash() != base.model_copy(update={"env": {"A": "1"}}).spec_hash()


@pytest.mark.parametrize(
    "bad",
    [
        {"uuid": "a b"},
        {"uuid": "../etc"},
        {"context": "has space"},
        {"env": {"RS_TOKEN": "x"}},
        {"env": {"1BAD": "x"}},
        {"tag": "no/slash"},
        {"resources": {"memory_mb": 1}},
        {"unknown_field": 1},
    ],
)
def test_spec_rejects_bad_input(bad: dict[str, object]) -> None:
    data: dict[str, object] = {"uuid": "u", "context": "c", "image": "i"}
    data.update(bad)
    with pytest.raises(ValidationError):
        ContextSpec.model_validate(data)


def test_spec_normalises_caps() -> None:
    spec = ContextSpec(uuid="u", context="c", image="i", cap_add=["cap_chown", "SETUID"])
    assert spec.cap_add == ["CHOWN", "SETUID"]


def test_queue_names() -> None:
    assert tag_queue("ci") == "tag-ci"
    assert node_queue("n1") == "node-n1"
    assert tags_of(["tag-ci", "node-n1", "tag-audit", "celery"]) == ["audit", "ci"]


def test_cli_tables() -> None:
    view = NodeView(
        name="n1",
        alive=False,
        last_seen=90.0,
        record=Membership(node="n1", worker_id="n1@h", incarnation="i", tags=["ci"]),
    )
    text = format_nodes([view], now=100.0)
    assert "n1" in text
    assert "stalled" in text
    assert "ci" in text
    assert "10s" in text
    status = ContextStatus(
        uuid="m1",
        desired=Desired.PRESENT,
        generation=2,
        owner="n1",
        owner_alive=False,
        state=RunState.ERROR,
        last_error="image gone",
    )
    text = format_contexts([status], now=100.0)
    assert "n1 (stalled)" in text
    assert "image gone" in text
    assert "error" in text
