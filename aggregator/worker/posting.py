"""Posting an aggregated round on-chain exactly once, in round order.

Order of the writes, each through the gateway's exactly-once ``send_once``:

1. Byzantine counts and slashes. A slash goes to whoever still holds stake (Active, Suspended, Slashed or
   Exited and unbonding): an organization cannot escape by requesting its exit before the round is posted.
2. The round record (model hash, rewards root, contributions, and the audit log's head as an anchor). The
   registry lets an exiting organization withdraw only once a round after its exit request is recorded, so
   the slashes of step 1 always land before its stake can leave.
   Before it, every organization in the round, whatever its status, is marked active for the round
   (``markActive``): its exit then waits until this round is recorded, so it cannot withdraw in between.
3. Activity: registered organizations idle past the governed activity timeout are suspended (the
   ``markActive`` of step 2 refreshed the evidence, ``lastActiveAt``, of the round's organizations).

Rounds are recorded on-chain in increasing id order (the ledger refuses anything else), so posting a round
first posts every earlier round still waiting. The round becomes POSTED only after all of its writes are mined.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from aggregator.round.params import RoundParams
from aggregator.scoring.reputation import slashing_decisions
from aggregator.worker.gateway import ChainGateway, ChainWriteError
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
from fedledger.chain.ledger import LedgerContribution
from fedledger.chain.reader import RegistryStatus
from fedledger.domain import audit
from fedledger.evidence import is_conclusive, parse_codes

SCORE_SCALE = 100  # the ledger stores scores x100 as uint16 (0..10000)


def _score(value: float) -> int:
    return max(0, min(10_000, round(value * SCORE_SCALE)))


def post_round(sessions: sessionmaker[Session], gateway: ChainGateway, round_id: int) -> str:
    """Post ``round_id`` and, first, every earlier aggregated round (the ledger records ids in order)."""
    with sessions() as session:
        earlier = list(
            session.scalars(
                select(Round.id)
                .where(Round.id < round_id, Round.status == RoundStatus.aggregated)
                .order_by(Round.id)
            )
        )
    for previous in earlier:
        _post_one(sessions, gateway, previous)
    return _post_one(sessions, gateway, round_id)


def _post_one(sessions: sessionmaker[Session], gateway: ChainGateway, round_id: int) -> str:
    with sessions() as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status != RoundStatus.aggregated:
            return "not-postable"
        aggregation = session.scalars(select(Aggregation).where(Aggregation.round_id == round_id)).one()
        model = session.get(ModelVersion, aggregation.model_version_id)
        if model is None or aggregation.rewards_root is None:
            raise ChainWriteError(
                f"round {round_id}: its aggregation names no model version or no rewards root"
            )
        rewards_root = aggregation.rewards_root
        rows = session.execute(
            select(Contribution, Participant, Update)
            .join(Participant, Participant.id == Contribution.participant_id)
            .join(Update, Update.id == Contribution.update_id)
            .where(Contribution.round_id == round_id)
            .order_by(Contribution.id)
        ).all()
        params = RoundParams.from_snapshot(round_.params)
        anchor_hash, anchor_count = audit.head(session)
    latest = gateway.latest_round_id()
    if latest > round_id and not gateway.is_recorded(round_id):
        raise ChainWriteError(
            f"the ledger already recorded round {latest}, above round {round_id}, which it never recorded: "
            "the database and the chain disagree (a database reset against a used chain?)"
        )
    tx_hashes: dict[str, str] = {}

    flagged = [p.address for c, p, _ in rows if c.byzantine]
    sent = gateway.record_byzantine(round_id, flagged)
    if sent:
        tx_hashes["byzantine"] = sent.tx_hash
    config = params.reputation
    onchain = [gateway.participant(p.address) for _, p, _ in rows]
    decisions = slashing_decisions(
        byzantine_counts=[p.byzantine_count for _, p, _ in rows],
        stakes=[o.stake for o in onchain],
        reputation=[p.reputation for _, p, _ in rows],
        config=config,
        conclusive=[c.byzantine and is_conclusive(parse_codes(c.evidence)) for c, _, _ in rows],
    )
    for decision in decisions:
        address = rows[decision.index][1].address
        # Whatever its status: an organization that requested its exit is slashed all the same.
        if decision.amount > 0:
            sent = gateway.slash(round_id, address, decision.amount, decision.reason.value)
            if sent:
                tx_hashes[f"slash:{address}"] = sent.tx_hash

    # Every contributor, whatever its status: an organization that asked to leave (Exited) or was slashed
    # during the round must still wait for this round's record before its stake can go.
    sent = gateway.mark_active(round_id, list(dict.fromkeys(p.address for _, p, _ in rows)))
    if sent:
        tx_hashes["active"] = sent.tx_hash

    sent = gateway.record_round(
        round_id,
        bytes.fromhex(model.weights_hash),
        bytes.fromhex(rewards_root[2:]),
        [
            LedgerContribution(
                p.address,
                bytes.fromhex(u.ciphertext_hash),
                _score(c.quality),
                _score(c.timeliness),
                _score(c.honesty),
                _score(c.fitness),
                int(c.reward_wei),
            )
            for c, p, u in rows
        ],
        bytes.fromhex(anchor_hash),
        anchor_count,
    )
    tx_hashes["record"] = sent.tx_hash if sent else "already-recorded"
    suspended = _apply_activity_timeout(sessions, gateway, round_id, int(config.activity_timeout))
    for key, value in suspended.items():
        tx_hashes[key] = value

    with sessions.begin() as session:
        round_ = session.get_one(Round, round_id)
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
            if gateway.participant(participant.address).status == RegistryStatus.slashed:
                participant.status = ParticipantStatus.slashed
        round_.status = RoundStatus.posted
        audit.append(
            session,
            "worker",
            "round.post",
            str(round_id),
            {
                "tx_hashes": tx_hashes,
                "slashed": [rows[d.index][1].address for d in decisions],
                "audit_anchor": {"head": anchor_hash, "count": anchor_count},
            },
        )
    return "posted"


def _apply_activity_timeout(
    sessions: sessionmaker[Session],
    gateway: ChainGateway,
    round_id: int,
    timeout: int,
) -> dict[str, str]:
    """Suspend registered organizations that the chain shows idle past the timeout (candidates from the
    database: no submission for that long).

    Every posted round refreshed its organizations' evidence first (``markActive``, before the record):
    ``suspendInactive`` is open to anyone, so evidence refreshed only when older than half the timeout let an
    outsider suspend an organization that had taken part in a round 3.6 days before (7-day timeout).
    """
    if timeout <= 0:
        return {}
    now = gateway.chain_time()
    sent_hashes: dict[str, str] = {}

    cutoff = utcnow() - timedelta(seconds=timeout)
    with sessions() as session:
        last_submission = (
            select(Update.participant_id, func.max(Update.submitted_at).label("last"))
            .group_by(Update.participant_id)
            .subquery()
        )
        candidates = list(
            session.scalars(
                select(Participant.address)
                .outerjoin(last_submission, last_submission.c.participant_id == Participant.id)
                .where(
                    Participant.status == ParticipantStatus.active,
                    Participant.created_at < cutoff,
                    (last_submission.c.last.is_(None)) | (last_submission.c.last < cutoff),
                )
            )
        )
    idle = []
    for address in candidates:
        record = gateway.participant(address)
        if record.status == RegistryStatus.active and record.last_active_at + timeout < now:
            idle.append(address)
    # The database status stays: the API admits only organizations the chain shows Active, and one suspended
    # for inactivity may resume on-chain by itself at any time.
    sent = gateway.suspend_inactive(round_id, idle)
    if sent:
        sent_hashes["inactive"] = sent.tx_hash
    return sent_hashes
