"""Context images the DRP way: ``docker save`` archives in DRP's file space, loaded once per node.

When a context needs ``spec.image`` the node decides from its own record (Redis hash
``images:<node>``, field = image name), not from what the engine happens to hold (nodes may
share an engine):

- with ``Meta.Checksum``: the record has that checksum and its image is still on the engine
  → use it, fetch nothing; else fetch;
- without: the engine has the image and the record (if any) is younger than
  ``image_refresh_s`` → use it; else fetch (an unchanged archive, by DRP's sha256 header, is
  not downloaded again).

Fetching ``HEAD``s each candidate (``Meta.Imagepull``, else ``image_file_paths``) in order,
streams the first archive found to the host's cache (sha256 checked), ``docker load``s it from
the file, records what it loaded (the archive's own tags may differ from ``Image``) and
deletes the archive. No archive anywhere → a registry pull when ``pull_missing_images``,
else a permanent error that says where it looked. Many contexts of one node wanting the image
at once share one download: a file lock per (node, image) in the cache, and the record is
read again once it is held.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pool.contexts.artifacts import RegistryImages, ResolvedImage
from pool.contexts.dockerapi import engine_call
from pool.contexts.filelock import file_lock
from pool.contexts.models import ContextSpec
from pool.drp.errors import DrpError, DrpNotFoundError
from pool.drp.files import DrpChecksumError, DrpFiles, FileInfo
from pool.errors import (
    ArtifactUnavailableError,
    EngineError,
    EngineUnavailableError,
    ImageUnavailableError,
)
from pool.keys import Keys
from pool.settings import Settings

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ImageRecord(BaseModel):
    """What a node loaded for one image name (``images:<node>`` field value, JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source: str = Field(description="DRP file path or URL the archive came from.")
    sha256: str = Field(description="The archive's sha256 (hex).")
    image_id: str = Field(description="The loaded image's id (sha256:...).")
    tags: list[str] = Field(default_factory=list, description="Tags the archive carried.")
    fetched_at: float = Field(description="Unix seconds of the download (or last confirmation).")


class ImageRecords:
    """One node's image records in Redis (the hash ``Keys.node_images(node)``)."""

    def __init__(self, client: redis.Redis[str], keys: Keys, node: str) -> None:
        self.redis = client
        self.key = keys.node_images(node)

    def get(self, image: str) -> ImageRecord | None:
        """The record of ``image`` (``None`` when absent or unreadable).

        Raises:
            ArtifactUnavailableError: Redis cannot be reached (transient).
        """
        try:
            raw = self.redis.hget(self.key, image)
        except redis.RedisError as exc:
            raise ArtifactUnavailableError(f"image {image}: records unreadable: {exc}") from exc
        if raw is None:
            return None
        try:
            return ImageRecord.model_validate_json(raw)
        except ValidationError:
            log.warning("image %s: ignoring an unreadable record in %s", image, self.key)
            return None

    def put(self, image: str, record: ImageRecord) -> None:
        """Store the record of ``image``.

        Raises:
            ArtifactUnavailableError: Redis cannot be reached (transient).
        """
        try:
            self.redis.hset(self.key, image, record.model_dump_json())
        except redis.RedisError as exc:
            raise ArtifactUnavailableError(f"image {image}: cannot record it: {exc}") from exc


def _file_name(image: str) -> str:
    """A file name for ``image`` (readable, and unique even after unsafe characters go)."""
    digest = hashlib.sha256(image.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', image)[:80]}-{digest}"


class DrpImages:
    """The node's :class:`~pool.contexts.artifacts.ImageSource`: archives from DRP's file
    space, a registry pull as the last resort (and the only source without DRP).

    Args:
        client: the Docker engine.
        settings: ``image_file_paths``, ``image_refresh_s``, ``pull_missing_images``,
            ``cache_dir``.
        files: DRP's file client; ``None`` without a DRP URL (registry images only).
        records: this node's image records.
        node: this node's name (per-node download lock).
        clock: unix seconds (injectable for tests).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        settings: Settings,
        files: DrpFiles | None,
        records: ImageRecords,
        node: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings
        self.files = files
        self.records = records
        self.node = node
        self.registry = RegistryImages(client, settings)
        self._clock = clock
        self.archives = settings.cache_dir / "images"
        #: Archives this instance downloaded (for tests and logs).
        self.downloads = 0

    def resolve(self, spec: ContextSpec) -> ResolvedImage:
        """Make ``spec``'s image present on the engine (see the module's rules).

        Raises:
            ImageUnavailableError: no archive and no pull, a checksum mismatch, an archive
                that does not load (permanent).
            ArtifactUnavailableError: DRP cannot serve the archive now (transient).
            EngineError: the engine failed (transient).
        """
        if self.files is None:
            return self.registry.resolve(spec)
        hit = self._reusable(spec)
        if hit is not None:
            return hit
        lock = self.archives / "locks" / f"{self.node}.{_file_name(spec.image)}.lock"
        with file_lock(lock):
            # another process or thread of this node may have loaded it while we waited
            hit = self._reusable(spec)
            if hit is not None:
                return hit
            return self._fetch(spec, self.files)

    # ---- decisions ------------------------------------------------------------------------

    def _reusable(self, spec: ContextSpec) -> ResolvedImage | None:
        """The image this node may use without asking DRP, or ``None``: fetch."""
        record = self.records.get(spec.image)
        if spec.image_checksum is not None:
            if record is not None and record.sha256 == spec.image_checksum:
                return self.registry.present(record.image_id)
            return None
        if record is None:
            return self.registry.present(spec.image)
        if self._clock() - record.fetched_at < self.settings.image_refresh_s:
            return self.registry.present(record.image_id)
        return None

    def candidates(self, spec: ContextSpec) -> list[str]:
        """Where the archive is looked for, in order."""
        if spec.image_pull:
            return [spec.image_pull]
        return [p.format(image=spec.image) for p in self.settings.image_file_paths]

    def _fetch(self, spec: ContextSpec, files: DrpFiles) -> ResolvedImage:
        record = self.records.get(spec.image)
        try:
            found = self._locate(spec, files)
        except ArtifactUnavailableError:
            stale = self._stale_fallback(spec, record)
            if stale is None:
                raise
            return stale
        if found is None:
            return self._no_archive(spec)
        want = spec.image_checksum
        if want is not None and found.sha256 is not None and found.sha256 != want:
            raise self._mismatch(spec, found.source, want, found.sha256)
        if want is None and record is not None and found.sha256 == record.sha256:
            present = self.registry.present(record.image_id)
            if present is not None:  # the archive did not change: confirm, do not download
                self.records.put(
                    spec.image, record.model_copy(update={"fetched_at": self._clock()})
                )
                log.info(
                    "image %s: archive %s unchanged, keeping %s",
                    spec.image,
                    found.source,
                    record.image_id,
                )
                return present
        return self._load(spec, files, found)

    def _locate(self, spec: ContextSpec, files: DrpFiles) -> FileInfo | None:
        for source in self.candidates(spec):
            try:
                info = files.head(source)
            except DrpError as exc:
                if exc.status == 405:  # a plain web server without HEAD: just GET it
                    return FileInfo(source, None, None)
                raise ArtifactUnavailableError(
                    f"image {spec.image}: cannot ask DRP for its archive now: {exc}"
                ) from None
            if info is not None:
                return info
        return None

    def _stale_fallback(
        self, spec: ContextSpec, record: ImageRecord | None
    ) -> ResolvedImage | None:
        """Without a checksum, an image loaded before is better than none while DRP is down."""
        if spec.image_checksum is not None or record is None:
            return None
        present = self.registry.present(record.image_id)
        if present is not None:
            log.warning(
                "image %s: DRP cannot be asked now; using the image loaded at %.0f",
                spec.image,
                record.fetched_at,
            )
        return present

    def _no_archive(self, spec: ContextSpec) -> ResolvedImage:
        where = " or ".join(self.candidates(spec))
        space = "(Meta.Imagepull)" if spec.image_pull else "in DRP's file space"
        if not self.settings.pull_missing_images:
            raise ImageUnavailableError(
                f"image {spec.image}: no archive at {where} {space}, and pulling is disabled"
            )
        log.info("image %s: no archive at %s %s; pulling it", spec.image, where, space)
        try:
            return self.registry.resolve(spec)
        except ImageUnavailableError as exc:
            raise ImageUnavailableError(
                f"image {spec.image}: no archive at {where} {space}, and the pull failed: {exc}"
            ) from exc

    @staticmethod
    def _mismatch(spec: ContextSpec, source: str, want: str, actual: str) -> ImageUnavailableError:
        return ImageUnavailableError(
            f"image {spec.image}: checksum mismatch: the archive at {source} has sha256 "
            f"{actual}, but the context's Meta.Checksum is {want}; fix one of them"
        )

    # ---- loading --------------------------------------------------------------------------

    def _load(self, spec: ContextSpec, files: DrpFiles, found: FileInfo) -> ResolvedImage:
        self.archives.mkdir(parents=True, exist_ok=True)
        dest = self.archives / f"{self.node}.{_file_name(spec.image)}.tar"
        want = spec.image_checksum
        started = time.monotonic()
        try:
            sha = files.download(found.source, dest, want)
        except DrpChecksumError as exc:
            if want is not None:
                raise self._mismatch(spec, found.source, want, exc.actual) from None
            raise ArtifactUnavailableError(f"image {spec.image}: {exc}") from None
        except DrpNotFoundError as exc:
            raise ArtifactUnavailableError(f"image {spec.image}: the archive went: {exc}") from None
        except DrpError as exc:
            raise ArtifactUnavailableError(
                f"image {spec.image}: cannot download its archive now: {exc}"
            ) from None
        self.downloads += 1
        try:
            size_mb = dest.stat().st_size / 1e6
            loaded = self._docker_load(spec, dest, found.source)
        finally:
            dest.unlink(missing_ok=True)
        chosen = next((img for img in loaded if spec.image in (img.tags or [])), loaded[0])
        image_id = str(chosen.id)
        tags = sorted({tag for img in loaded for tag in (img.tags or [])})
        record = ImageRecord(
            source=found.source, sha256=sha, image_id=image_id, tags=tags, fetched_at=self._clock()
        )
        self.records.put(spec.image, record)
        log.info(
            "image %s: loaded %s (tags %s) from %s, %.1f MB in %.1fs",
            spec.image,
            image_id,
            ", ".join(tags) or "none",
            found.source,
            size_mb,
            time.monotonic() - started,
        )
        return ResolvedImage(ref=image_id, image_id=image_id)

    def _docker_load(self, spec: ContextSpec, archive: Path, source: str) -> list[Any]:
        """``docker load`` streaming from ``archive``; the images it loaded (at least one).

        Raises:
            ImageUnavailableError: the archive is not a loadable image (permanent).
            EngineError: the engine failed (transient).
        """
        try:
            with archive.open("rb") as data, engine_call(f"load {archive.name}"):
                loaded: list[Any] = self.client.images.load(data)
        except EngineUnavailableError:
            raise
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.ImageLoadError):
                raise ImageUnavailableError(
                    f"image {spec.image}: the archive at {source} does not load: {exc}"
                ) from exc
            raise
        if not loaded:
            raise ImageUnavailableError(
                f"image {spec.image}: the archive at {source} holds no image"
            )
        return loaded
