"""Helpers every Redis-backed module shares: error conversion and Lua script loading."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import ParamSpec, TypeVar

import redis

from pool.errors import StoreError

P = ParamSpec("P")
R = TypeVar("R")


def converting(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: a ``redis.RedisError`` becomes :class:`StoreError` (``"<what>: ..."``)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except redis.RedisError as exc:
                raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc

        return wrapper

    return decorate


def lua(name: str) -> str:
    """The source of ``pool/lua/<name>.lua``."""
    return (resources.files("pool") / "lua" / f"{name}.lua").read_text()
