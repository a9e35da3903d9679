"""``tls-expiry``: days until the certificate of ``host:port`` expires, and whether its chain
validates (against the system CAs or a given CA bundle, host name included).

One verifying handshake; when verification fails, a second one without verification reads
the certificate anyway (its dates are still worth reporting). The target fails below
``min_days`` or, with ``require_valid_chain`` (the default), when the chain does not validate.
Calls count against the global limit ``http`` (one bucket per ``host[:port]``).
"""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field

from pool.audits.builtin.targets import parse_target
from pool.audits.checks import Check, CheckContext, CheckResult

DEFAULT_PORT = 443


class TlsParams(BaseModel):
    """Parameters of ``tls-expiry``."""

    model_config = ConfigDict(extra="forbid")

    min_days: float = Field(30.0, description="Fail when fewer days than this remain.")
    ca_bundle: str | None = Field(None, description="CA bundle (PEM) instead of the system CAs.")
    server_name: str | None = Field(None, description="SNI and name checked (default: host).")
    check_hostname: bool = Field(True, description="The certificate must name the host.")
    require_valid_chain: bool = Field(True, description="Fail when the chain does not validate.")
    timeout_s: float = Field(10.0, gt=0, le=300)


@dataclass(frozen=True, slots=True)
class TlsProbe:
    """What a handshake showed: the leaf certificate (DER) and the verification outcome."""

    cert_der: bytes
    chain_valid: bool
    verify_error: str | None
    tls_version: str | None


def handshake(
    host: str,
    port: int,
    server_name: str | None,
    ca_bundle: str | None,
    check_hostname: bool,
    timeout_s: float,
) -> TlsProbe:
    """Connect and shake hands; verify against ``ca_bundle`` (or the system CAs).

    Raises:
        OSError: the host cannot be reached, or the handshake fails for another reason
            than verification (no TLS there, protocol mismatch).
    """
    name = server_name or host
    verifying = ssl.create_default_context(cafile=ca_bundle)
    verifying.check_hostname = check_hostname
    try:
        return _shake(verifying, host, port, name, timeout_s, None)
    except ssl.SSLCertVerificationError as exc:
        error = exc.verify_message or exc.reason or str(exc)
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    return _shake(lax, host, port, name, timeout_s, str(error))


def _shake(
    context: ssl.SSLContext,
    host: str,
    port: int,
    name: str,
    timeout_s: float,
    verify_error: str | None,
) -> TlsProbe:
    with (
        socket.create_connection((host, port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        if not der:
            raise ssl.SSLError("the server sent no certificate")
        return TlsProbe(der, verify_error is None, verify_error, tls.version())


def cert_facts(der: bytes, now: datetime.datetime) -> dict[str, Any]:
    """Subject, issuer, validity and days left (negative: expired) of a DER certificate.

    Raises:
        ValueError: not a certificate.
    """
    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).total_seconds() / 86400
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": round(days_left, 2),
        "self_signed": cert.subject == cert.issuer,
    }


def evaluate(facts: dict[str, Any], probe: TlsProbe, params: TlsParams) -> CheckResult:
    """The verdict on a probed certificate (pure)."""
    detail = {
        **facts,
        "chain_valid": probe.chain_valid,
        "verify_error": probe.verify_error,
        "tls_version": probe.tls_version,
    }
    problems = []
    days = float(facts["days_left"])
    if days < 0:
        problems.append(f"expired {-days:.1f} days ago")
    elif days < params.min_days:
        problems.append(f"expires in {days:.1f} days (< {params.min_days:g})")
    if params.require_valid_chain and not probe.chain_valid:
        problems.append(f"chain invalid: {probe.verify_error}")
    if problems:
        return CheckResult(result="fail", summary="; ".join(problems), detail=detail)
    chain = "chain valid" if probe.chain_valid else f"chain invalid ({probe.verify_error})"
    return CheckResult(result="pass", summary=f"expires in {days:.1f} days, {chain}", detail=detail)


class TlsExpiryCheck(Check):
    """Days until a TLS certificate expires, and its chain's validity."""

    name = "tls-expiry"
    version = "1"
    params_model = TlsParams
    limit = "http"
    default_timeout_s = 10.0
    description = "days until the TLS certificate of host:port expires, chain validity"

    def limit_fields(self, target: str, params: BaseModel) -> dict[str, str]:
        """``host`` as the HTTP integration keys it (``host``, or ``host:port`` unless 443)."""
        try:
            where = parse_target(target)
        except ValueError:
            return {"target": target, "host": target, "hostname": target, "method": "TLS"}
        port = where.port if where.port != DEFAULT_PORT else None
        host = type(where)(where.host, port).authority()
        return {"target": target, "host": host, "hostname": where.host, "method": "TLS"}

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, TlsParams)
        try:
            where = parse_target(target)
        except ValueError as exc:
            return CheckResult(result="error", summary=str(exc))
        port = where.port or DEFAULT_PORT
        timeout_s = max(0.5, min(params.timeout_s, ctx.remaining_s()))
        try:
            probe = handshake(
                where.host,
                port,
                params.server_name,
                params.ca_bundle,
                params.check_hostname,
                timeout_s,
            )
            facts = cert_facts(probe.cert_der, datetime.datetime.now(datetime.UTC))
        except (OSError, ValueError) as exc:
            what = type(exc).__name__
            return CheckResult(result="error", summary=f"{where.authority()}: {what}: {exc}")
        return evaluate(facts, probe, params)
