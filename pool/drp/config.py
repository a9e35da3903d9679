"""How to reach one DRP endpoint: URL, credentials, TLS. Validated once, secrets kept secret.

Credentials are either a token (``CTXPOOL_DRP_TOKEN``, sent as is) or a user and password
(``CTXPOOL_DRP_USERNAME``/``CTXPOOL_DRP_PASSWORD``, exchanged for a user token). Secrets are
:class:`~pydantic.SecretStr`: they show as ``**********`` in ``repr``, logs and validation
errors.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pool.drp.errors import DrpConfigError

if TYPE_CHECKING:  # the settings layer sits above this one: read it, never import it
    from pool.settings import Settings

log = logging.getLogger(__name__)

#: Lifetime asked for a user token (``GET /api/v3/users/<user>/token?ttl=``).
USER_TOKEN_TTL_S = 3600


class DrpConfig(BaseModel):
    """One DRP endpoint and how to authenticate to it.

    Raises (on construction):
        pydantic.ValidationError: a bad URL, no credentials, half a user/password pair, a
            token with whitespace inside, or a CA bundle that is not a file. Inputs are never
            quoted in the error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True
    timeout_s: float = Field(30.0, gt=0, le=600)
    user_token_ttl_s: int = Field(USER_TOKEN_TTL_S, ge=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be https://host:port (http:// for development only)")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry user info, a query or a fragment")
        return value.strip().rstrip("/")

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if not raw:
            return None
        if any(ch.isspace() or not ch.isprintable() for ch in raw):
            raise ValueError("must be one word (no spaces or control characters inside)")
        return SecretStr(raw)

    @field_validator("username", "ca_bundle")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> DrpConfig:
        has_password = self.password is not None and bool(self.password.get_secret_value())
        if self.username and not has_password:
            raise ValueError("a DRP username needs a password")
        if has_password and not self.username:
            raise ValueError("a DRP password needs a username")
        if self.token is None and not self.username:
            raise ValueError(
                "DRP credentials missing: set CTXPOOL_DRP_TOKEN, or CTXPOOL_DRP_USERNAME "
                "and CTXPOOL_DRP_PASSWORD"
            )
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> DrpConfig:
        """The DRP configuration of ``settings`` (``CTXPOOL_DRP_*``).

        Raises:
            DrpConfigError: the URL or credentials are missing or invalid; the message names
                the setting and never quotes a secret.
        """
        if not settings.drp_url:
            raise DrpConfigError("CTXPOOL_DRP_URL is not set: cannot call DRP")
        try:
            return cls(
                url=settings.drp_url,
                token=settings.drp_token,
                username=settings.drp_username,
                password=settings.drp_password,
                ca_bundle=settings.drp_ca_bundle,
                verify_tls=settings.drp_verify_tls,
            )
        except ValidationError as exc:
            raise DrpConfigError(f"invalid DRP settings: {describe_errors(exc)}") from None

    @property
    def renewable(self) -> bool:
        """Whether tokens come from a user and password (and can be fetched again)."""
        return self.token is None

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS for aiohttp: verified by default, against ``ca_bundle`` when set."""
        if self.plain_http:
            return True  # unused for http://
        if not self.verify_tls:
            log.warning("DRP TLS verification is off (CTXPOOL_DRP_VERIFY_TLS=false)")
            return False
        return ssl.create_default_context(cafile=self.ca_bundle)

    def requests_verify(self) -> bool | str:
        """TLS for requests: ``verify=`` (the CA bundle's path, or whether to verify)."""
        if self.verify_tls and self.ca_bundle:
            return self.ca_bundle
        return self.verify_tls


def describe_errors(exc: ValidationError) -> str:
    """``CTXPOOL_DRP_<FIELD>: <what is wrong>``, one per problem, without any input value."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        name = f"CTXPOOL_DRP_{field.upper()}: " if field else ""
        parts.append(name + str(err["msg"]).removeprefix("Value error, "))
    return "; ".join(parts)
