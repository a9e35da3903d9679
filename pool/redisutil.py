"""Helpers every Redis-backed module shares: error conversion and Lua script loading.

Every Redis call ctxpool makes goes through a store class (``StateStore``, ``Members``,
``RedisLimiter``, ``CallRecords``) whose methods convert ``redis.RedisError`` into
:class:`~pool.errors.StoreError` here, so callers handle one error family.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from importlib import resources
from typing import ParamSpec, TypeVar

import redis

from pool.errors import StoreError

P = ParamSpec("P")
R = TypeVar("R")


def store_error(what: str, exc: redis.RedisError) -> StoreError:
    """The :class:`StoreError` for ``exc``: one line naming what failed and why."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return StoreError(f"{what}: cannot reach Redis ({type(exc).__name__}: {exc})")
    return StoreError(f"{what}: Redis error ({type(exc).__name__}: {exc})")


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Convert ``redis.RedisError`` raised inside the block into :class:`StoreError`."""
    try:
        yield
    except redis.RedisError as exc:
        raise store_error(what, exc) from exc


def converting(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: a ``redis.RedisError`` becomes :class:`StoreError` (``"<what>: ..."``).

    Raises:
        TypeError: at decoration, on a generator function. Its wrapper would return the
            generator before any Redis call runs and convert nothing: convert inside the
            generator with :func:`redis_errors` instead.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"@converting cannot wrap generator {fn.__qualname__}")

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with redis_errors(what):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


@functools.cache
def lua(name: str) -> str:
    """The source of ``pool/lua/<name>.lua`` (read once per process)."""
    return (resources.files("pool") / "lua" / f"{name}.lua").read_text()
