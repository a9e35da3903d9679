"""Queue naming: ``tag-<tag>`` per tag, ``node-<node>`` per node."""

from __future__ import annotations

from collections.abc import Iterable

TAG_PREFIX = "tag-"
NODE_PREFIX = "node-"
DEFAULT_TAG = "default"


def tag_queue(tag: str) -> str:
    return f"{TAG_PREFIX}{tag}"


def node_queue(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


def tags_of(queue_names: Iterable[str]) -> list[str]:
    """The tags served by a set of queue names, sorted."""
    return sorted({q[len(TAG_PREFIX) :] for q in queue_names if q.startswith(TAG_PREFIX)})
