"""context/volumes and context/publish-ports against the node's allowlist (pure)."""

from __future__ import annotations

import pytest

from pool.contexts import mounts
from pool.errors import MountNotAllowedError, PolicyViolationError, PortNotAllowedError
from pool.settings import Settings


def _settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def _same(path: str) -> str:
    return path


def test_parse_mount_spellings() -> None:
    spec = mounts.parse_mount("type=bind,src=/srv/a,dst=/data,ro")
    assert (spec.type, spec.source, spec.target, spec.readonly) == ("bind", "/srv/a", "/data", True)
    spec = mounts.parse_mount("type=bind,source=/srv/a,destination=/data,readonly=false")
    assert spec.readonly is False
    assert mounts.parse_mount("target=/cache").type == "volume"  # docker's default


@pytest.mark.parametrize(
    "text",
    [
        "type=bind,source=/a",
        "type=bind,source=/a,target=/b,volume-driver=evil",
        "type=nfs,target=/x",
    ],
)
def test_bad_mount_specs_are_clear_policy_errors(text: str) -> None:
    with pytest.raises(MountNotAllowedError, match="context/volumes"):
        mounts.parse_mount(text)


def test_read_only_allowlist_forces_read_only() -> None:
    s = _settings(allowed_mounts=["/srv/ctx/*"])
    got = mounts.allowed_mount(
        mounts.parse_mount("type=bind,source=/srv/ctx/data,target=/data"), s, _same
    )
    assert got.readonly is True


def test_rw_allowlist_keeps_the_spec() -> None:
    s = _settings(allowed_rw_mounts=["/srv/rw/*"])
    spec = mounts.parse_mount("type=bind,source=/srv/rw/x,target=/x")
    assert mounts.allowed_mount(spec, s, _same).readonly is False


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("/", "root file system"),
        ("/var/run/docker.sock", "engine's socket"),
        ("/var/run", "engine's socket"),
        ("/run", "engine's socket"),
        ("/proc/1", "host system tree"),
    ],
)
def test_root_and_engine_socket_are_refused_even_when_allowlisted(source: str, reason: str) -> None:
    s = _settings(allowed_mounts=["/*", "/"], allowed_rw_mounts=["/*", "/"])
    spec = mounts.parse_mount(f"type=bind,source={source},target=/host")
    with pytest.raises(MountNotAllowedError, match=reason) as err:
        mounts.allowed_mount(spec, s, _same)
    assert isinstance(err.value, PolicyViolationError)  # permanent: parked, no retry storm


def test_symlink_to_the_socket_is_refused() -> None:
    s = _settings(allowed_mounts=["/srv/*"])
    spec = mounts.parse_mount("type=bind,source=/srv/sock,target=/s")
    real = {"/srv/sock": "/run/docker.sock"}
    with pytest.raises(MountNotAllowedError, match="engine's socket"):
        mounts.allowed_mount(spec, s, lambda p: real.get(p, p))


def test_configured_engine_socket_is_refused() -> None:
    s = _settings(allowed_mounts=["/srv/*"])
    spec = mounts.parse_mount("type=bind,source=/srv/podman.sock,target=/s")
    with pytest.raises(MountNotAllowedError, match="engine's socket"):
        mounts.allowed_mount(spec, s, _same, engine_socket="/srv/podman.sock")


def test_outside_the_allowlist_and_dotdot_are_refused() -> None:
    s = _settings(allowed_mounts=["/srv/ctx/*"])
    with pytest.raises(MountNotAllowedError, match="not allowed"):
        mounts.allowed_mount(mounts.parse_mount("type=bind,source=/etc,target=/e"), s, _same)
    with pytest.raises(MountNotAllowedError, match=r"'\.\.'"):
        mounts.allowed_mount(
            mounts.parse_mount("type=bind,source=/srv/ctx/../../etc,target=/e"), s, _same
        )
    with pytest.raises(MountNotAllowedError, match="allows nothing"):
        mounts.allowed_mount(
            mounts.parse_mount("type=bind,source=/srv/ctx/a,target=/e"), _settings(), _same
        )


def test_named_volumes_and_tmpfs() -> None:
    s = _settings(allowed_mounts=["volume:cache-*"])
    ok = mounts.allowed_mount(mounts.parse_mount("source=cache-1,target=/c"), s, _same)
    assert ok.readonly is True
    with pytest.raises(MountNotAllowedError, match="named volume"):
        mounts.allowed_mount(mounts.parse_mount("source=other,target=/c"), s, _same)
    tmp = mounts.parse_mount("type=tmpfs,target=/scratch,tmpfs-size=1048576")
    assert mounts.allowed_mount(tmp, _settings(), _same).tmpfs_size == 1048576


def test_ports_inside_the_range() -> None:
    s = _settings(allowed_ports="20000-20010")
    got = mounts.allowed_ports(["127.0.0.1:20001:80/udp", "20002-20003:90-91"], s)
    assert [(p.host_ip, p.host_port, p.container_port, p.proto) for p in got] == [
        ("127.0.0.1", 20001, 80, "udp"),
        ("", 20002, 90, "tcp"),
        ("", 20003, 91, "tcp"),
    ]


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (["80"], "name the host port"),
        (["30000:80"], "not allowed"),
        (["x:80"], "-p format"),
        (["20000-20002:80-81"], "differ in length"),
    ],
)
def test_ports_outside_are_refused(texts: list[str], match: str) -> None:
    with pytest.raises(PortNotAllowedError, match=match):
        mounts.allowed_ports(texts, _settings(allowed_ports="20000-20010"))


def test_no_port_range_means_no_ports() -> None:
    with pytest.raises(PortNotAllowedError, match="none"):
        mounts.allowed_ports(["20001:80"], _settings())
    assert mounts.allowed_ports([], _settings()) == []


def test_split_specs() -> None:
    assert mounts.split_specs("a=1,b=2; c=3 ;") == ["a=1,b=2", "c=3"]
    assert mounts.split_specs(["x", "y;z"]) == ["x", "y", "z"]
    assert mounts.split_specs(None) == []
    with pytest.raises(ValueError, match="strings"):
        mounts.split_specs([1])
