"""The secure defaults every container ctxpool starts gets: contexts and one-shot jobs alike.

One place decides them, so a context and an audit's container check cannot drift apart:
never privileged, every capability dropped, ``no-new-privileges``, memory/CPU/pids limits,
``init`` as PID 1, and json-file logs rotated as configured.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from docker.types import LogConfig

from pool.errors import ImageNotAllowedError
from pool.settings import Settings


def check_image_allowed(image: str, settings: Settings) -> None:
    """Refuse an image outside ``CTXPOOL_ALLOWED_IMAGES`` (glob patterns).

    Raises:
        ImageNotAllowedError: the image matches no ``allowed_images`` pattern.
    """
    if not any(fnmatch.fnmatchcase(image, pat) for pat in settings.allowed_images):
        raise ImageNotAllowedError(
            f"image {image!r} is not allowed (CTXPOOL_ALLOWED_IMAGES="
            f"{','.join(settings.allowed_images)})"
        )


def secure_defaults(
    settings: Settings,
    memory_mb: int | None = None,
    cpus: float | None = None,
    pids: int | None = None,
) -> dict[str, Any]:
    """docker-py ``containers.create`` keyword arguments of the secure defaults.

    Args:
        settings: the node's settings (defaults of the limits, log rotation).
        memory_mb: memory limit in MiB (default ``default_memory_mb``).
        cpus: CPUs (default ``default_cpus``).
        pids: process limit (default ``default_pids``).

    Returns:
        ``privileged``, ``cap_drop``, ``security_opt``, ``mem_limit``, ``nano_cpus``,
        ``pids_limit``, ``init`` and ``log_config``; callers add what differs (capabilities
        added back, restart policy, network, read-only root).
    """
    return {
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": f"{memory_mb or settings.default_memory_mb}m",
        "nano_cpus": int((cpus or settings.default_cpus) * 1e9),
        "pids_limit": pids or settings.default_pids,
        "init": True,
        "log_config": LogConfig(
            type="json-file",
            config={"max-size": settings.log_max_size, "max-file": str(settings.log_max_files)},
        ),
    }
