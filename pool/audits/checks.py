"""The check interface: what one audit item runs on a node, and the registry of checks.

A check is named and versioned and takes pydantic-validated parameters. It runs once per
target (a machine UUID, a BMC host, ``host:port``...) and returns a :class:`CheckResult`;
the batch machinery (:mod:`pool.audits.batch`, :mod:`pool.audits.runner`) records it. A check
whose external calls are bound by a global limit names it in :attr:`Check.limit`; its items
then pass the limit's gate (one bucket per :meth:`Check.limit_fields`) before they run.

Checks are found by :func:`load_checks`: the built-ins of :data:`BUILTIN_CHECKS` plus every
entry point of group ``ctxpool.checks`` (so that other packages can add checks)::

    [project.entry-points."ctxpool.checks"]
    my-check = "mypkg.checks:MyCheck"

An entry point names a :class:`Check` subclass (instantiated without arguments) or an instance.

Rules for a check's :meth:`Check.run`:

- a target that is out of compliance is ``fail``; a target that cannot be checked (refused,
  unreachable, bad reply) is ``error``; exceptions raised by ``run`` are recorded as ``error``
  too (never failing the batch);
- honour ``ctx.deadline`` (:meth:`CheckContext.remaining_s`): the runner records ``timeout``
  when it passes and moves on, whatever the check still does;
- raise :class:`~pool.limits.task.Deferred` for "try again later" (429, 5xx) on a limited
  check: the item goes back through its limit queue.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pool.errors import ConfigError
from pool.settings import Settings

if TYPE_CHECKING:  # producers never load docker-py or requests' session pool for this
    import requests

    from pool.contexts.engine import DockerEngine
    from pool.drp.rest import DrpRest

log = logging.getLogger(__name__)

#: Entry point group other packages register checks under.
ENTRY_POINT_GROUP = "ctxpool.checks"

Outcome = Literal["pass", "fail", "error", "timeout"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "error", "timeout")


class CheckResult(BaseModel):
    """The outcome of one check on one target."""

    model_config = ConfigDict(extra="forbid")

    result: Outcome
    summary: str = Field("", max_length=2000, description="One line for reports.")
    detail: dict[str, Any] = Field(default_factory=dict, description="JSON-able specifics.")


class NoParams(BaseModel):
    """Parameters of a check that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class CheckContext:
    """What a check gets on the node for one item.

    Clients are built on first use through the providers the node's runtime passes in, so a
    check that needs no Docker engine never loads docker-py.

    Attributes:
        settings: the node's settings.
        deadline: :func:`time.monotonic` time by which the check must have returned.
        node: the name of the node running the check.
        batch: the batch the item belongs to.
    """

    settings: Settings
    deadline: float
    node: str = ""
    batch: str = ""
    engine_provider: Callable[[], DockerEngine] | None = None
    drp_provider: Callable[[], DrpRest] | None = None
    session_provider: Callable[[], requests.Session] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def remaining_s(self) -> float:
        """Seconds left until :attr:`deadline` (0 when passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.deadline

    def _get(self, name: str, provider: Callable[[], Any] | None, what: str) -> Any:
        with self._lock:
            if name not in self._cache:
                if provider is None:
                    raise ConfigError(f"{what} is not available in this process")
                self._cache[name] = provider()
            return self._cache[name]

    @property
    def engine(self) -> DockerEngine:
        """The node's Docker engine adapter (built by the node runtime on first use).

        Raises:
            ConfigError: this process has no engine (not a node).
        """
        engine: DockerEngine = self._get("engine", self.engine_provider, "the Docker engine")
        return engine

    @property
    def drp(self) -> DrpRest:
        """A DRP REST client with the node's token source.

        Raises:
            ConfigError: DRP is not configured (``CTXPOOL_DRP_URL``) or its settings are invalid.
        """
        drp: DrpRest = self._get("drp", self.drp_provider, "DRP (CTXPOOL_DRP_URL)")
        return drp

    @property
    def session(self) -> requests.Session:
        """An HTTP session (requests) of this process."""
        if self.session_provider is None:
            import requests  # only checks that make HTTP calls load it

            self.session_provider = requests.Session
        session: requests.Session = self._get("session", self.session_provider, "HTTP")
        return session


class Check:
    """Base of every check. Subclasses set the class attributes and implement :meth:`run`.

    Attributes:
        name: the check's name (``ctxpool audit run NAME``); also its entry point's name.
        version: bumped when the check's meaning changes (kept with each batch).
        params_model: the pydantic model of its parameters.
        limit: the global limit its external calls are bound by (``None``: a local check).
        default_timeout_s: per-item timeout when the parameters name none.
        description: one line for ``ctxpool audit checks``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    params_model: ClassVar[type[BaseModel]] = NoParams
    limit: ClassVar[str | None] = None
    default_timeout_s: ClassVar[float] = 30.0
    description: ClassVar[str] = ""

    def parse_params(self, params: dict[str, Any] | BaseModel | None) -> BaseModel:
        """Validate raw parameters (a dict, e.g. from ``--param k=v``).

        Raises:
            pydantic.ValidationError: they do not fit :attr:`params_model`.
        """
        if isinstance(params, self.params_model):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        return self.params_model.model_validate(params or {})

    def limit_fields(self, target: str, params: BaseModel) -> dict[str, str]:
        """Fields for the limit's key template (``per {host}``); default ``{"target": ...}``
        plus ``host`` (the target itself)."""
        return {"target": target, "host": target}

    def timeout_s(self, params: BaseModel) -> float:
        """Per-item timeout in seconds: the parameters' ``timeout_s`` when they have one."""
        value = getattr(params, "timeout_s", None)
        return float(value) if isinstance(value, int | float) else self.default_timeout_s

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        """Check one target.

        Raises:
            Deferred: a limited check's call should be made again later (429/5xx).
            Exception: anything else is recorded as ``error``.
        """
        raise NotImplementedError


class NoopParams(BaseModel):
    """Parameters of :class:`NoopCheck`."""

    model_config = ConfigDict(extra="forbid")

    fail: str | None = Field(
        None, description="fnmatch pattern: targets matching it fail (e.g. 'bad-*')."
    )
    error: str | None = Field(None, description="fnmatch pattern: targets matching it error.")
    sleep_s: float = Field(0.0, ge=0, le=3600, description="Seconds each item takes.")
    timeout_s: float = Field(30.0, gt=0, le=86400)


class NoopCheck(Check):
    """Does nothing: passes, or fails/errors for targets matching a pattern (benchmarks, tests,
    and trying the machinery out)."""

    name = "noop"
    version = "1"
    params_model = NoopParams
    description = "pass (or fail/error for targets matching a pattern); for benchmarks and tests"

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, NoopParams)
        if params.sleep_s:
            time.sleep(min(params.sleep_s, ctx.remaining_s() + 1.0))
        if params.error and fnmatch.fnmatchcase(target, params.error):
            return CheckResult(result="error", summary=f"{target} matches {params.error}")
        if params.fail and fnmatch.fnmatchcase(target, params.fail):
            return CheckResult(result="fail", summary=f"{target} matches {params.fail}")
        return CheckResult(result="pass", summary="ok")


#: Checks shipped with ctxpool: name -> ``module:attribute`` (imported on first use, so that
#: listing them loads no client library). Entry points cannot shadow these names.
BUILTIN_CHECKS: dict[str, str] = {
    "noop": "pool.audits.checks:NoopCheck",
    "redfish-health": "pool.audits.builtin.redfish:RedfishHealthCheck",
    "drp-params": "pool.audits.builtin.drp_params:DrpParamsCheck",
    "tls-expiry": "pool.audits.builtin.tls:TlsExpiryCheck",
    "http": "pool.audits.builtin.http:HttpCheck",
    "container": "pool.audits.builtin.container:ContainerCheck",
}


def _load_ref(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _instance(name: str, obj: Any) -> Check:
    check = obj() if isinstance(obj, type) else obj
    if not isinstance(check, Check):
        raise ConfigError(f"check {name!r} is {type(check).__name__}, not a Check")
    if check.name != name:
        raise ConfigError(f"check registered as {name!r} calls itself {check.name!r}")
    return check


_cache: dict[str, Check] | None = None
_cache_lock = threading.Lock()


def load_checks(refresh: bool = False) -> dict[str, Check]:
    """Every check this process knows: built-ins plus entry points of ``ctxpool.checks``.

    A check that fails to import is logged and left out (one broken plugin must not stop
    the others). The result is cached per process (``refresh`` reloads it).

    Returns:
        name -> check instance, sorted by name.
    """
    global _cache
    with _cache_lock:
        if _cache is not None and not refresh:
            return dict(_cache)
        found: dict[str, Check] = {}
        for name, ref in BUILTIN_CHECKS.items():
            try:
                found[name] = _instance(name, _load_ref(ref))
            except Exception as exc:
                log.error("built-in check %s (%s) not loaded: %s", name, ref, exc, exc_info=True)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in BUILTIN_CHECKS:
                if ep.value != BUILTIN_CHECKS[ep.name]:
                    log.warning("entry point %s=%s shadows a built-in: ignored", ep.name, ep.value)
                continue
            if ep.name in found:
                log.warning("check %s registered twice: %s ignored", ep.name, ep.value)
                continue
            try:
                found[ep.name] = _instance(ep.name, ep.load())
            except Exception as exc:
                log.error("check %s (%s) not loaded: %s", ep.name, ep.value, exc, exc_info=True)
        _cache = dict(sorted(found.items()))
        return dict(_cache)


def get_check(name: str) -> Check:
    """The check called ``name``.

    Raises:
        ConfigError: no such check (the message lists the known ones).
    """
    checks = load_checks()
    if name not in checks:
        checks = load_checks(refresh=True)
    try:
        return checks[name]
    except KeyError:
        raise ConfigError(f"unknown check {name!r}; known: {', '.join(checks)}") from None
