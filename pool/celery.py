"""The Celery app of a ctxpool node: ``celery -A pool worker -Q tag-ci``.

Celery finds ``pool.celery.app`` by its own convention. Importing this module builds the app
and registers the node's bootsteps (this is the one singleton ctxpool builds at import time);
its configuration is still read from the environment only on first use.
"""

from __future__ import annotations

from pool.appconfig import CtxpoolCelery, create_app
from pool.node.runtime import NodeRuntime
from pool.node.steps import install

app: CtxpoolCelery = create_app(NodeRuntime)
install(app)

__all__ = ["app"]
