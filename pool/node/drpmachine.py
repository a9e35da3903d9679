"""The node's own DRP machine: its tags and liveness, visible in DRP (``CTXPOOL_DRP_MACHINE``).

A node configured with a DRP machine (a name or a uuid) sets on it, in both spellings,

- ``docker-context/tags`` / ``context-broker/tags``: the node's tags (a sorted list), and
- ``docker-context/member-name`` / ``context-broker/member-name``: the node's name,

at start and every ``CTXPOOL_DRP_MACHINE_SYNC_S`` (it reads the machine's params first and
writes only what differs), and clears its member name on a clean shutdown. The context broker
reads them: a node registered in DRP is offered new members only when its machine carries
their tag (:func:`pool.contexts.placement.drp_candidates`).

The calls go straight to DRP (a few per period, not queued under ``drp-api``) through
:class:`~pool.drp.rest.DrpRest` with the process's token source, on a thread of the step's
own: a slow or unreachable DRP never delays the heartbeat on the consumer's timer. DRP being
unreachable is logged in one line and retried next period; a missing machine is logged as an
error; both show in the node's ``/healthz`` (loop ``drp-machine``).
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from pool.drp import paths
from pool.drp.errors import DrpError, DrpNotFoundError
from pool.drp.params import MEMBER_NAME_PARAMS, TAGS_PARAMS
from pool.drp.rest import DrpRest
from pool.errors import ConfigError, CtxpoolError
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime, node_runtime

log = logging.getLogger(__name__)

#: Seconds per DRP call of the periodic sync (a hung DRP must not hold the step's thread long).
SYNC_TIMEOUT_S = 10.0
#: Seconds per DRP call while clearing the member name at shutdown.
CLEAR_TIMEOUT_S = 5.0
MACHINES = "machines"


class DrpMachineMissingError(DrpNotFoundError, ConfigError):
    """``CTXPOOL_DRP_MACHINE`` names no DRP machine (or more than one)."""


def node_params(name: str, tags: Iterable[str]) -> dict[str, Any]:
    """The params a node asserts on its DRP machine: its tags (sorted) and its member name,
    each in both spellings."""
    tag_list = sorted(set(tags))
    wanted: dict[str, Any] = {p: list(tag_list) for p in TAGS_PARAMS}
    wanted.update({p: name for p in MEMBER_NAME_PARAMS})
    return wanted


def changed_params(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The params of ``wanted`` whose value on the machine (``current``) differs."""
    return {k: v for k, v in wanted.items() if k not in current or current[k] != v}


def member_params_to_clear(current: Mapping[str, Any], name: str) -> list[str]:
    """The member-name params to delete when node ``name`` stops: those naming it (another
    node's name, if someone shares the machine, is left alone)."""
    return [p for p in MEMBER_NAME_PARAMS if current.get(p) == name]


def _is_uuid(ref: str) -> bool:
    try:
        uuidlib.UUID(ref)
    except ValueError:
        return False
    return True


class NodeMachine:
    """One node's DRP machine, named by ``ref`` (a uuid, or a name resolved to one through
    ``GET /api/v3/machines?Name=<name>``; resolved again when the uuid stops answering).

    Args:
        rest: the DRP client.
        ref: the machine's uuid or name (``CTXPOOL_DRP_MACHINE``).
    """

    def __init__(self, rest: DrpRest, ref: str) -> None:
        self.rest = rest
        self.ref = ref
        self.uuid: str | None = ref if _is_uuid(ref) else None

    def resolve(self) -> str:
        """The machine's uuid.

        Raises:
            DrpMachineMissingError: no machine (or several) has that name or uuid.
            DrpError: the listing failed.
        """
        if self.uuid is not None:
            return self.uuid
        found = self.rest.get(paths.page(MACHINES, f"Name={quote(self.ref, safe='')}", 0, 2))
        if not isinstance(found, list):
            raise DrpError("DRP list of machines is not a JSON list")
        uuids = [m.get("Uuid") for m in found if isinstance(m, dict) and m.get("Name") == self.ref]
        if len(uuids) != 1 or not isinstance(uuids[0], str):
            what = "no DRP machine" if not uuids else f"{len(uuids)} DRP machines"
            raise DrpMachineMissingError(
                f"{what} named {self.ref!r} (CTXPOOL_DRP_MACHINE): create it in DRP or fix "
                "the setting",
                404,
            )
        self.uuid = uuids[0]
        return self.uuid

    def params(self) -> dict[str, Any]:
        """The machine's own params (not its profiles').

        Raises:
            DrpMachineMissingError: the machine does not exist.
            DrpError: the call failed, or DRP answered something that is not a machine.
        """
        for attempt in (1, 2):
            uuid = self.resolve()
            try:
                obj = self.rest.get(paths.obj(MACHINES, uuid))
            except DrpNotFoundError:
                if attempt == 2 or _is_uuid(self.ref):
                    raise DrpMachineMissingError(
                        f"DRP machine {self.ref!r} (CTXPOOL_DRP_MACHINE) not found: create it "
                        "in DRP or fix the setting",
                        404,
                    ) from None
                self.uuid = None  # deleted and maybe created again: look the name up again
                continue
            params = obj.get("Params") if isinstance(obj, dict) else None
            if params is None and isinstance(obj, dict):
                return {}
            if not isinstance(params, dict):
                raise DrpError(f"DRP machine {uuid}: not a machine object with Params")
            return params
        raise AssertionError("unreachable")  # pragma: no cover

    def assert_params(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """Set the params of ``wanted`` that differ on the machine; returns what it wrote.

        Raises:
            DrpMachineMissingError, DrpError: see :meth:`params`.
        """
        todo = changed_params(self.params(), wanted)
        uuid = self.resolve()
        for key, value in todo.items():
            self.rest.set_param(MACHINES, uuid, key, value)
        return todo

    def clear_member(self, name: str) -> list[str]:
        """Delete the member-name params naming ``name``; returns the params deleted.

        Raises:
            DrpMachineMissingError, DrpError: see :meth:`params`.
        """
        todo = member_params_to_clear(self.params(), name)
        uuid = self.resolve()
        for key in todo:
            self.rest.delete_param(MACHINES, uuid, key)
        return todo


class DrpMachineStep(PeriodicStep):
    """Keeps the node's tags and member name on its DRP machine (``CTXPOOL_DRP_MACHINE``; the
    step does nothing without it), every ``drp_machine_sync_s``, and clears the member name on
    a clean shutdown (not on a consumer restart after a broker hiccup: ``stop`` only pauses).

    Each tick runs on the step's own thread (one at a time: a tick still running when the
    next is due is skipped), so the consumer's timer, which also drives the heartbeat, never
    waits for DRP.
    """

    label = "ctxpool-drp-machine"
    loop = "drp-machine"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.machine: NodeMachine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: Future[None] | None = None
        super().__init__(consumer, **kwargs)

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.drp_machine_sync_s

    def start(self, consumer: Any) -> None:
        rt = node_runtime(consumer.app)
        if rt.identity is None or not rt.settings.drp_machine:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ctxpool-drp-machine")
        super().start(consumer)

    def run(self, consumer: Any) -> None:
        """Hand one supervised tick to the step's thread; never raises or blocks."""
        executor = self._executor
        if executor is None:
            return
        if self._running is not None and not self._running.done():
            log.debug("DRP machine sync still running: this period's tick skipped")
            return
        try:
            self._running = executor.submit(super().run, consumer)
        except RuntimeError:  # shut down meanwhile
            return

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        machine = self._machine(rt)
        wrote = machine.assert_params(node_params(identity.name, identity.tags))
        if wrote:
            log.info(
                "node %s: set %s on its DRP machine %s",
                identity.name,
                ", ".join(sorted(wrote)),
                machine.ref,
            )

    def _machine(self, rt: NodeRuntime) -> NodeMachine:
        """Raises: DrpConfigError (no DRP URL or credentials)."""
        if self.machine is None:
            ref = rt.settings.drp_machine
            assert ref
            tokens = rt.drp_tokens
            timeout_s = min(tokens.config.timeout_s, SYNC_TIMEOUT_S)
            self.machine = NodeMachine(DrpRest(tokens, timeout_s), ref)
        return self.machine

    def stop(self, consumer: Any) -> None:
        """Stop the timer and wait for a running tick (bounded by the call timeouts)."""
        super().stop(consumer)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._running = None

    def shutdown(self, consumer: Any) -> None:
        """Stop, then clear the node's member name on its DRP machine; never raises."""
        self.stop(consumer)
        rt = node_runtime(consumer.app)
        identity = rt.identity
        if identity is None or not rt.settings.drp_machine:
            return
        try:
            machine = self._machine(rt)
            machine.rest.timeout_s = min(machine.rest.timeout_s, CLEAR_TIMEOUT_S)
            cleared = machine.clear_member(identity.name)
        except CtxpoolError as exc:
            log.warning("node %s: member name not cleared in DRP: %s", identity.name, exc)
            return
        except Exception:
            log.error("node %s: member name not cleared in DRP (bug?)", identity.name,
                      exc_info=True)  # fmt: skip
            return
        finally:
            rt.health.unregister(self.loop)
        if cleared:
            log.info(
                "node %s: cleared %s on its DRP machine %s",
                identity.name,
                ", ".join(cleared),
                machine.ref,
            )


__all__ = [
    "DrpMachineMissingError",
    "DrpMachineStep",
    "NodeMachine",
    "changed_params",
    "member_params_to_clear",
    "node_params",
]
