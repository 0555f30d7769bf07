"""Typed errors of the organization client. Each one is something a user can act on, and says what to do.

Everything the client raises on purpose derives from :class:`ClientError`, so a program (or the CLI) can
catch one class, print the message, and exit without a traceback; bugs stay ordinary exceptions.

API errors keep the server's machine-readable ``code`` (``{"error": code, "detail": message}``) and map
onto subclasses by status and code:

============================  ======================================================================
class                         when
============================  ======================================================================
:class:`AuthenticationError`  401 (bad signature, expired nonce, invalid token...)
:class:`NotRegisteredError`   404/403 ``not_registered``: ``POST /v1/participants`` first
:class:`NotEnrolledError`     403 ``not_enrolled``: stake with ``ParticipantRegistry.enroll``
:class:`ParticipantBlockedError`  403 ``participant_suspended|slashed|exited``
:class:`ForbiddenError`       other 403 (e.g. ``operator_only``)
:class:`RoundClosedError`     409 ``round_not_open`` / ``round_deadline_passed``
:class:`ConflictError`        other 409 (``conflicting_update``, ``no_model``...)
:class:`NotFoundError`        other 404
:class:`InvalidRequestError`  400, 413, 422 (malformed envelope, wrong model version, too large...)
:class:`RateLimitedError`     429 after the retries ran out
:class:`ServerError`          5xx after the retries ran out
:class:`ApiUnreachableError`  network failure after the retries ran out (``status == 0``)
============================  ======================================================================

Besides the API's: :class:`ChainError` and its subclasses for the chain (RPC, reverts, funds, reward proofs),
:class:`RewardNotClaimableYetError` for a reward still in its dispute window, :class:`RewardsCancelledError`
for a round whose rewards were cancelled in it, and the local failures
(configuration, wallet, data, training, model verification).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fedledger.api.errors import (
    ApiError,
    ApiUnreachableError,
    AuthenticationError,
    ClientError,
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotEnrolledError,
    NotFoundError,
    NotRegisteredError,
    ParticipantBlockedError,
    RateLimitedError,
    RoundClosedError,
    ServerError,
    api_error,
)


class WalletError(ClientError):
    """The wallet cannot be loaded: no key configured, unreadable file, bad key, wrong keystore password."""

    code = "wallet"


class DataError(ClientError):
    """A local data set cannot be used (unreadable CSV, non-numeric cells, labels that are not integers)."""

    code = "data"


class TrainingError(ClientError):
    """Local training cannot run: the data does not fit the model, or the trainer produced bad weights."""

    code = "training"


class ModelVerificationError(ClientError):
    """A pulled model failed verification: hash, server signature, deployment, or the on-chain record.

    Never train on such a model: the server (or someone between it and you) sent weights the trusted
    signer did not sign, or that the chain does not record.
    """

    code = "model_verification"


class ChainError(ClientError):
    """The chain cannot be used: RPC unreachable, wrong chain id, deployments that do not match it."""

    code = "chain"


class TransactionFailedError(ChainError):
    """A transaction reverted; ``error`` names the contract's custom error when it is known."""

    code = "transaction_failed"

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class InsufficientFundsError(ChainError):
    """The wallet lacks the tokens for the stake (or the ether for gas)."""

    code = "insufficient_funds"


class RewardProofError(ChainError):
    """A reward's Merkle proof does not verify against the root posted on-chain: the claim would revert."""

    code = "invalid_reward_proof"


class RewardNotClaimableYetError(ClientError):
    """A reward is still in its round's dispute window: the chain pays it only from ``claimable_at`` on.

    Nothing is wrong with the reward: claim it again after that time. (During the window governance or a
    guardian may cancel the round's rewards; the window's length is the governed ``DisputeWindow``.)
    """

    code = "reward_not_claimable_yet"

    def __init__(self, round_id: int, claimable_at: int, seconds_left: int) -> None:
        when = datetime.fromtimestamp(claimable_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"round {round_id}'s reward is still in its dispute window: it becomes claimable at {when} "
            f"(in {seconds_left} s, {_duration(seconds_left)}); claim it again after that time"
        )
        self.round_id = round_id
        self.claimable_at = claimable_at
        self.seconds_left = seconds_left


class RewardsCancelledError(ClientError):
    """A round's rewards were cancelled on-chain during their dispute window: nothing of them can be claimed.

    Governance (the timelock) or a guardian cancels a round's rewards root when it should not pay (e.g. it
    was recorded with a stolen aggregator key); the contract then refuses every claim of the round, now and
    later. Retrying does not help; the operator (or the governance proposal that cancelled it) says why.
    """

    code = "rewards_cancelled"

    def __init__(self, round_id: int) -> None:
        super().__init__(
            f"round {round_id}'s rewards were cancelled in the dispute window (by governance or a guardian): "
            "nothing can be claimed for this round; ask the platform's operator or governance why"
        )
        self.round_id = round_id


def _duration(seconds: int) -> str:
    """``seconds`` as a person reads it: "about 2 d 3 h", "about 1 h 5 min", "about 4 min", "under a minute"."""
    if seconds < 60:
        return "under a minute"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"about {days} d {hours % 24} h"
    if hours:
        return f"about {hours} h {minutes % 60} min"
    return f"about {minutes} min"


class RoundTimeoutError(ClientError):
    """A round did not reach POSTED or FAILED before the wait's timeout."""

    code = "round_timeout"


class NoOpenRoundError(ClientError):
    """There is no round accepting updates right now."""

    code = "no_open_round"


# The API's errors live in fedledger.api.errors (the client package raises them); re-exported here so the
# SDK's callers catch every error of the organization client from one module.
__all__ = [
    "ApiError",
    "ApiUnreachableError",
    "AuthenticationError",
    "ChainError",
    "ClientError",
    "ConfigurationError",
    "ConflictError",
    "DataError",
    "ForbiddenError",
    "InsufficientFundsError",
    "InvalidRequestError",
    "ModelVerificationError",
    "NoOpenRoundError",
    "NotEnrolledError",
    "NotFoundError",
    "NotRegisteredError",
    "ParticipantBlockedError",
    "RateLimitedError",
    "RewardNotClaimableYetError",
    "RewardProofError",
    "RewardsCancelledError",
    "RoundClosedError",
    "RoundTimeoutError",
    "ServerError",
    "TrainingError",
    "TransactionFailedError",
    "WalletError",
    "api_error",
]
