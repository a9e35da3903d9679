"""broker_bridge: watches DRP and writes desired context state through ``pool.contexts``.

Not built yet (see the bridge issue); it talks to DRP only and never imports Docker code.
"""
