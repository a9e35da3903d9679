"""``ctxpool up``: the one-command local stack (embedded Redis, the DRP simulator when no DRP
is configured, one node, the bridge, Flower, the metrics exporter) and ``ctxpool down``.

Modules, one job each: :mod:`~pool.up.redis` (the embedded Redis server),
:mod:`~pool.up.image` (the demo's busybox image, built locally), :mod:`~pool.up.procs`
(child processes: start, readiness, stop within a deadline), :mod:`~pool.up.flower`
(Flower's credentials), :mod:`~pool.up.summary` (the live one-screen summary) and
:mod:`~pool.up.stack` (what to start, in which order, and the ``up``/``down`` commands).
"""
