"""The node: Celery bootsteps (one per job) and the node runtime (engine, reconciler)."""
