"""ctxpool's node side and shared core. Importing it does no work.

The Celery app lives in :mod:`pool.celery` (``celery -A pool worker`` finds it there, by
Celery's own convention). One folder per concept:

- :mod:`pool.contexts` — desired-state store, Docker engine adapter, reconciler, sweeps, API;
- :mod:`pool.node` — the worker's bootsteps (identity, heartbeat, capacity gating, sweep
  schedule, limit gates) and the node runtime;
- :mod:`pool.limits` — limit specs, the Redis/memory limiter, gates, ``LimitedTask``, views;
- :mod:`pool.calls` — outbound calls as limited tasks (HTTP, DRP write-back);
- :mod:`pool.drp` — the one DRP client core (REST, token auth, params, errors);
- shared: ``settings``, ``errors``, ``keys``, ``queues``, ``membership``, ``runtime``,
  ``appconfig``, ``metrics``, ``cli``.
"""
