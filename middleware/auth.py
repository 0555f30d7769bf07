"""Sign-In with Ethereum (EIP-4361) and the API's JWTs.

The server issues a single-use nonce, stored with an expiry and the address it was issued for, and the
exact message to sign. Login checks the message's domain, URI, chain id, nonce, address and time window
against the server's own values (never the client's), verifies the signature, and consumes the nonce with
one conditional UPDATE, so two concurrent logins with one nonce cannot both succeed. Expired nonces are
deleted whenever a new one is issued: the table holds at most the nonces of the last TTL.
"""

from __future__ import annotations

import secrets
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import jwt
from eth_keys.exceptions import BadSignature
from eth_keys.exceptions import ValidationError as EthKeysValidationError
from eth_utils import is_address, to_checksum_address
from sqlalchemy import CursorResult, delete, update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import AuthNonce
from fedledger.config import Settings
from fedledger.crypto.eip712 import normalize_signature
from fedledger.crypto.errors import SignatureError
from middleware.errors import ApiError, unauthorized

with warnings.catch_warnings():
    # siwe's ABNF grammar redefines core rules; abnf warns about it at import time.
    warnings.simplefilter("ignore")
    import siwe

ROLE_PARTICIPANT = "participant"
ROLE_OPERATOR = "operator"
# Opens and closes rounds only (FEDLEDGER_ROUND_RUNNER_ADDRESSES): what the Flower server's login needs.
ROLE_ROUND_RUNNER = "round_runner"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Challenge:
    nonce: str
    message: str
    issued_at: datetime
    expires_at: datetime


def accepted_domains(settings: Settings) -> tuple[str, ...]:
    """Domains a login message may name: the API's own, then the dashboards' (the page asking to sign)."""
    return (settings.siwe_domain, *settings.siwe_allowed_domains)


def issue_challenge(
    session: Session, settings: Settings, address: str, domain: str | None = None
) -> Challenge:
    if not is_address(address):
        raise ApiError(422, "invalid_address", f"{address!r} is not an Ethereum address")
    domain = domain or settings.siwe_domain
    if domain not in accepted_domains(settings):
        raise ApiError(
            422,
            "domain_not_accepted",
            f"domain {domain!r} is not one this server signs in for ({', '.join(accepted_domains(settings))}); "
            "an operator adds a dashboard's host:port to FEDLEDGER_SIWE_ALLOWED_DOMAINS",
        )
    address = to_checksum_address(address)
    now = utcnow()
    purge_expired_nonces(session, now)
    expires = now + timedelta(seconds=settings.nonce_ttl_seconds)
    nonce = secrets.token_hex(16)
    session.add(AuthNonce(nonce=nonce, address=address, issued_at=now, expires_at=expires))
    message = siwe.SiweMessage(
        domain=domain,
        address=address,
        statement=settings.siwe_statement,
        uri=settings.public_url,
        version="1",
        chain_id=settings.chain_id,
        nonce=nonce,
        issued_at=_iso(now),
        expiration_time=_iso(expires),
    ).prepare_message()
    return Challenge(nonce, message, now, expires)


def purge_expired_nonces(session: Session, now: datetime) -> int:
    """Delete nonces past their expiry (used or not): an expired nonce is refused anyway, and keeping it
    would let anyone grow the table without bound. Returns how many were deleted."""
    # A DML statement's result is a CursorResult (the one with rowcount); Session.execute is typed wider.
    result = cast(
        CursorResult[Any],
        session.execute(
            delete(AuthNonce).where(AuthNonce.expires_at <= now).execution_options(synchronize_session=False)
        ),
    )
    return int(result.rowcount or 0)


def verify_login(session: Session, settings: Settings, message: str, signature: str) -> str:
    """Return the checksummed address that signed a valid, fresh challenge, consuming its nonce."""
    try:
        parsed = siwe.SiweMessage.from_message(message)
    except Exception as exc:  # siwe raises several parser exception types
        raise unauthorized("malformed_message", f"not an EIP-4361 message: {exc}") from exc
    if parsed.domain not in accepted_domains(settings):
        raise unauthorized(
            "wrong_domain",
            f"message is for domain {parsed.domain!r}, this server accepts {', '.join(accepted_domains(settings))}",
        )
    if str(parsed.uri).rstrip("/") != settings.public_url.rstrip("/"):
        raise unauthorized(
            "wrong_uri", f"message URI {parsed.uri!r} is not this server's {settings.public_url!r}"
        )
    if parsed.chain_id != settings.chain_id:
        raise unauthorized(
            "wrong_chain",
            f"message is for chain {parsed.chain_id}, this server uses chain {settings.chain_id}",
        )
    try:
        signature = normalize_signature(signature)
    except SignatureError as exc:
        raise unauthorized("invalid_signature", f"signature is malformed: {exc}") from exc
    address = to_checksum_address(parsed.address)
    now = utcnow()
    record = session.get(AuthNonce, parsed.nonce)
    if record is None:
        raise unauthorized("unknown_nonce", "nonce was not issued by this server; request a new one")
    if record.used_at is not None:
        raise unauthorized("nonce_replayed", "nonce was already used; request a new one")
    if record.expires_at <= now:
        raise unauthorized("nonce_expired", "nonce expired; request a new one")
    if record.address != address:
        raise unauthorized(
            "nonce_address_mismatch",
            f"nonce was issued for another address; request a nonce for {address}",
        )
    try:
        parsed.verify(signature, domain=parsed.domain, nonce=record.nonce, timestamp=now)
    except siwe.ExpiredMessage as exc:
        raise unauthorized("message_expired", "the signed message has expired; sign in again") from exc
    except siwe.NotYetValidMessage as exc:
        raise unauthorized("message_not_yet_valid", "the signed message is not valid yet") from exc
    except siwe.InvalidSignature as exc:
        raise unauthorized("invalid_signature", "signature does not match the message and address") from exc
    except siwe.VerificationError as exc:
        raise unauthorized(
            "verification_failed", f"message verification failed: {type(exc).__name__}"
        ) from exc
    except (ValueError, BadSignature, EthKeysValidationError) as exc:
        # A well-formed signature no key can have produced (r or s zero or past the curve order).
        raise unauthorized("invalid_signature", f"no signer can be recovered: {exc}") from exc
    consumed = cast(
        CursorResult[Any],
        session.execute(
            update(AuthNonce)
            .where(
                AuthNonce.nonce == record.nonce,
                AuthNonce.address == address,
                AuthNonce.used_at.is_(None),
                AuthNonce.expires_at > now,
            )
            .values(used_at=now, used_by=address)
            .execution_options(synchronize_session=False)
        ),
    )
    if consumed.rowcount != 1:
        raise unauthorized("nonce_replayed", "nonce was already used; request a new one")
    return address


def roles_for(settings: Settings, address: str) -> list[str]:
    operators = {to_checksum_address(a) for a in settings.operator_addresses if is_address(a)}
    if address in operators:
        return [ROLE_PARTICIPANT, ROLE_OPERATOR]
    runners = {to_checksum_address(a) for a in settings.round_runner_addresses if is_address(a)}
    return [ROLE_PARTICIPANT, ROLE_ROUND_RUNNER] if address in runners else [ROLE_PARTICIPANT]


def issue_token(settings: Settings, address: str) -> tuple[str, datetime]:
    now = utcnow()
    expires = now + timedelta(seconds=settings.jwt_ttl_seconds)
    claims = {
        "sub": address,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "roles": roles_for(settings, address),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256"), expires


@dataclass(frozen=True)
class Principal:
    address: str
    roles: tuple[str, ...]

    @property
    def is_operator(self) -> bool:
        return ROLE_OPERATOR in self.roles

    @property
    def may_run_rounds(self) -> bool:
        return ROLE_OPERATOR in self.roles or ROLE_ROUND_RUNNER in self.roles


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("token_expired", "token expired; sign in again") from exc
    except jwt.InvalidAudienceError as exc:
        raise unauthorized("invalid_token", "token is for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise unauthorized("invalid_token", "token is from another issuer") from exc
    except jwt.PyJWTError as exc:
        raise unauthorized("invalid_token", f"token rejected: {exc}") from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not is_address(subject):
        raise unauthorized("invalid_token", "token subject is not an address")
    # Roles come from the server's current settings, not only the token, so removing an operator takes
    # effect at once.
    address = to_checksum_address(subject)
    roles = tuple(r for r in claims.get("roles", []) if r in roles_for(settings, address))
    return Principal(address, roles or (ROLE_PARTICIPANT,))
