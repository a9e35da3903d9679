"""What the reconciler reports and returns: its :class:`Reporter` interface (outcomes others
must learn about: DRP, in production), the :class:`Outcome` of one handled context, and the
:class:`NodeIdentity` it works as."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pool.contexts.models import ContainerInfo


class Reporter(Protocol):
    """Where the reconciler reports outcomes others must learn about (DRP, in production).

    Each is reported once per change, not per reconcile. Implementations must not block for
    long and must not raise for transport trouble they can retry themselves.
    """

    def owner_changed(self, uuid: str, owner: str) -> None:
        """``owner`` now runs the context (a fresh claim or a takeover)."""

    def error_set(self, uuid: str, error: str) -> None:
        """The context cannot run: ``error`` says why (new or changed message)."""

    def error_cleared(self, uuid: str) -> None:
        """A recorded error is fixed: the context runs."""

    def container_started(self, uuid: str, info: ContainerInfo) -> None:
        """A container was created or replaced for the context (``context/container-info``)."""


class NullReporter:
    """Reports to no one (no DRP configured, tests)."""

    def owner_changed(self, uuid: str, owner: str) -> None:
        return None

    def error_set(self, uuid: str, error: str) -> None:
        return None

    def error_cleared(self, uuid: str) -> None:
        return None

    def container_started(self, uuid: str, info: ContainerInfo) -> None:
        return None


class Outcome(StrEnum):
    CONVERGED = "converged"
    REMOVED = "removed"
    FORWARDED = "forwarded"
    REQUEUED = "requeued"
    BACKLOGGED = "backlogged"
    BUSY = "busy"
    ERROR = "error"
    ORPHAN = "orphan"
    PARKED = "parked"
    HANDED_OFF = "handed-off"
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is: fixed for the life of one worker start."""

    name: str
    tags: frozenset[str]
    capacity: int
    incarnation: str = field(default_factory=lambda: secrets.token_hex(8))
