"""broker_bridge: watches DRP (websocket events + REST) and writes desired context state
through ``pool.contexts``; talks to DRP only, never imports Docker code, and never claims a
context (it names a preferred node; only nodes claim).

Modules, one job each: ``intake`` (parse and filter frames), ``writes`` (compare batches with
the store, write per machine in order), ``resync`` (list DRP, fix the store), ``clusters`` (the
context broker), ``supervise`` (loops survive any exception; their health), ``sink`` (the pool
side), ``client`` (REST + websocket), ``models`` (DRP JSON), ``translate`` (objects -> desired
contexts, pure), ``coalesce``, ``concurrency``, ``config``, ``bridge`` (wires them), ``drpsim``
(a DRP simulator for tests and benches), ``main`` (entry point).
"""
