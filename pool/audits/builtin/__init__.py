"""The checks ctxpool ships (one module each), registered in
:data:`pool.audits.checks.BUILTIN_CHECKS` and as entry points of ``ctxpool.checks``.

A face only: each check's module is imported when the registry loads it.
"""
