"""DRP objects -> desired context state. Pure functions: no I/O, no clocks.

A machine wants a container when its ``Context`` is non-empty and that context's ``Engine`` is
the engine this pool serves. Its tag comes from ``docker-context/tag`` (or
``context-broker/tag``), its owner hint from ``docker-context/owner`` (``docker-context``, the
default, means "not placed yet"). Params of the wrong type are a :class:`BadObject`: the bridge
logs and counts it and leaves the context as it was.

Also read here: which nodes a machine registers in DRP (``docker-context/member-name`` and
``docker-context/tags``, or their ``context-broker/`` spellings; :func:`registered_nodes`), and
what a broker applies to the members it creates (``broker/set-*``; :func:`member_fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker_bridge.models import Context, Machine
from pool.contexts.models import ContextSpec
from pool.contexts.mounts import split_specs
from pool.drp.params import (
    AGENT_META,
    BROKER_SET_CONTEXT_PARAM,
    BROKER_SET_PIPELINE_PARAM,
    BROKER_SET_WORKFLOW_PARAM,
    CHECKSUM_META,
    COUNT_PARAMS,
    DEFAULT_ENGINE,
    IMAGEPULL_META,
    MEMBER_NAME_PARAMS,
    MEMBER_PARAM,
    OWNER_PARAMS,
    PUBLISH_PORTS_PARAM,
    TAG_PARAMS,
    TAGS_PARAMS,
    UNPLACED,
    VOLUMES_PARAM,
)
from pool.errors import CtxpoolError
from pool.queues import DEFAULT_TAG
from pool.settings import validate_name


class BadObject(CtxpoolError):  # noqa: N818 - names the thing that is bad
    """A DRP object the bridge cannot use as it is (wrong param type, invalid name)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Wanted:
    """A machine's desired container, before the token and endpoints are added."""

    uuid: str
    context: str
    image: str
    tag: str
    owner: str | None  # the node DRP names, None when unplaced
    volumes: tuple[str, ...] = ()
    publish_ports: tuple[str, ...] = ()
    agent: bool = True
    image_pull: str | None = None
    image_checksum: str | None = None

    def spec(self, token: str, endpoints: Sequence[str]) -> ContextSpec:
        """The :class:`ContextSpec` the pool converges on.

        Raises:
            BadObject: the names do not make a valid spec.
        """
        try:
            return ContextSpec(
                uuid=self.uuid,
                context=self.context,
                image=self.image,
                tag=self.tag,
                token=token,
                endpoints=list(endpoints),
                volumes=list(self.volumes),
                publish_ports=list(self.publish_ports),
                agent=self.agent,
                image_pull=self.image_pull,
                image_checksum=self.image_checksum,
            )
        except ValueError as exc:
            raise BadObject(self.uuid, f"not a valid context spec: {exc}") from exc


def param(obj: Machine, names: Sequence[str]) -> Any:
    """The first of ``names`` set on ``obj`` (``None`` when none is)."""
    for name in names:
        if name in obj.params:
            return obj.params[name]
    return None


def str_param(obj: Machine, names: Sequence[str]) -> str | None:
    """A string param, ``None`` when unset or empty.

    Raises:
        BadObject: the param is set but not a string.
    """
    value = param(obj, names)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadObject(obj.uuid, f"param {names[0]} must be a string, got {type(value).__name__}")
    return value


def tag_of(obj: Machine, default: str = DEFAULT_TAG) -> str:
    """Which node set hosts ``obj``'s context.

    Raises:
        BadObject: the tag param is not a string or not a valid tag name.
    """
    tag = str_param(obj, TAG_PARAMS) or default
    try:
        return validate_name(tag, "tag")
    except ValueError as exc:
        raise BadObject(obj.uuid, str(exc)) from exc


def owner_of(obj: Machine) -> str | None:
    """The node DRP says runs ``obj``'s context, or ``None`` when unplaced."""
    owner = str_param(obj, OWNER_PARAMS)
    return None if owner in (None, UNPLACED) else owner


def count_of(obj: Machine) -> int | None:
    """``cluster/count`` of a cluster or broker (``None`` when unset).

    Raises:
        BadObject: not a non-negative integer (numeric strings are accepted).
    """
    value = param(obj, COUNT_PARAMS)
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadObject(obj.uuid, "param cluster/count must be an integer, got bool")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise BadObject(obj.uuid, f"param cluster/count must be an integer >= 0, got {value!r}")
    return value


def wanted(
    machine: Machine,
    contexts: Mapping[str, Context],
    engine: str = DEFAULT_ENGINE,
    default_tag: str = DEFAULT_TAG,
) -> Wanted | None:
    """The container ``machine`` wants, or ``None`` when it wants none from this pool.

    ``None`` covers: no ``Context``; a context that another engine runs; a context DRP does not
    know (yet). A context without an image is a :class:`BadObject`.

    Raises:
        BadObject: wrong param types, invalid tag, context without an image.
    """
    if not machine.context:
        return None
    ctx = contexts.get(machine.context)
    if ctx is None or ctx.engine != engine:
        return None
    if not ctx.image:
        raise BadObject(machine.uuid, f"context {ctx.name} has no Image")
    agent_mode = ctx.meta.get(AGENT_META, "inject").strip().lower()
    if agent_mode not in ("inject", "image"):
        raise BadObject(machine.uuid, f"context {ctx.name}: Meta {AGENT_META} must be inject|image")
    return Wanted(
        uuid=machine.uuid,
        context=machine.context,
        image=ctx.image,
        tag=tag_of(machine, default_tag),
        owner=owner_of(machine),
        volumes=spec_list(machine, VOLUMES_PARAM, ";"),
        publish_ports=spec_list(machine, PUBLISH_PORTS_PARAM, ";,"),
        agent=agent_mode == "inject",
        image_pull=ctx.meta.get(IMAGEPULL_META) or None,
        image_checksum=ctx.meta.get(CHECKSUM_META) or None,
    )


def spec_list(obj: Machine, name: str, seps: str) -> tuple[str, ...]:
    """A param holding specs separated by ``seps`` (a string, or a list of strings).

    Raises:
        BadObject: any other type.
    """
    try:
        return tuple(split_specs(obj.params.get(name), seps))
    except ValueError as exc:
        raise BadObject(obj.uuid, f"param {name}: {exc}") from exc


def str_list_param(obj: Machine, name: str) -> list[str] | None:
    """A param that is a list of strings, ``None`` when unset.

    Raises:
        BadObject: the param is set but not a list of strings.
    """
    value = obj.params.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadObject(obj.uuid, f"param {name} must be a list of strings")
    return value


def registration_of(machine: Machine) -> tuple[frozenset[str], frozenset[str]]:
    """The nodes ``machine`` registers in DRP (its member names) and the tags it carries there,
    each from both spellings (``docker-context/...`` and ``context-broker/...``).

    Returns:
        ``(member names, tags)``; no member names means the machine registers no node.

    Raises:
        BadObject: a member name that is not a string, tags that are not a list of strings.
    """
    names = set()
    for name in MEMBER_NAME_PARAMS:
        value = str_param(machine, (name,))
        if value is not None:
            names.add(value)
    if not names:
        return frozenset(), frozenset()
    tags: set[str] = set()
    for name in TAGS_PARAMS:
        tags.update(str_list_param(machine, name) or ())
    return frozenset(names), frozenset(tags)


def registered_nodes(
    machines: Iterable[Machine], bad: Callable[[BadObject], None]
) -> dict[str, frozenset[str]]:
    """Nodes registered in DRP: member name -> the tags its machine carries there (the union
    when several machines name the same node). A machine whose registration params have the
    wrong type is reported to ``bad`` and registers nothing."""
    out: dict[str, frozenset[str]] = {}
    for machine in machines:
        if not any(p in machine.params for p in MEMBER_NAME_PARAMS):
            continue
        try:
            names, tags = registration_of(machine)
        except BadObject as exc:
            bad(exc)
            continue
        for name in names:
            out[name] = out.get(name, frozenset()) | tags
    return out


@dataclass(frozen=True, slots=True)
class MemberFields:
    """What a broker applies to the machines it creates (``broker/set-*`` on the cluster)."""

    context: str  # broker/set-context, else the cluster's own Context ("" for none)
    pipeline: str | None  # broker/set-pipeline: the member's Pipeline
    workflow: str | None  # broker/set-workflow: the member's Workflow

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` (a new machine's JSON) with these fields set (DRP's keys)."""
        obj["Context"] = self.context
        if self.context:
            obj["Meta"] = {**obj.get("Meta", {}), "BaseContext": self.context}
        if self.pipeline:
            obj["Pipeline"] = self.pipeline
        if self.workflow:
            obj["Workflow"] = self.workflow
        return obj


def member_fields(cluster: Machine) -> MemberFields:
    """The ``broker/set-context``, ``broker/set-pipeline`` and ``broker/set-workflow`` of a
    cluster or resource broker (read from its params, profiles' included when aggregated).

    Raises:
        BadObject: one of them is set but not a string.
    """
    return MemberFields(
        context=str_param(cluster, (BROKER_SET_CONTEXT_PARAM,)) or cluster.context,
        pipeline=str_param(cluster, (BROKER_SET_PIPELINE_PARAM,)),
        workflow=str_param(cluster, (BROKER_SET_WORKFLOW_PARAM,)),
    )


#: Params whose change can change a machine's context (everything else is dropped early).
RELEVANT_PARAMS = frozenset(OWNER_PARAMS + TAG_PARAMS + (VOLUMES_PARAM, PUBLISH_PORTS_PARAM))
#: Params that register a node in DRP (the context broker's placement reads them).
REGISTRATION_PARAMS = frozenset(TAGS_PARAMS + MEMBER_NAME_PARAMS)
#: Params whose change an event must carry to the bridge (the rest is dropped early).
WATCHED_PARAMS = RELEVANT_PARAMS | REGISTRATION_PARAMS
#: Params the bridge keeps of a machine (listing and cache).
SLIM_PARAMS = WATCHED_PARAMS | {MEMBER_PARAM}


def relevant_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether an update (DRP's raw ``Original`` -> ``Object``) can change the machine's
    desired context or a node's registration. Works on the raw dicts: it is the bridge's hot
    path, before any parsing."""
    if before.get("Context") != after.get("Context"):
        return True
    if before.get("Profiles") != after.get("Profiles"):
        return True
    pb, pa = before.get("Params"), after.get("Params")
    if not isinstance(pb, dict) or not isinstance(pa, dict):
        return True
    return any(pb.get(p) != pa.get(p) for p in WATCHED_PARAMS)
