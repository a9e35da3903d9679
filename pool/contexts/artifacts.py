"""What a context container is made of besides its spec: its image and the injected agent.

The engine asks an :class:`ImageSource` for the image reference to create a container from,
and an :class:`AgentSource` for the ``drpcli`` binary to bind-mount. Node runtimes plug in
DRP-backed sources (:mod:`pool.contexts.images`, :mod:`pool.contexts.agent`);
:class:`RegistryImages` is the registry pull, the last resort where it is allowed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import docker

from pool.contexts.dockerapi import EngineNotFoundError, engine_call
from pool.contexts.models import ContextSpec
from pool.errors import EngineError, EngineUnavailableError, ImageUnavailableError
from pool.settings import Settings

log = logging.getLogger(__name__)

#: Where the agent is bind-mounted, and the entrypoint DRP's docker-context engine uses.
AGENT_PATH = "/usr/bin/drpcli"
AGENT_COMMAND = ("machines", "processjobs")
#: ``PATH`` of DRP's docker-context engine.
AGENT_PATH_ENV = "/bin:/usr/bin:/usr/local/bin:/sbin:/usr/sbin:/usr/local/sbin"


@dataclass(frozen=True, slots=True)
class Agent:
    """The ``drpcli`` binary to inject: a host path the engine can bind-mount, and its sha256
    (part of every container's spec hash, so a new drpcli rolls the containers)."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """The image a container is created from: ``ref`` (an id or a name the engine has)."""

    ref: str
    image_id: str


class ImageSource(Protocol):
    def resolve(self, spec: ContextSpec) -> ResolvedImage:
        """Make ``spec``'s image present on the engine.

        Raises:
            ImageUnavailableError: no archive, a bad checksum, refused pull (permanent).
            ArtifactUnavailableError: DRP cannot serve the archive now (transient).
            EngineError: the engine failed (transient).
        """
        ...


class AgentSource(Protocol):
    def current(self) -> Agent:
        """The drpcli to inject now.

        Raises:
            ArtifactUnavailableError: it cannot be had now (transient for the context).
        """
        ...


class RegistryImages:
    """Images the engine has, else pulled from a registry when ``pull_missing_images``."""

    def __init__(self, client: docker.DockerClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def present(self, image: str) -> ResolvedImage | None:
        """The image if the engine has it (by name or id).

        Raises:
            EngineError: the engine failed.
        """
        try:
            with engine_call(f"inspect image {image}"):
                found = self.client.images.get(image)
        except EngineNotFoundError:
            return None
        return ResolvedImage(ref=image, image_id=str(found.id))

    def resolve(self, spec: ContextSpec) -> ResolvedImage:
        image = spec.image
        found = self.present(image)
        if found is not None:
            return found
        if not self.settings.pull_missing_images:
            raise ImageUnavailableError(f"image {image!r} is not present and pulling is disabled")
        return self.pull(image)

    def pull(self, image: str) -> ResolvedImage:
        """Pull ``image`` from its registry.

        Raises:
            ImageUnavailableError: the registry refused or has no such image.
            EngineUnavailableError: the engine is gone (transient).
        """
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        log.info("pulling image %s", image)
        try:
            with engine_call(f"pull {image}"):
                pulled = self.client.images.pull(repo or image, tag=tag or "latest")
        except EngineUnavailableError:
            raise  # the engine itself is gone: transient, not the image's fault
        except EngineError as exc:
            raise ImageUnavailableError(
                f"image {image!r} is absent and could not be pulled: {exc}"
            ) from exc
        return ResolvedImage(ref=image, image_id=str(pulled.id))
