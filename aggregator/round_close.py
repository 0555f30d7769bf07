"""Closing a round: decrypt, validate, aggregate, score, reputation, DP, holdout check, new model.

Shape of a close (each step a small function; the numeric ones live in this package's pure modules):

1. ``acquire``: one conditional UPDATE takes the round (OPEN, or CLOSING with an expired lease) and
   stamps a lease. Two workers can never both hold it.
2. ``load``: read the round, its updates, the model and the keys.
3. ``compute``: everything numeric, with no database transaction open.
4. ``commit``: one transaction writes the outcome, only if this worker still holds the lease.
Nothing is written between 1 and 4, so a worker killed anywhere in between leaves the round exactly
as it was, and the next tick (after the lease expires) closes it from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from aggregator import robust
from aggregator.dp import PrivacyAccountant, clip_rows, gaussian_noise_std
from aggregator.errors import AggregationError, PrivacyBudgetExceeded
from aggregator.reputation import ReputationConfig, detect_byzantine, update_reputation
from aggregator.rollback import activation_decision
from aggregator.scoring import (
    ScoringConfig,
    consensus_distances,
    fitness_scores,
    honesty_scores,
    quality_scores,
    reward_amounts,
    timeliness_scores,
)
from db.base import utcnow
from db.models import (
    Aggregation,
    Contribution,
    ModelVersion,
    Participant,
    Round,
    RoundStatus,
    Update,
    UpdateStatus,
)
from fedledger.chain.merkle import RewardTree
from fedledger.crypto.envelope import open_envelope
from fedledger.crypto.errors import CryptoError
from fedledger.domain import audit
from fedledger.domain import keys as key_service
from fedledger.domain import model_versions as model_service
from fedledger.domain.blobstore import BlobStore
from fedledger.models import evaluate
from fedledger.payload import UpdateFormatError, decode_update, decode_weights, encode_weights


@dataclass
class Inputs:
    round: Round
    updates: list[Update]
    participants: dict[int, Participant]
    weights: dict[str, np.ndarray]
    model: ModelVersion
    private_keys: dict[str, bytes]
    dp_rounds_spent: int


@dataclass
class ClientResult:
    update: Update
    valid: bool
    reason: str | None = None
    delta: np.ndarray | None = None


@dataclass
class Outcome:
    status: RoundStatus
    failure_reason: str | None = None
    extend_to: datetime | None = None
    new_weights: bytes | None = None
    activate: bool = False
    aggregation: dict[str, Any] = field(default_factory=dict)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (update id, reason)
    kept_ids: set[int] = field(default_factory=set)
    reputations: dict[int, float] = field(default_factory=dict)
    byzantine_ids: set[int] = field(default_factory=set)


def acquire(sessions: sessionmaker[Session], round_id: int, owner: str, lease_seconds: int) -> bool:
    now = utcnow()
    with sessions.begin() as session:
        taken = session.execute(
            update(Round)
            .where(
                Round.id == round_id,
                (Round.status == RoundStatus.open)
                | (
                    (Round.status == RoundStatus.closing)
                    & ((Round.lease_until.is_(None)) | (Round.lease_until < now))
                ),
            )
            .values(
                status=RoundStatus.closing,
                lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        return taken.rowcount == 1


def load(sessions: sessionmaker[Session], blobs: BlobStore, key_dir: Path, round_id: int) -> Inputs:
    with sessions() as session:
        round_ = session.get(Round, round_id)
        assert round_ is not None
        updates = list(session.scalars(select(Update).where(Update.round_id == round_id).order_by(Update.id)))
        participants = {
            p.id: p
            for p in session.scalars(
                select(Participant).where(Participant.id.in_([u.participant_id for u in updates]))
            )
        }
        model = session.get(ModelVersion, round_.model_version_id)
        assert model is not None
        dp_rounds = session.scalar(
            select(func.count()).select_from(Aggregation).where(Aggregation.dp_noise_std.is_not(None))
        )
        private = key_service.private_keys(session, key_dir)
        session.expunge_all()
    weights = decode_weights(blobs.get(model.weights_hash))
    return Inputs(round_, updates, participants, weights, model, private, int(dp_rounds or 0))


def _param(params: dict[str, Any], name: str) -> Any:
    value = params[name]
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _flatten(tensors: dict[str, np.ndarray], spec: dict[str, list[int]]) -> np.ndarray:
    return np.concatenate([tensors[name].reshape(-1) for name in spec]).astype(np.float32, copy=False)


def _unflatten(vector: np.ndarray, spec: dict[str, list[int]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in spec.items():
        size = int(np.prod(shape))
        out[name] = vector[offset : offset + size].reshape(shape)
        offset += size
    return out


def decrypt_all(inputs: Inputs, blobs: BlobStore) -> list[ClientResult]:
    spec = inputs.model.spec
    shapes = {name: tuple(dims) for name, dims in spec.items()}
    results = []
    for u in inputs.updates:
        try:
            header, plaintext = open_envelope(blobs.get(u.ciphertext_hash), inputs.private_keys)
            if (
                header.participant != inputs.participants[u.participant_id].address
                or header.round_id != u.round_id
            ):
                raise UpdateFormatError("envelope header does not match the recorded submission")
            results.append(ClientResult(u, True, delta=_flatten(decode_update(plaintext, shapes), spec)))
        except (CryptoError, UpdateFormatError, KeyError) as exc:
            results.append(ClientResult(u, False, reason=f"{type(exc).__name__}: {exc}"))
    return results


def required_clients(strategy: str, params: dict[str, Any], min_participants: int) -> int:
    """Valid updates a round needs: the governed minimum, and what the strategy's f demands (Krum family
    n >= 2f + 3, Bulyan n >= 4f + 3). A round short of it waits (deadline extension) rather than run the
    strategy with a smaller f than governance chose."""
    f = int(params.get("krum_f", 0))
    by_strategy = {"krum": 2 * f + 3, "multi_krum": 2 * f + 3, "bulyan": 4 * f + 3}.get(strategy, 1)
    return max(min_participants, by_strategy)


def strategy_kwargs(
    strategy: str, params: dict[str, Any], samples: np.ndarray, reputation: np.ndarray
) -> dict[str, Any]:
    """The strategy's parameters from the round's snapshot of the governed parameters."""
    if strategy == "fedavg":
        weighting = params["weighting"]
        # Fitness weighting uses the clients' standing fitness, their reputation (an EMA of fitness).
        return {"weights": robust.client_weights(weighting, samples, reputation)}
    if strategy == "trimmed_mean":
        return {"beta": float(params["trim_fraction"])}
    if strategy in ("krum", "bulyan"):
        return {"f": int(params["krum_f"])}
    if strategy == "multi_krum":
        return {"f": int(params["krum_f"]), "m": int(params["multi_krum_m"]) or None, "weights": samples}
    if strategy == "reputation":
        return {"reputation": reputation, "cap": float(params["reputation_influence_cap"])}
    return {}


def selected_clients(strategy: str, X: np.ndarray, kwargs: dict[str, Any]) -> np.ndarray:
    """Which clients the strategy let into the aggregate (all of them for coordinate-wise rules)."""
    n = X.shape[0]
    if strategy == "krum":
        return np.array([robust.select_krum(robust.pairwise_sq_distances(X), kwargs["f"])])
    if strategy == "multi_krum":
        m = kwargs["m"] or n - kwargs["f"]
        return robust.select_multikrum(robust.pairwise_sq_distances(X), kwargs["f"], m)
    if strategy == "bulyan":
        return robust.select_bulyan(robust.pairwise_sq_distances(X), kwargs["f"])
    return np.arange(n)


def compute(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
) -> Outcome:
    round_ = inputs.round
    params = round_.params
    timings: dict[str, float] = {}
    start = time.perf_counter()
    results = decrypt_all(inputs, blobs)
    timings["decrypt_ms"] = (time.perf_counter() - start) * 1e3
    valid = [r for r in results if r.valid]
    outcome = Outcome(status=RoundStatus.aggregated)
    outcome.rejected = [(r.update.id, r.reason or "invalid") for r in results if not r.valid]

    needed = required_clients(round_.strategy, params, round_.min_participants)
    if len(valid) < needed:
        if round_.extensions < int(params.get("max_round_extensions", 0)):
            return Outcome(
                RoundStatus.open,
                extend_to=now + timedelta(seconds=int(params["round_duration"])),
                failure_reason=f"only {len(valid)} valid updates of the {needed} needed; deadline extended",
            )
        return Outcome(
            RoundStatus.failed,
            failure_reason=f"only {len(valid)} valid updates of the {needed} needed, "
            f"after {round_.extensions} extensions",
            rejected=outcome.rejected,
        )

    X = np.stack([r.delta for r in valid])
    samples = np.array([r.update.num_samples for r in valid], dtype=np.float64)
    rep_before = np.array([inputs.participants[r.update.participant_id].reputation for r in valid])
    dp_noise = None
    accountant = None
    if params.get("dp_enabled"):
        accountant = PrivacyAccountant(
            float(params["dp_noise_multiplier"]),
            1.0,
            float(params["dp_delta"]),
            float(params["dp_epsilon_budget"]),
            inputs.dp_rounds_spent,
        )
        try:
            accountant = accountant.charge()
        except PrivacyBudgetExceeded as exc:
            return Outcome(RoundStatus.failed, failure_reason=str(exc), rejected=outcome.rejected)
        X, _ = clip_rows(X, float(params["dp_clip_norm"]))

    strategy = round_.strategy
    try:
        kwargs = strategy_kwargs(strategy, params, samples, rep_before)
        start = time.perf_counter()
        aggregate = robust.aggregate(strategy, X, **kwargs)
        timings["aggregate_ms"] = (time.perf_counter() - start) * 1e3
        chosen = selected_clients(strategy, X, kwargs)
    except AggregationError as exc:
        return Outcome(RoundStatus.failed, failure_reason=f"{strategy}: {exc}", rejected=outcome.rejected)
    consensus = aggregate.copy()
    if accountant is not None:
        dp_noise = gaussian_noise_std(
            float(params["dp_clip_norm"]), float(params["dp_noise_multiplier"]), X.shape[0]
        )
        aggregate = aggregate + rng.normal(0.0, dp_noise, size=aggregate.shape).astype(np.float32)

    spec = inputs.model.spec
    base = _flatten(inputs.weights, spec)
    X_eval, y_eval = holdout
    loss_before, _ = evaluate(inputs.weights, X_eval, y_eval)
    start = time.perf_counter()
    client_losses = [evaluate(_unflatten(base + r.delta, spec), X_eval, y_eval)[0] for r in valid]
    timings["score_ms"] = (time.perf_counter() - start) * 1e3
    config = ScoringConfig(
        weight_quality=float(params["weight_quality"]),
        weight_timeliness=float(params["weight_timeliness"]),
        weight_honesty=float(params["weight_honesty"]),
        reward_tiers=tuple((float(a), float(b)) for a, b in params["reward_tiers"]),
        reputation_multiplier_base=float(params["reputation_multiplier_base"]),
    )
    quality = quality_scores(loss_before, client_losses)
    timeliness = timeliness_scores(
        [r.update.submitted_at.timestamp() for r in valid],
        round_.opened_at.timestamp(),
        round_.deadline.timestamp(),
        config.timeliness_at_deadline,
    )
    honesty = honesty_scores(
        consensus_distances(X, consensus), tolerance=config.honesty_tolerance, cutoff=config.honesty_cutoff
    )
    fitness = fitness_scores(quality, timeliness, honesty, config)
    rep_config = ReputationConfig.from_params(params)
    byzantine = detect_byzantine(honesty, rep_config)
    rep_after = update_reputation(rep_before, fitness, byzantine, rep_config)
    rewards = reward_amounts(
        fitness,
        rep_after,
        int(_param(params, "base_reward")),
        int(_param(params, "round_reward_budget")),
        config,
    )
    rewards = [0 if b else a for a, b in zip(rewards, byzantine.tolist(), strict=True)]

    new_vector = base + aggregate
    new_weights = _unflatten(new_vector, spec)
    loss_after, accuracy = evaluate(new_weights, X_eval, y_eval)
    decision = activation_decision(loss_before, loss_after, float(params["rollback_threshold"]))
    outcome.new_weights = encode_weights(new_weights)
    outcome.activate = decision.activate

    addresses = [inputs.participants[r.update.participant_id].address for r in valid]
    payable = {a: amount for a, amount in zip(addresses, rewards, strict=True) if amount > 0}
    tree = RewardTree.build(round_.id, payable) if payable else None
    chosen_set = set(chosen.tolist())
    for i, r in enumerate(valid):
        kept = i in chosen_set and not byzantine[i]
        if kept:
            outcome.kept_ids.add(r.update.id)
        if byzantine[i]:
            outcome.byzantine_ids.add(r.update.participant_id)
        outcome.reputations[r.update.participant_id] = float(rep_after[i])
        outcome.contributions.append(
            {
                "update_id": r.update.id,
                "participant_id": r.update.participant_id,
                "quality": float(quality[i]),
                "timeliness": float(timeliness[i]),
                "honesty": float(honesty[i]),
                "fitness": float(fitness[i]),
                "kept": kept,
                "byzantine": bool(byzantine[i]),
                "reward_wei": str(rewards[i]),
                "merkle_proof": ["0x" + p.hex() for p in tree.proof(addresses[i])]
                if tree and rewards[i] > 0
                else [],
                "reputation_after": float(rep_after[i]),
            }
        )
    for r in results:
        if not r.valid:
            participant = inputs.participants[r.update.participant_id]
            outcome.byzantine_ids.add(participant.id)
            new_rep = float(
                update_reputation(
                    np.array([participant.reputation]), np.array([0.0]), np.array([True]), rep_config
                )[0]
            )
            outcome.reputations[participant.id] = new_rep
            outcome.contributions.append(
                {
                    "update_id": r.update.id,
                    "participant_id": participant.id,
                    "quality": 0.0,
                    "timeliness": 0.0,
                    "honesty": 0.0,
                    "fitness": 0.0,
                    "kept": False,
                    "byzantine": True,
                    "reward_wei": "0",
                    "merkle_proof": [],
                    "reputation_after": new_rep,
                }
            )
    outcome.aggregation = {
        "strategy": strategy,
        "params": {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)},
        "holdout_loss_before": loss_before,
        "holdout_loss_after": loss_after,
        "holdout_accuracy": accuracy,
        "rolled_back": not decision.activate,
        "dp_noise_std": dp_noise,
        "epsilon_spent": accountant.epsilon_spent if accountant else None,
        "rewards_root": "0x" + tree.root.hex() if tree else "0x" + "00" * 32,
        "total_reward_wei": str(sum(rewards)),
        "durations_ms": timings,
        "decision": decision.reason,
    }
    return outcome


@dataclass(frozen=True)
class Signing:
    key: str
    chain_id: int
    verifying_contract: str


def commit(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    round_id: int,
    owner: str,
    outcome: Outcome,
    signing: Signing,
) -> bool:
    """Write the outcome in one transaction, if this worker still holds the round. False if it lost it."""
    now = utcnow()
    with sessions.begin() as session:
        held = session.execute(
            update(Round)
            .where(Round.id == round_id, Round.status == RoundStatus.closing, Round.lease_owner == owner)
            .values(lease_until=now + timedelta(seconds=60))
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:
            return False
        round_ = session.get(Round, round_id)
        assert round_ is not None
        round_.lease_owner, round_.lease_until = None, None
        if outcome.status == RoundStatus.open:
            round_.status, round_.deadline = RoundStatus.open, outcome.extend_to
            round_.extensions += 1
            round_.failure_reason = outcome.failure_reason
            audit.append(
                session,
                "worker",
                "round.extend",
                str(round_id),
                {"deadline": round_.deadline.isoformat(), "reason": outcome.failure_reason},
            )
            return True
        for update_id, reason in outcome.rejected:
            u = session.get(Update, update_id)
            u.status, u.rejection_reason = UpdateStatus.rejected, reason
        if outcome.status == RoundStatus.failed:
            round_.status, round_.failure_reason, round_.closed_at = (
                RoundStatus.failed,
                outcome.failure_reason,
                now,
            )
            audit.append(session, "worker", "round.fail", str(round_id), {"reason": outcome.failure_reason})
            return True

        parent = session.get(ModelVersion, round_.model_version_id)
        version = model_service.store_version(
            session,
            blobs,
            outcome.new_weights or b"",
            signer_key=signing.key,
            chain_id=signing.chain_id,
            verifying_contract=signing.verifying_contract,
            parent=parent,
            metrics={
                "holdout_loss": outcome.aggregation["holdout_loss_after"],
                "holdout_accuracy": outcome.aggregation["holdout_accuracy"],
            },
            produced_by_round_id=round_id,
            activate=outcome.activate,
        )
        for c in outcome.contributions:
            u = session.get(Update, c["update_id"])
            if u.status != UpdateStatus.rejected:
                u.status = UpdateStatus.aggregated if c["kept"] else UpdateStatus.excluded
            session.add(Contribution(round_id=round_id, **c))
        addresses: dict[int, str] = {}
        for participant_id, reputation in outcome.reputations.items():
            p = session.get(Participant, participant_id)
            p.reputation = reputation
            addresses[participant_id] = p.address
            if participant_id in outcome.byzantine_ids:
                p.byzantine_count += 1
        a = outcome.aggregation
        session.add(
            Aggregation(
                round_id=round_id,
                strategy=a["strategy"],
                params=a["params"],
                kept=[addresses[c["participant_id"]] for c in outcome.contributions if c["kept"]],
                excluded=[addresses[c["participant_id"]] for c in outcome.contributions if not c["kept"]],
                rejected=[str(uid) for uid, _ in outcome.rejected],
                model_version_id=version.id,
                rolled_back=a["rolled_back"],
                holdout_loss_before=a["holdout_loss_before"],
                holdout_loss_after=a["holdout_loss_after"],
                holdout_accuracy=a["holdout_accuracy"],
                dp_noise_std=a["dp_noise_std"],
                epsilon_spent=a["epsilon_spent"],
                rewards_root=a["rewards_root"],
                total_reward_wei=a["total_reward_wei"],
                durations_ms=a["durations_ms"],
            )
        )
        round_.status, round_.closed_at = RoundStatus.aggregated, now
        audit.append(
            session,
            "worker",
            "round.aggregate",
            str(round_id),
            {
                "model_version": version.id,
                "activated": outcome.activate,
                "decision": a["decision"],
                "kept": len([c for c in outcome.contributions if c["kept"]]),
                "total_reward_wei": a["total_reward_wei"],
            },
        )
    return True


def close_round(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    key_dir: Path,
    round_id: int,
    owner: str,
    lease_seconds: int,
    holdout: tuple[np.ndarray, np.ndarray],
    signing: Signing,
    now: datetime | None = None,
) -> str:
    """Close ``round_id`` if this worker can take it. Returns what happened (for logs and tests)."""
    if not acquire(sessions, round_id, owner, lease_seconds):
        return "not-closable"
    inputs = load(sessions, blobs, key_dir, round_id)
    rng = np.random.default_rng(int.from_bytes(round_id.to_bytes(8, "big") + b"fedledger-dp", "big") % 2**63)
    outcome = compute(inputs, blobs, holdout, rng, now or utcnow())
    if not commit(sessions, blobs, round_id, owner, outcome, signing):
        return "lease-lost"
    return outcome.status.value
