"""RFC 6902 JSON patch as DRP applies it to objects (``add``, ``replace``, ``remove``, ``test``)."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """A request the simulator refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(422, f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add``/``replace``/``remove``/``test`` on a copy of ``doc``.

    Raises:
        PatchError: 409 when a ``test`` fails, 422 for a malformed patch.
    """
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(422, f"bad patch operation {op!r}")
        parts = _pointer(op["path"])
        parent: Any = out
        for part in parts[:-1]:
            if not isinstance(parent, dict) or part not in parent:
                raise PatchError(422, f"path {op['path']} does not exist")
            parent = parent[part]
        last = parts[-1]
        if not isinstance(parent, dict):
            raise PatchError(422, f"path {op['path']} is not in an object")
        kind = op["op"]
        if kind == "test":
            if parent.get(last) != op.get("value"):
                raise PatchError(409, f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise PatchError(422, f"replace: {op['path']} does not exist")
            parent[last] = op.get("value")
        elif kind == "remove":
            if last not in parent:
                raise PatchError(422, f"remove: {op['path']} does not exist")
            del parent[last]
        else:
            raise PatchError(422, f"unsupported op {kind!r}")
    return out
