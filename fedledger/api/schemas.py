"""The API's wire contract: every request and response body, as OpenAPI shows it.

One definition for both sides: the middleware's routes declare these as their ``response_model`` and
request bodies, and :class:`fedledger.api.client.FedLedgerApi` parses the answers into the same classes,
so a field renamed on the server is renamed for every caller (and strict mypy follows it there).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fedledger.chain.reader import RewardStatus
from fedledger.evidence import Evidence, Finding


class NonceRequest(BaseModel):
    """Ask for a sign-in challenge (``POST auth/nonce``)."""

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
    """A single-use EIP-4361 challenge for the wallet to sign."""

    nonce: str
    message: str = Field(description="The exact EIP-4361 message to sign with personal_sign")
    issued_at: datetime
    expires_at: datetime


class LoginRequest(BaseModel):
    """The signed challenge, exchanged for a JWT."""

    message: str = Field(max_length=4096)
    signature: str = Field(max_length=200, description="0x-hex EIP-191 signature of the message")


class TokenResponse(BaseModel):
    """A signed-in session: the JWT and what it grants."""

    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    address: str
    roles: list[str]


class RegisterRequest(BaseModel):
    """Register (or rename) the signed-in wallet's organization."""

    org_name: str = Field(min_length=1, max_length=200)
    encryption_key_id: str | None = Field(default=None, max_length=128)


class ParticipantOut(BaseModel):
    """An organization's registration and standing with the API."""

    address: str
    org_name: str
    encryption_key_id: str | None
    status: str
    reputation: float
    byzantine_count: int
    created_at: datetime
    last_seen_at: datetime | None


class ParticipantStatusOut(ParticipantOut):
    """The signed-in organization, with its on-chain enrollment and whether it may submit."""

    chain_status: str | None = Field(
        description="Status in ParticipantRegistry (none/active/suspended/slashed/exited)"
    )
    stake_wei: str | None
    may_submit: bool
    reason: str | None = Field(description="Why the participant may not submit, if it may not")


class ServerKeyOut(BaseModel):
    """A server encryption key (updates are sealed for the current one)."""

    key_id: str
    algorithm: str
    public_key_pem: str
    is_current: bool
    created_at: datetime
    retired_at: datetime | None


class ModelOut(BaseModel):
    """A model version's metadata and the model signer's signature over its weights."""

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
    """Open a round (operator); the governed defaults for what is omitted."""

    duration_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    quorum: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "Fewest updates the deadline's close aggregates (default: the governed quorum). It never closes "
            "the round early: that takes an update from every active organization (or every cohort member)."
        ),
    )
    cohort: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100_000,
        description=(
            "Wallet addresses of the organizations invited to this round (e.g. a Flower server's sample). "
            "Only they may submit, and the round closes early once every one of them has (and the quorum "
            "is met). Default: no cohort; every active organization may submit and is waited for."
        ),
    )


class RoundOut(BaseModel):
    """A round's public record."""

    id: int
    status: str
    model_version: int
    opened_at: datetime
    deadline: datetime
    quorum: int
    cohort: list[str] | None = None
    min_participants: int
    strategy: str
    submissions: int
    extensions: int
    closed_at: datetime | None
    failure_reason: str | None
    params: dict[str, Any]


class ReceiptOut(BaseModel):
    """The receipt of an accepted (or replayed) update submission."""

    receipt_id: str
    round_id: int
    participant: str
    payload_hash: str
    num_samples: int
    received_at: datetime
    replayed: bool = Field(description="True when this exact payload had already been accepted")


class AuditEntryOut(BaseModel):
    """One entry of the hash-chained audit log."""

    id: int
    created_at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str


class AuditVerification(BaseModel):
    """The audit log's hash chain recomputed and checked against the on-chain anchors."""

    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    anchors: int = 0  # audit heads anchored on-chain by posted rounds
    anchors_checked: int = 0  # of those, matched against the log's entries
    # Entries after the highest matched anchor: only the hash chain protects them (a writer of the database
    # can forge, rewrite or delete them undetected) until a later anchor covers them.
    unanchored_entries: int = 0
    first_unanchored_id: int | None = None


class HealthOut(BaseModel):
    """Liveness or readiness, with each dependency's check."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class RewardOut(BaseModel):
    """One reward of an account in a posted round, with the Merkle proof to claim it."""

    round_id: int
    amount_wei: str
    proof: list[str]
    claimed: bool | None = Field(description="Claimed on-chain; null while the chain is unreachable")
    claimable_at: datetime | None = Field(
        default=None,
        description=(
            "When the round's dispute window ends and claims are paid (UTC, the chain's block time); null while "
            "the chain is unreachable or records no rewards for the round"
        ),
    )
    status: RewardStatus | None = Field(
        default=None,
        description=(
            "What a claim sent now would meet: claimable; in_dispute_window (paid from claimable_at on, unless "
            "cancelled meanwhile); cancelled (governance or a guardian cancelled the round's rewards in their "
            "dispute window: never paid); claimed. Null while the chain is unreachable or records no rewards "
            "for the round"
        ),
    )


class RewardsPage(BaseModel):
    """One page of an account's rewards, oldest round first."""

    rewards: list[RewardOut]
    next_cursor: int | None = Field(
        description="Pass as ``cursor`` for the next page (the last round id of this one); null on the last page"
    )


# ------------------------------------------------------------------------------ the dashboard's reads


class TokenFiguresOut(BaseModel):
    """The token as the chain reports it now (wei as decimal strings: they exceed JSON's safe integers)."""

    total_supply: str
    total_staked: str
    treasury_balance: str
    active_participants: int
    symbol: str


class RoundBriefOut(BaseModel):
    """The latest round, as the overview shows it."""

    id: int
    status: str
    deadline: datetime
    quorum: int
    strategy: str


class OverviewOut(BaseModel):
    """The dashboard's headline numbers."""

    participants: int
    active_participants: int
    rounds_completed: int
    contributions: int
    posting_backlog: int = Field(description="Aggregated rounds waiting for their on-chain record")
    max_posting_backlog: int
    model_version: int | None
    current_round: RoundBriefOut | None
    token: TokenFiguresOut | None = Field(description="Null while the chain is unreachable")


class AggregationSummaryOut(BaseModel):
    """What a round's close did (counts, holdout figures, rewards, transactions)."""

    kept: int
    excluded: int
    rejected: int
    rolled_back: bool
    holdout_loss_before: float | None
    holdout_loss_after: float | None
    holdout_accuracy: float | None
    epsilon_spent: float | None
    total_reward_wei: str
    model_version: int | None
    tx_hashes: dict[str, Any]


class RoundStatsOut(BaseModel):
    """One round of the history, with its aggregation once closed."""

    id: int
    status: str
    strategy: str
    opened_at: datetime
    deadline: datetime
    model_version: int
    failure_reason: str | None
    extensions: int
    aggregation: AggregationSummaryOut | None = Field(
        description="What the round's close did; null before it"
    )
    epsilon_spent: float | None = Field(
        default=None,
        description="Under DP, the privacy accountant's epsilon after this round: its aggregation's, or the "
        "release charge of a secure round that failed after unmasking some groups; null when not charged",
    )


class EvidenceOut(BaseModel):
    """One piece of evidence a round found against an update."""

    code: Evidence = Field(description="The kind of evidence (conclusive kinds slash at once)")
    label: str = Field(description="The kind in words, for people")
    detail: str | None = Field(description="What was measured, e.g. the cosine to the server's reference")

    @classmethod
    def of(cls, finding: Finding) -> EvidenceOut:
        """The wire form of a stored finding."""
        return cls(code=finding.code, label=finding.code.label, detail=finding.detail)


class ContributionOut(BaseModel):
    """One organization's scored update in one round."""

    round_id: int
    participant: str
    quality: float
    timeliness: float
    honesty: float
    fitness: float
    kept: bool
    byzantine: bool
    reward_wei: str
    reputation_after: float
    evidence: list[EvidenceOut]
    excluded_reason: str | None = Field(description="Why the update is not in the aggregate; null when kept")


class SecAggGroupOut(BaseModel):
    """A member's secure-aggregation group: its members (checksummed, sorted), threshold and group id."""

    index: int
    members: list[str]
    threshold: int
    group_id: str


class SecAggOut(BaseModel):
    """A round's secure-aggregation state as one member sees it (``mode`` "clear": the rest is absent).

    ``adverts`` (shares and masked phases), ``bundles`` (masked phase: every box is sealed; each member opens
    its own) and ``masked`` (unmask phase: the survivors' signed headers) are the member's group's messages
    as their senders sent them (fedledger.secagg.wire JSON)."""

    round_id: int
    mode: str
    model_version: int | None = None
    group_size: int | None = None
    clip: float | None = None
    dimension: int | None = None
    phase: str | None = None
    phase_deadline: datetime | None = None
    seed_block: int | None = None
    seed_block_hash: str | None = None
    seed: str | None = None
    failure_reason: str | None = None
    chain_id: int | None = None
    verifying_contract: str | None = None
    joined: bool = False
    group: SecAggGroupOut | None = None
    adverts: list[dict[str, Any]] = Field(default_factory=list)
    bundles: list[dict[str, Any]] = Field(default_factory=list)
    masked: list[dict[str, Any]] = Field(default_factory=list)
    sent: list[str] = Field(default_factory=list)


class SecAggGroupReportOut(BaseModel):
    """One group of a secure round as everyone sees it: its size, threshold and outcome, never its mean."""

    index: int
    size: int = Field(description="Members drawn into the group")
    threshold: int = Field(description="Survivors needed to unmask its sum (a strict majority)")
    status: Literal["pending", "unmasked", "failed", "skipped"] = Field(
        description="pending until the round's close; unmasked: its sum was computed; failed: see the reason; "
        "skipped: the round ended before unmasking it (the reason is the round's)"
    )
    members: list[str] | None = Field(
        description="The group's wallets, once the round is closed (withheld while the protocol runs)"
    )
    survivors: int | None = Field(description="Members whose updates are in the unmasked sum")
    dropped: int | None = Field(description="Members of an unmasked group left out of its sum")
    failure_reason: str | None = Field(
        description="Why the group's sum was not unmasked or not used (skipped: why the round ended first)"
    )
    kept: bool | None = Field(description="Whether the round's rules let the group's sum into the aggregate")
    flagged: bool | None = Field(description="Whether the group's sum was flagged as Byzantine")
    reward_wei: str = Field(description="The group's members' rewards together (each is on chain)")


class SecAggGroupsOut(BaseModel):
    """A secure round's groups and their outcomes, public: what the chain and the round's public record
    show already (no group mean, no mean hash, no member's amount beyond its on-chain reward)."""

    round_id: int
    round_status: str
    group_size: int
    phase: str
    seed_block: int | None = Field(description="The block whose hash seeded the draw of the groups")
    seed_block_hash: str | None
    seed: str | None
    failure_reason: str | None = Field(description="Why the protocol ended before any group was drawn")
    left_out: int = Field(description="Joined members no group took (a reputation tier smaller than a group)")
    epsilon_spent: float | None = Field(
        description="Under DP, the privacy accountant's epsilon after this round (a failed round's too, when "
        "it had released noised group sums)"
    )
    charged_on_failure: bool = Field(
        description="The round failed after unmasking groups under DP and was charged for their release"
    )
    groups: list[SecAggGroupReportOut]


class SecAggJoinRequest(BaseModel):
    """The member's EIP-712 ``SecAggJoin(roundId, modelVersion)`` signature (0x hex)."""

    signature: str = Field(max_length=200)


class SecAggMaskedRequest(BaseModel):
    """Step 3: the signed header (wire JSON) and the masked vector's little-endian uint32 words, base64."""

    masked: dict[str, Any]
    vector: str


class SecAggAcceptedOut(BaseModel):
    """A protocol message stored, or found stored (``replayed``: the same message again, a no-op)."""

    round_id: int
    step: str
    sender: str
    replayed: bool
    receipt_id: str | None = None
