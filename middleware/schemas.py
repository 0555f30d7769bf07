"""Request and response bodies (the API's contract, as OpenAPI shows it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class NonceRequest(BaseModel):
    address: str = Field(
        description="The wallet that will sign in (0x address)",
        examples=["0x90F79bf6EB2c4f870365E785982E1f101E93b906"],
    )
    domain: str | None = Field(
        default=None,
        max_length=255,
        description=(
            "host[:port] of the page that asks the wallet to sign (a dashboard's origin): FEDLEDGER_SIWE_DOMAIN "
            "or one of FEDLEDGER_SIWE_ALLOWED_DOMAINS. Omitted: FEDLEDGER_SIWE_DOMAIN (SDK and CLI logins)."
        ),
        examples=["127.0.0.1:8501"],
    )


class NonceResponse(BaseModel):
    nonce: str
    message: str = Field(description="The exact EIP-4361 message to sign with personal_sign")
    issued_at: datetime
    expires_at: datetime


class LoginRequest(BaseModel):
    message: str = Field(max_length=4096)
    signature: str = Field(max_length=200, description="0x-hex EIP-191 signature of the message")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    address: str
    roles: list[str]


class RegisterRequest(BaseModel):
    org_name: str = Field(min_length=1, max_length=200)
    encryption_key_id: str | None = Field(default=None, max_length=128)


class ParticipantOut(BaseModel):
    address: str
    org_name: str
    encryption_key_id: str | None
    status: str
    reputation: float
    byzantine_count: int
    created_at: datetime
    last_seen_at: datetime | None


class ParticipantStatusOut(ParticipantOut):
    chain_status: str | None = Field(
        description="Status in ParticipantRegistry (none/active/suspended/slashed/exited)"
    )
    stake_wei: str | None
    may_submit: bool
    reason: str | None = Field(description="Why the participant may not submit, if it may not")


class ServerKeyOut(BaseModel):
    key_id: str
    algorithm: str
    public_key_pem: str
    is_current: bool
    created_at: datetime
    retired_at: datetime | None


class ModelOut(BaseModel):
    version: int
    parent: int | None
    weights_hash: str = Field(description="SHA-256 of the safetensors weights, hex")
    signature: str = Field(description="EIP-712 Model(version, modelHash) signature by the model signer")
    signer: str
    chain_id: int
    verifying_contract: str
    spec: dict[str, list[int]]
    status: str
    metrics: dict[str, Any]
    produced_by_round: int | None
    created_at: datetime
    input_contract: dict[str, Any] | None = Field(
        default=None,
        description="What training data must look like for this model: features, value range, classes, "
        "preprocessing (the server's holdout task)",
    )


class OpenRoundRequest(BaseModel):
    duration_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    quorum: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "Fewest updates the deadline's close aggregates (default: the governed quorum). It never closes "
            "the round early: that takes an update from every active organization."
        ),
    )


class RoundOut(BaseModel):
    id: int
    status: str
    model_version: int
    opened_at: datetime
    deadline: datetime
    quorum: int
    min_participants: int
    strategy: str
    submissions: int
    extensions: int
    closed_at: datetime | None
    failure_reason: str | None
    params: dict[str, Any]


class ReceiptOut(BaseModel):
    receipt_id: str
    round_id: int
    participant: str
    payload_hash: str
    num_samples: int
    received_at: datetime
    replayed: bool = Field(description="True when this exact payload had already been accepted")


class AuditEntryOut(BaseModel):
    id: int
    created_at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    anchors: int = 0  # audit heads anchored on-chain by posted rounds
    anchors_checked: int = 0  # of those, matched against the log's entries


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
