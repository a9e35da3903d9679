"""Batch audits: checks, batch records (Lua), enqueue, reports, schedules.

A face only: importing it does no work and loads neither Celery's app nor docker-py.
"""
