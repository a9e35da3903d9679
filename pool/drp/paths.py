"""Paths of DRP's REST API (``/api/v3/...``), each variable segment quoted once, here.

A param key such as ``docker-context/owner`` is one segment: its ``/`` is quoted (``%2F``).
"""

from __future__ import annotations

from urllib.parse import quote

API = "/api/v3"


def seg(part: str) -> str:
    """``part`` quoted as one path segment (``/`` included)."""
    return quote(part, safe="")


def collection(kind: str) -> str:
    """``/api/v3/<kind>`` (``machines``, ``clusters``, ``contexts``, ...)."""
    return f"{API}/{seg(kind)}"


def page(kind: str, query: str, offset: int, limit: int) -> str:
    """One page of ``/api/v3/<kind>``, after the filters in ``query`` (already encoded)."""
    sep = "&" if query else ""
    return f"{collection(kind)}?{query}{sep}offset={offset}&limit={limit}"


def obj(kind: str, key: str) -> str:
    """``/api/v3/<kind>/<key>``: one object."""
    return f"{collection(kind)}/{seg(key)}"


def param(kind: str, key: str, name: str) -> str:
    """``/api/v3/<kind>/<key>/params/<name>``: one param of an object."""
    return f"{obj(kind, key)}/params/{seg(name)}"


def machine_param(uuid: str, name: str) -> str:
    """``/api/v3/machines/<uuid>/params/<name>``."""
    return param("machines", uuid, name)


def object_token(kind: str, key: str, ttl_s: int) -> str:
    """``/api/v3/<kind>/<key>/token?ttl=<s>``: a token for the agent of a machine."""
    return f"{obj(kind, key)}/token?ttl={int(ttl_s)}"


def user_token(user: str, ttl_s: int) -> str:
    """``/api/v3/users/<user>/token?ttl=<s>``: a token for a user (fetched with Basic)."""
    return f"{obj('users', user)}/token?ttl={int(ttl_s)}"


WEBSOCKET = f"{API}/ws"
