"""Celery task modules. Thin: each calls into ``pool``."""
