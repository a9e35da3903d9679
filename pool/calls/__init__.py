"""Outbound calls as limited tasks: HTTP, and DRP write-back (through :mod:`pool.drp`)."""
