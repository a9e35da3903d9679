"""The DRP simulator's pure parts (its servers are covered by tests/integration)."""

from __future__ import annotations

import pytest

from broker_bridge.drpsim import PatchError, apply_patch


def test_json_patch() -> None:
    doc = {"Context": "a", "Params": {"x/y": 1}}
    out = apply_patch(doc, [{"op": "add", "path": "/Params/x~1z", "value": 2}])
    assert out["Params"] == {"x/y": 1, "x/z": 2}
    assert doc["Params"] == {"x/y": 1}  # the original is untouched
    with pytest.raises(PatchError) as bad:
        apply_patch(doc, [{"op": "move", "path": "/Context"}])
    assert bad.value.status == 422
