"""The ctxpool error tree. Third-party errors are converted at the boundary, raised ``from``."""

from __future__ import annotations


class CtxpoolError(Exception):
    """Root of every error ctxpool raises on purpose."""


class ConfigError(CtxpoolError):
    """Settings or a request are invalid; fixing them is up to the operator."""


class StoreError(CtxpoolError):
    """The Redis state store failed or is unreachable."""


class EngineError(CtxpoolError):
    """The Docker engine failed; usually transient (daemon restarting, timeout)."""


class EngineUnavailableError(EngineError):
    """The Docker engine cannot be reached at all."""


class PermanentContextError(EngineError):
    """The context cannot run as specified until its spec changes: it is recorded, parked
    (it holds no capacity) and not tried again before its spec changes."""


class PolicyViolationError(PermanentContextError):
    """The spec asks for something this node's policy forbids."""


class ImageNotAllowedError(PolicyViolationError):
    """The image matches none of ``CTXPOOL_ALLOWED_IMAGES``."""


class CapabilityNotAllowedError(PolicyViolationError):
    """A capability outside ``CTXPOOL_CAP_ALLOWLIST`` is requested."""


class MountNotAllowedError(PolicyViolationError):
    """``context/volumes`` asks for a mount outside ``CTXPOOL_ALLOWED_MOUNTS``."""


class PortNotAllowedError(PolicyViolationError):
    """``context/publish-ports`` asks for a host port outside ``CTXPOOL_ALLOWED_PORTS``."""


class ImageUnavailableError(PermanentContextError):
    """The image is absent on the engine and could not be loaded or pulled (no archive in
    DRP's file space, a checksum mismatch, a registry refusal)."""


class ArtifactUnavailableError(EngineError):
    """A file the node needs from DRP (drpcli, an image archive) cannot be fetched now: DRP
    is unreachable or failing. Transient: the next nudge or sweep tries again."""


class LockBusyError(CtxpoolError):
    """Another worker holds the lease of a context."""
