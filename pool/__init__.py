"""ctxpool's node side: the Celery app (``celery -A pool worker``), state store and engine."""

from __future__ import annotations

from pool.celery_app import CtxpoolCelery, create_app
from pool.node import install

app: CtxpoolCelery = create_app()
install(app)

__all__ = ["app"]
