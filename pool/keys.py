"""Every Redis key ctxpool writes, in one place. All share ``Settings.key_prefix``.

Owners and lifetimes:
    ctx:<uuid>         hash, desired state. Written by the API/bridge; absent ones expire
                       (tombstone TTL) once a node has removed the container.
    status:<uuid>      hash, observed state (owner, applied generation, error). Same lifetime.
    owner:<uuid>       string, owning node. Set by CAS in a node; deleted when the context goes.
    lock:<uuid>        string, lease lock (PX TTL).
    dirty:<uuid>       string, "nudged while locked" flag; TTL = lock TTL.
    contexts           zset uuid -> last desired-state change (index for sweeps and the CLI).
    node:<name>        string JSON, membership record; TTL = membership TTL.
    nodes              zset name -> last heartbeat (listing stalled nodes; pruned after a day).
    owned:<name>       set of uuids the node owns and runs (its capacity); with owner:<uuid>, Lua.
    parked:<name>      set of uuids the node owns but parked in a permanent error (no capacity);
                       left when the owner re-claims it after a spec change, or disowns it.
    sweep-lease        string, lease of the pool-wide sweep (one node per period).
    epoch              string, random id created by the first resync after the store was empty
                       (first start, or Redis lost its data); deleted only with the data.
    resync-done        string, unix time of the last resync that completed within the current
                       epoch (the bridge writes it; nodes read it: a labelled container without
                       desired state after it belongs to a machine DRP no longer has).
    admin:<name>       string JSON, an operator's drain/quarantine order for a node (pool.admin).
                       Written by `ctxpool drain|quarantine`, deleted by `ctxpool undrain`
                       (or `unquarantine`); read by the node each check; a quarantine
                       with `--for` carries a PX TTL. Survives the node's restarts.
    images:<name>      hash image name -> JSON record of the archive a node loaded from DRP
                       (checksum, loaded image id and tags, time). Owned by that node.
    limit:<n>:tat:<k>  string, GCRA theoretical arrival time of bucket <k> of limit <n>; PX TTL
                       = how far it is ahead of now (+1 s).
    limit:<n>:slots:<k> zset holder -> lease expiry; TTL 2 x slot TTL, renewed by holders.
    limit:<n>:keys     zset bucket key -> last grant (listing); trimmed by the limiter.
    limit:<n>:stats    hash of counters (granted, throttled, deferred, stale, failed).
    limit:<n>:waiting  hash node -> "<held messages> <unix ms>", written by each node's gate.
    call:<task id>     string JSON, result of an integration call; TTL call_record_ttl_s.
    audit:<batch>      hash, an audit batch's record: check, version, params, tag, total,
                       counts by state, times. Created by the producer (Lua, idempotent), moved
                       by the nodes' item scripts; TTL audit_retention_s, renewed when the
                       batch completes. With it, same TTL:
    audit:<batch>:targets  hash item index -> target.
    audit:<batch>:state    hash item index -> running|pass|fail|error|timeout (absent: pending).
    audit:<batch>:running  zset item index -> unix time its current run started.
    audit:<batch>:run      hash item index -> token of its current run.
    audit:<batch>:results  hash item index -> JSON result (final items only).
    audits             zset batch -> creation time (listing); entries older than the retention
                       or whose record expired are trimmed by the audit sweep.
    audit-sweep-lease  string, lease of the pool-wide audit sweep (one node per period).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder bound to one prefix."""

    prefix: str = "ctxpool:"

    def ctx(self, uuid: str) -> str:
        return f"{self.prefix}ctx:{uuid}"

    def status(self, uuid: str) -> str:
        return f"{self.prefix}status:{uuid}"

    def owner(self, uuid: str) -> str:
        return f"{self.prefix}owner:{uuid}"

    def lock(self, uuid: str) -> str:
        return f"{self.prefix}lock:{uuid}"

    def dirty(self, uuid: str) -> str:
        return f"{self.prefix}dirty:{uuid}"

    @property
    def contexts(self) -> str:
        return f"{self.prefix}contexts"

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def owned(self, name: str) -> str:
        return f"{self.prefix}owned:{name}"

    def parked(self, name: str) -> str:
        return f"{self.prefix}parked:{name}"

    def node_admin(self, name: str) -> str:
        return f"{self.prefix}admin:{name}"

    def node_images(self, name: str) -> str:
        return f"{self.prefix}images:{name}"

    @property
    def sweep_lease(self) -> str:
        return f"{self.prefix}sweep-lease"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    @property
    def resync_done(self) -> str:
        return f"{self.prefix}resync-done"

    def limit_tat(self, limit: str, key: str) -> str:
        return f"{self.prefix}limit:{limit}:tat:{key}"

    def limit_slots(self, limit: str, key: str) -> str:
        return f"{self.prefix}limit:{limit}:slots:{key}"

    def limit_keys(self, limit: str) -> str:
        return f"{self.prefix}limit:{limit}:keys"

    def limit_stats(self, limit: str) -> str:
        return f"{self.prefix}limit:{limit}:stats"

    def limit_waiting(self, limit: str) -> str:
        return f"{self.prefix}limit:{limit}:waiting"

    def call(self, task_id: str) -> str:
        return f"{self.prefix}call:{task_id}"

    def audit(self, batch: str) -> str:
        return f"{self.prefix}audit:{batch}"

    def audit_part(self, batch: str, part: str) -> str:
        """``audit:<batch>:<part>``: targets, state, running, run, results."""
        return f"{self.prefix}audit:{batch}:{part}"

    @property
    def audits(self) -> str:
        return f"{self.prefix}audits"

    @property
    def audit_sweep_lease(self) -> str:
        return f"{self.prefix}audit-sweep-lease"
