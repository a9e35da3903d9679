"""Global limits: specs, the Redis/memory limiter, admission gates, ``LimitedTask``, views."""
