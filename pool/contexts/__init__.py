"""Contexts: the desired-state store, the Docker engine adapter, the reconciler, sweeps and
the producer API. Import the modules you need; this package imports nothing."""
