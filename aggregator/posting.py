"""Posting an aggregated round on-chain exactly once: the round record with its rewards root, then the
slashes and Byzantine counts its scores call for. Every write goes through the gateway's exactly-once
``send_once``; the round becomes POSTED only after all of them are mined."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aggregator.gateway import ChainGateway
from aggregator.reputation import ReputationConfig, slashing_decisions
from db.base import utcnow
from db.models import (
    Aggregation,
    Contribution,
    ModelVersion,
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    Update,
)
from fedledger.domain import audit

SCORE_SCALE = 100  # the ledger stores scores x100 as uint16 (0..10000)


def _score(value: float) -> int:
    return max(0, min(10_000, round(value * SCORE_SCALE)))


def post_round(sessions: sessionmaker[Session], gateway: ChainGateway, round_id: int) -> str:
    with sessions() as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status != RoundStatus.aggregated:
            return "not-postable"
        aggregation = session.scalars(select(Aggregation).where(Aggregation.round_id == round_id)).one()
        model = session.get(ModelVersion, aggregation.model_version_id)
        rows = session.execute(
            select(Contribution, Participant, Update)
            .join(Participant, Participant.id == Contribution.participant_id)
            .join(Update, Update.id == Contribution.update_id)
            .where(Contribution.round_id == round_id)
            .order_by(Contribution.id)
        ).all()
        params = round_.params
    contributions = [
        (
            p.address,
            bytes.fromhex(u.ciphertext_hash),
            _score(c.quality),
            _score(c.timeliness),
            _score(c.honesty),
            _score(c.fitness),
            int(c.reward_wei),
        )
        for c, p, u in rows
    ]
    total = sum(int(c.reward_wei) for c, _, _ in rows)
    tx_hashes: dict[str, str] = {}
    sent = gateway.record_round(
        round_id,
        bytes.fromhex(model.weights_hash),
        bytes.fromhex(aggregation.rewards_root[2:]),
        total,
        contributions,
    )
    tx_hashes["record"] = sent.tx_hash if sent else "already-recorded"

    flagged = [p.address for c, p, _ in rows if c.byzantine]
    sent = gateway.record_byzantine(round_id, flagged)
    if sent:
        tx_hashes["byzantine"] = sent.tx_hash
    config = ReputationConfig.from_params(params)
    stakes = [gateway.stake_of(p.address) for _, p, _ in rows]
    decisions = slashing_decisions(
        byzantine_counts=[p.byzantine_count for _, p, _ in rows],
        stakes=stakes,
        config=config,
    )
    for decision in decisions:
        address = rows[decision.index][1].address
        if decision.amount > 0 and gateway.is_active(address):
            sent = gateway.slash(round_id, address, decision.amount, decision.reason.value)
            if sent:
                tx_hashes[f"slash:{address}"] = sent.tx_hash

    with sessions.begin() as session:
        round_ = session.get(Round, round_id)
        if round_.status != RoundStatus.aggregated:
            return "already-posted"
        aggregation = session.scalars(select(Aggregation).where(Aggregation.round_id == round_id)).one()
        aggregation.tx_hashes = tx_hashes
        aggregation.posted_at = utcnow()
        # The API refuses slashed participants from the database at once (its chain reads are cached briefly).
        for decision in decisions:
            participant = session.scalars(
                select(Participant).where(Participant.address == rows[decision.index][1].address)
            ).one()
            if not gateway.is_active(participant.address):
                participant.status = ParticipantStatus.slashed
        round_.status = RoundStatus.posted
        audit.append(
            session,
            "worker",
            "round.post",
            str(round_id),
            {"tx_hashes": tx_hashes, "slashed": [rows[d.index][1].address for d in decisions]},
        )
    return "posted"
