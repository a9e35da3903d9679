"""The nodes' artifact sources: drpcli (:mod:`pool.contexts.agent`) and context images
(:mod:`pool.contexts.images`), with a fake file client, a fake engine and fakeredis. The
assertions are on what was asked of DRP and the engine: HEADs, downloads, loads."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import docker.errors
import fakeredis
import pytest
import requests

from pool.contexts.agent import DrpAgent, LocalAgent
from pool.contexts.artifacts import ResolvedImage
from pool.contexts.images import DrpImages, ImageRecord, ImageRecords
from pool.contexts.models import ContextSpec
from pool.drp.errors import DrpNotFoundError, DrpUnavailableError
from pool.drp.files import DrpChecksumError, FileInfo
from pool.errors import ArtifactUnavailableError, ImageUnavailableError
from pool.keys import Keys
from pool.settings import Settings

NODE = "n1"


class FakeFiles:
    """DRP's file space in memory: ``heads`` and ``downloads`` record what was asked."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.files: dict[str, bytes] = {}
        self.heads: list[str] = []
        self.downloads: list[str] = []
        self.down = False
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return hashlib.sha256(data).hexdigest()

    def head(self, source: str) -> FileInfo | None:
        with self._lock:
            self.heads.append(source)
        if self.down:
            raise DrpUnavailableError(f"DRP HEAD {source}: ConnectionError")
        data = self.files.get(source)
        if data is None:
            return None
        return FileInfo(source, hashlib.sha256(data).hexdigest(), len(data))

    def download(self, source: str, dest: Path, expected_sha256: str | None = None) -> str:
        if self.down:
            raise DrpUnavailableError(f"DRP GET {source}: ConnectionError")
        data = self.files.get(source)
        if data is None:
            raise DrpNotFoundError(f"DRP GET {source}: not found", 404)
        time.sleep(self.delay_s)
        with self._lock:
            self.downloads.append(source)
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha256 and expected_sha256 != sha:
            raise DrpChecksumError(f"GET {source}", expected_sha256, sha)
        dest.write_bytes(data)
        return sha


class FakeImage:
    def __init__(self, image_id: str, tags: list[str]) -> None:
        self.id = image_id
        self.tags = tags


class FakeImages:
    """The engine's images: ``load`` reads a tar whose member ``tag`` names the image."""

    def __init__(self) -> None:
        self.by_ref: dict[str, FakeImage] = {}
        self.loads: list[str] = []
        self.pulls: list[str] = []

    def add(self, image_id: str, tags: list[str]) -> None:
        img = FakeImage(image_id, tags)
        self.by_ref[image_id] = img
        for tag in tags:
            self.by_ref[tag] = img

    def get(self, ref: str) -> FakeImage:
        if ref not in self.by_ref:
            resp = requests.Response()
            resp.status_code = 404
            raise docker.errors.ImageNotFound(f"no such image: {ref}", response=resp)
        return self.by_ref[ref]

    def load(self, data: Any) -> list[FakeImage]:
        raw = data.read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.extractfile("tag")
            assert member is not None
            tag = member.read().decode()
        image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.loads.append(tag)
        self.add(image_id, [tag])
        return [self.by_ref[image_id]]

    def pull(self, repo: str, tag: str = "latest") -> FakeImage:
        self.pulls.append(f"{repo}:{tag}")
        self.add("sha256:pulled", [f"{repo}:{tag}"])
        return self.by_ref["sha256:pulled"]

    def remove(self, ref: str) -> None:
        img = self.by_ref[ref]
        for key in [k for k, v in self.by_ref.items() if v is img]:
            del self.by_ref[key]


class FakeClient:
    def __init__(self) -> None:
        self.images = FakeImages()


def archive(tag: str, payload: bytes = b"") -> bytes:
    """A tar standing in for a ``docker save`` archive of ``tag``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("tag", tag.encode()), ("layer", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _spec(image: str = "runner_v1.2.0", **kw: Any) -> ContextSpec:
    return ContextSpec(uuid="m1", context="runner", image=image, **kw)


class Rig:
    def __init__(self, tmp_path: Path, files: FakeFiles | None, **settings: Any) -> None:
        settings.setdefault("pull_missing_images", False)
        self.settings = Settings(state_dir=tmp_path / "state", **settings)
        self.client = FakeClient()
        self.files = files
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.records = ImageRecords(self.redis, Keys("t:"), NODE)
        self.clock = Clock()
        self.source = self.make(NODE)

    def make(self, node: str) -> DrpImages:
        return DrpImages(
            self.client,  # type: ignore[arg-type]
            self.settings,
            self.files,  # type: ignore[arg-type]
            ImageRecords(self.redis, Keys("t:"), node),
            node,
            clock=self.clock,
        )

    def archives_left(self) -> list[Path]:
        root = self.settings.cache_dir / "images"
        return [p for p in root.glob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def files() -> FakeFiles:
    return FakeFiles()


def test_first_use_loads_the_archive_and_records_it(tmp_path: Path, files: FakeFiles) -> None:
    sha = files.put("files/docker-contexts/runner_v1.2.0", archive("rackn/runner:1.2"))
    rig = Rig(tmp_path, files)
    got = rig.source.resolve(_spec(image_checksum=sha))
    # looked in order; the archive's own tag differs from the Context's Image
    assert files.heads == ["docker-contexts/runner_v1.2.0", "files/docker-contexts/runner_v1.2.0"]
    assert files.downloads == ["files/docker-contexts/runner_v1.2.0"]
    assert rig.client.images.loads == ["rackn/runner:1.2"]
    assert got.ref == got.image_id
    assert got.image_id.startswith("sha256:")
    rec = rig.records.get("runner_v1.2.0")
    assert rec is not None
    assert (rec.sha256, rec.image_id, rec.tags) == (sha, got.image_id, ["rackn/runner:1.2"])
    assert rig.archives_left() == []  # deleted after loading


def test_a_matching_checksum_fetches_nothing_again(tmp_path: Path, files: FakeFiles) -> None:
    sha = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    first = rig.source.resolve(_spec(image_checksum=sha))
    rig.clock.now += 10 * 86400  # age does not matter when a checksum is given
    files.heads.clear()
    assert rig.source.resolve(_spec(image_checksum=sha)) == first
    assert files.heads == []
    assert len(files.downloads) == 1


def test_the_record_is_per_node_not_what_the_engine_holds(tmp_path: Path, files: FakeFiles) -> None:
    sha = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    rig.source.resolve(_spec(image_checksum=sha))
    # a second node on the same engine: the image is there, but this node has no record
    rig.make("n2").resolve(_spec(image_checksum=sha))
    assert len(files.downloads) == 2


def test_a_new_checksum_or_a_vanished_image_fetches_again(tmp_path: Path, files: FakeFiles) -> None:
    old = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0", b"old"))
    rig = Rig(tmp_path, files)
    first = rig.source.resolve(_spec(image_checksum=old))
    new = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0", b"new"))
    second = rig.source.resolve(_spec(image_checksum=new))
    assert second.image_id != first.image_id
    rig.client.images.remove(second.image_id)  # someone pruned it
    rig.source.resolve(_spec(image_checksum=new))
    assert len(files.downloads) == 3


def test_a_wrong_checksum_is_permanent_and_downloads_nothing(
    tmp_path: Path, files: FakeFiles
) -> None:
    actual = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    with pytest.raises(ImageUnavailableError) as err:
        rig.source.resolve(_spec(image_checksum="ab" * 32))
    msg = str(err.value)
    assert "ab" * 32 in msg
    assert actual in msg
    assert "docker-contexts/runner_v1.2.0" in msg
    assert files.downloads == []
    assert rig.client.images.loads == []


def test_a_checksum_mismatch_found_while_downloading_is_permanent(
    tmp_path: Path, files: FakeFiles
) -> None:
    files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    files.head = lambda source: FileInfo(source, None, None) if source in files.files else None  # type: ignore[method-assign]
    with pytest.raises(ImageUnavailableError, match="Meta.Checksum is " + "cd" * 32):
        rig.source.resolve(_spec(image_checksum="cd" * 32))
    assert rig.client.images.loads == []
    assert rig.archives_left() == []


def test_without_checksum_the_engines_image_is_used_until_the_record_is_old(
    tmp_path: Path, files: FakeFiles
) -> None:
    rig = Rig(tmp_path, files, image_refresh_s=3600)
    rig.client.images.add("sha256:local", ["runner_v1.2.0"])
    assert rig.source.resolve(_spec()) == ResolvedImage("runner_v1.2.0", "sha256:local")
    assert files.heads == []  # no record, image present: DRP is not asked
    files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0", b"v1"))
    rig.records.put("runner_v1.2.0", ImageRecord(source="x", sha256="0" * 64,
                    image_id="sha256:local", tags=[], fetched_at=rig.clock.now))  # fmt: skip
    rig.clock.now += 3599
    rig.source.resolve(_spec())
    assert files.heads == []
    rig.clock.now += 2  # the record is older than image_refresh_s: fetch again
    rig.source.resolve(_spec())
    assert len(files.downloads) == 1
    rig.clock.now += 3601  # older again, but the archive did not change: HEAD only
    rig.source.resolve(_spec())
    assert len(files.downloads) == 1
    assert len(files.heads) == 2
    rec = rig.records.get("runner_v1.2.0")
    assert rec is not None
    assert rec.fetched_at == rig.clock.now


def test_no_archive_and_no_pull_is_a_clear_permanent_error(
    tmp_path: Path, files: FakeFiles
) -> None:
    rig = Rig(tmp_path, files, image_file_paths="files/docker-contexts/{image},"
              "contexts/docker-context/{image}")  # fmt: skip
    with pytest.raises(ImageUnavailableError) as err:
        rig.source.resolve(_spec(image="x_v1"))
    assert str(err.value) == (
        "image x_v1: no archive at files/docker-contexts/x_v1 or contexts/docker-context/x_v1 "
        "in DRP's file space, and pulling is disabled"
    )


def test_no_archive_falls_back_to_a_registry_pull(tmp_path: Path, files: FakeFiles) -> None:
    rig = Rig(tmp_path, files, pull_missing_images=True)
    got = rig.source.resolve(_spec(image="library/alpine:3.20"))
    assert rig.client.images.pulls == ["library/alpine:3.20"]
    assert got.image_id == "sha256:pulled"
    assert len(files.heads) == 3


def test_imagepull_url_is_the_only_candidate(tmp_path: Path, files: FakeFiles) -> None:
    url = "https://images.example.com/runner.tar"
    sha = files.put(url, archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    rig.source.resolve(_spec(image_pull=url, image_checksum=sha))
    assert files.heads == [url]
    assert files.downloads == [url]


def test_drp_down_is_transient_unless_an_older_load_may_serve(
    tmp_path: Path, files: FakeFiles
) -> None:
    rig = Rig(tmp_path, files, image_refresh_s=60)
    files.down = True
    with pytest.raises(ArtifactUnavailableError, match="cannot ask DRP"):
        rig.source.resolve(_spec(image_checksum="ab" * 32))
    with pytest.raises(ArtifactUnavailableError):
        rig.source.resolve(_spec())
    files.down = False
    files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    loaded = rig.source.resolve(_spec())
    del rig.client.images.by_ref["runner_v1.2.0"]  # untagged: only the id stays reachable
    rig.clock.now += 61
    files.down = True  # stale record, DRP down, no checksum: the loaded image serves
    assert rig.source.resolve(_spec()).image_id == loaded.image_id


def test_many_contexts_of_one_node_share_one_download(tmp_path: Path) -> None:
    files = FakeFiles(delay_s=0.3)
    sha = files.put("docker-contexts/runner_v1.2.0", archive("runner_v1.2.0"))
    rig = Rig(tmp_path, files)
    results: list[Any] = []
    errors: list[BaseException] = []

    def want() -> None:
        try:  # each its own source, like separate pool processes of the node
            results.append(rig.make(NODE).resolve(_spec(image_checksum=sha)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=want) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 12
    assert len({r.image_id for r in results}) == 1
    assert files.downloads == ["docker-contexts/runner_v1.2.0"]
    assert rig.client.images.loads == ["runner_v1.2.0"]


def test_without_drp_images_come_from_the_registry(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None)
    rig.client.images.add("sha256:local", ["runner_v1.2.0"])
    assert rig.source.resolve(_spec()).image_id == "sha256:local"
    with pytest.raises(ImageUnavailableError, match="pulling is disabled"):
        rig.source.resolve(_spec(image="other"))


# ---- drpcli -------------------------------------------------------------------------------


def test_local_agent_rehashes_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "drpcli"
    path.write_bytes(b"v1")
    agent = LocalAgent(path)
    first = agent.current()
    assert first.sha256 == hashlib.sha256(b"v1").hexdigest()
    assert first.path == str(path)
    path.write_bytes(b"v2-longer")
    assert agent.current().sha256 == hashlib.sha256(b"v2-longer").hexdigest()
    path.unlink()
    with pytest.raises(ArtifactUnavailableError, match="CTXPOOL_DRPCLI"):
        agent.current()


def _drp_agent(files: FakeFiles, cache: Path, clock: Clock, check_s: float = 300) -> DrpAgent:
    return DrpAgent(
        files,  # type: ignore[arg-type]
        cache,
        "drpcli.{arch}.linux",
        lambda: "arm64",
        check_s,
        clock=clock,
    )


def test_drp_agent_is_fetched_again_only_when_the_binary_changes(
    tmp_path: Path, files: FakeFiles
) -> None:
    clock = Clock()
    v1 = files.put("drpcli.arm64.linux", b"#!/bin/sh\necho v1\n")
    agent = _drp_agent(files, tmp_path, clock)
    got = agent.current()
    assert got.sha256 == v1
    assert got.path == str(tmp_path / "agent" / v1 / "drpcli")
    assert Path(got.path).read_bytes() == b"#!/bin/sh\necho v1\n"
    assert Path(got.path).stat().st_mode & 0o777 == 0o755
    clock.now += 299
    assert agent.current() == got
    assert files.heads == ["drpcli.arm64.linux"]  # at most one HEAD per agent_check_s
    clock.now += 2
    assert agent.current() == got
    assert len(files.heads) == 2
    assert len(files.downloads) == 1
    v2 = files.put("drpcli.arm64.linux", b"#!/bin/sh\necho v2\n")
    clock.now += 301
    assert agent.current().sha256 == v2
    assert len(files.downloads) == 2
    assert Path(got.path).exists()  # the old binary stays for containers that mount it


def test_drp_agent_keeps_the_cached_binary_while_drp_is_down(
    tmp_path: Path, files: FakeFiles, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    files.put("drpcli.arm64.linux", b"bin")
    first = _drp_agent(files, tmp_path, clock, check_s=1).current()
    files.down = True
    # a restarted process: nothing in memory, DRP down, the host's cache serves
    agent = _drp_agent(files, tmp_path, clock, check_s=1)
    for _ in range(3):
        clock.now += 2
        assert agent.current() == first
    warnings = [r for r in caplog.records if "using the cached binary" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None
    with pytest.raises(ArtifactUnavailableError, match="no cached copy"):
        _drp_agent(files, tmp_path / "empty", clock).current()


def test_drp_agent_404_names_the_path_and_the_local_alternative(
    tmp_path: Path, files: FakeFiles
) -> None:
    with pytest.raises(ArtifactUnavailableError) as err:
        _drp_agent(files, tmp_path, Clock()).current()
    assert "drpcli.arm64.linux" in str(err.value)
    assert "CTXPOOL_DRPCLI" in str(err.value)


def test_processes_of_a_host_share_one_drpcli_download(tmp_path: Path) -> None:
    files = FakeFiles(delay_s=0.3)
    files.put("drpcli.arm64.linux", b"bin")
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(_drp_agent(files, tmp_path, Clock()).current()))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 8
    assert len(set(got)) == 1
    assert len(files.downloads) == 1
    shutil.rmtree(tmp_path / "agent")
