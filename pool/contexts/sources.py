"""The composition of a node's engine with its artifact sources (images, drpcli).

- images: :class:`~pool.contexts.images.DrpImages` (archives from DRP's file space when
  ``CTXPOOL_DRP_URL`` is set; registry images otherwise);
- drpcli: ``CTXPOOL_DRPCLI`` when set (:class:`~pool.contexts.agent.LocalAgent`), else DRP's
  ``drpcli.<arch>.linux`` when ``CTXPOOL_DRP_URL`` is set
  (:class:`~pool.contexts.agent.DrpAgent`), else none (the engine says so when a context
  wants injection).
"""

from __future__ import annotations

import docker
import redis

from pool.contexts.agent import DrpAgent, LocalAgent
from pool.contexts.artifacts import AgentSource
from pool.contexts.dockerapi import engine_call
from pool.contexts.engine import DockerEngine
from pool.contexts.images import DrpImages, ImageRecords
from pool.drp.files import DrpFiles
from pool.drp.sync import TokenSource
from pool.keys import Keys
from pool.settings import Settings


def engine_arch(client: docker.DockerClient) -> str:
    """The engine's architecture as DRP names files (``amd64``, ``arm64``).

    Raises:
        EngineError: the engine cannot be asked.
    """
    with engine_call("version"):
        return str(client.version().get("Arch", "amd64"))


def agent_source(
    client: docker.DockerClient, settings: Settings, files: DrpFiles | None
) -> AgentSource | None:
    """Where this node's drpcli comes from (``None``: nowhere configured)."""
    if settings.drpcli is not None:
        return LocalAgent(settings.drpcli)
    if files is None:
        return None
    return DrpAgent(
        files,
        settings.cache_dir,
        settings.drpcli_file,
        lambda: engine_arch(client),
        settings.agent_check_s,
    )


def node_engine(
    settings: Settings,
    store_redis: redis.Redis[str],
    keys: Keys,
    node: str,
    tokens: TokenSource | None,
) -> DockerEngine:
    """The engine of node ``node``, with DRP-backed images and drpcli when DRP is configured.

    Args:
        settings: the node's settings.
        store_redis: the state store's Redis (image records live there).
        keys: the store's key builder.
        node: the node's name.
        tokens: the process's DRP token source; ``None`` without ``CTXPOOL_DRP_URL``.

    Raises:
        EngineUnavailableError: the engine cannot be reached.
    """
    base = DockerEngine.from_settings(settings)
    files = DrpFiles(tokens) if tokens is not None else None
    images = DrpImages(base.client, settings, files, ImageRecords(store_redis, keys, node), node)
    return DockerEngine(
        base.client, settings, images=images, agent=agent_source(base.client, settings, files)
    )
