"""The live summary of ``ctxpool up``: ``ctxpool status`` plus each machine's round trip, DRP
→ bridge → queue → node → container → agent → back to DRP."""

from __future__ import annotations

import logging
from typing import Any

import requests

from pool.appconfig import create_app
from pool.contexts.models import RunState
from pool.contexts.store import StateStore
from pool.drp.params import AGENT_SEEN_PARAM, OWNER_PARAMS, TAG_PARAMS, UNPLACED
from pool.errors import CtxpoolError
from pool.limits.limiter import RedisLimiter
from pool.queuestats import OldestAge
from pool.settings import Settings
from pool.status import collect_status, render_status
from pool.textfmt import table

log = logging.getLogger(__name__)

#: Machines listed at most (the rest are counted).
MAX_ROWS = 20


def _first(params: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((params[n] for n in names if params.get(n) not in (None, "")), None)


class Summary:
    """Renders one screen from the store, the broker and DRP."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        store: StateStore,
        drp_url: str | None,
        token: str | None,
    ) -> None:
        # the stack's Redis (embedded or configured) is both the store and the broker
        self.settings = settings.model_copy(
            update={"redis_url": redis_url, "broker_url": redis_url}
        )
        self.store = store
        self.limiter = RedisLimiter.from_url(self.settings.redis_url, self.settings.key_prefix)
        self.app = create_app()
        self.app.use_settings(self.settings)
        self.oldest = OldestAge(self.settings.broker_url)
        self.drp_url = drp_url
        self.token = token
        self.session = requests.Session()

    def machines(self) -> list[dict[str, Any]] | None:
        """DRP's machines (``None`` when DRP cannot be read)."""
        if not self.drp_url:
            return None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            resp = self.session.get(f"{self.drp_url}/api/v3/machines", headers=headers, timeout=3)
            resp.raise_for_status()
            data = resp.json()
        except (requests.RequestException, ValueError) as exc:
            log.debug("summary: DRP machines not read: %s", exc)
            return None
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None

    def round_trips(self) -> str:
        machines = self.machines()
        if machines is None:
            return "MACHINES  (DRP not readable now)"
        wanted = [m for m in machines if m.get("Context")]
        states = {s.uuid: s for s in self.store.statuses([str(m.get("Uuid")) for m in wanted])}
        rows = []
        running = seen = 0
        for m in sorted(wanted, key=lambda m: str(m.get("Name", ""))):
            params = m.get("Params") or {}
            uuid = str(m.get("Uuid"))
            status = states.get(uuid)
            state = status.state.value if status and status.desired else "-"
            running += state == RunState.RUNNING.value
            agent = params.get(AGENT_SEEN_PARAM)
            seen += isinstance(agent, str)
            owner = _first(params, OWNER_PARAMS)
            rows.append(
                [
                    str(m.get("Name", "")),
                    str(_first(params, TAG_PARAMS) or "default"),
                    "-" if owner in (None, UNPLACED) else str(owner),
                    state,
                    agent if isinstance(agent, str) else "-",
                ]
            )
        head = (
            f"MACHINES ({len(wanted)}): {running} containers running, {seen} agents reported "
            "back to DRP"
        )
        body = table(["MACHINE", "TAG", "OWNER (DRP)", "CONTAINER", "AGENT SEEN"], rows[:MAX_ROWS])
        more = f"\n  ... and {len(rows) - MAX_ROWS} more" if len(rows) > MAX_ROWS else ""
        return f"{head}\n{body}{more}"

    def render(self) -> str:
        try:
            report = collect_status(
                self.store,
                self.settings.limits,
                self.limiter,
                self.app.runtime.queue_depth,
                oldest=self.oldest,
            )
            return f"{render_status(report)}\n\n{self.round_trips()}"
        except CtxpoolError as exc:
            return f"ctxpool up: state not readable now: {exc}"
