"""broker_bridge: watches DRP (websocket events + REST) and writes desired context state
through ``pool.contexts``; talks to DRP only and never imports Docker code.

Modules: ``client`` (REST + websocket), ``models`` (DRP JSON), ``translate`` (objects ->
desired contexts, pure), ``coalesce``, ``bridge`` (intake, writes, resync), ``sink`` (the
pool side), ``drpsim`` (a DRP simulator for tests and benches), ``main`` (entry point).
"""
