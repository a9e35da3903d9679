"""Flower's basic-auth credentials for ``ctxpool up``: from settings
(``CTXPOOL_FLOWER_USER``/``CTXPOOL_FLOWER_PASSWORD``), or generated once and kept (mode 0600)
in the state directory, so the same ones work on the next start."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pool.settings import Settings


@dataclass(frozen=True, slots=True)
class FlowerAuth:
    user: str
    password: str
    generated: bool

    @property
    def basic_auth(self) -> str:
        """Flower's ``--basic-auth`` value."""
        return f"{self.user}:{self.password}"


def flower_auth(settings: Settings) -> FlowerAuth:
    """The credentials Flower runs with (never logged; printed once for the user)."""
    if settings.flower_password is not None:
        return FlowerAuth(settings.flower_user, settings.flower_password.get_secret_value(), False)
    path = settings.state_dir / "flower-credentials.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return FlowerAuth(str(data["user"]), str(data["password"]), True)
    auth = FlowerAuth(settings.flower_user, secrets.token_urlsafe(18), True)
    _write_private(path, json.dumps({"user": auth.user, "password": auth.password}))
    return auth


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
