"""Opening rounds with a snapshot of the governed parameters, and reading them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import Round, RoundStatus, Update
from fedledger.chain.params import ProtocolParams
from fedledger.domain import audit, secagg
from fedledger.domain import model_versions as models
from fedledger.domain.errors import Conflict, Invalid, NotFound

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
IN_PROGRESS = (RoundStatus.open, RoundStatus.closing)


@dataclass(frozen=True)
class ServerData:
    """The server's own labelled data (its holdout: half root data for the reference update, half
    validation data for quality and rollback) against the size the platform needs (see
    ``Settings.min_holdout_examples`` for why that size)."""

    source: str
    examples: int
    needed: int

    def check(self) -> None:
        """A round on too little server data would score and roll back on noise: refused, with both sizes."""
        if self.examples < self.needed:
            raise Conflict(
                "holdout_too_small",
                f"the server's holdout ({self.source}) has {self.examples} labelled examples and rounds need at "
                f"least {self.needed} (FEDLEDGER_MIN_HOLDOUT_EXAMPLES): half train the reference update, half "
                "score updates and decide rollbacks; give the server more labelled data (FEDLEDGER_HOLDOUT)",
            )


def in_progress(session: Session) -> Round | None:
    """The round that is open, closing or aggregated-but-unposted, if any (one at a time)."""
    return session.scalars(
        select(Round).where(Round.status.in_(IN_PROGRESS)).order_by(Round.id.desc())
    ).first()


def open_round(
    session: Session,
    params: ProtocolParams,
    actor: str,
    duration_seconds: int | None = None,
    quorum: int | None = None,
    max_posting_backlog: int | None = None,
    cohort: list[str] | None = None,
    server_data: ServerData | None = None,
    secagg_timing: secagg.Timing | None = None,
) -> Round:
    """Open a round on the active model. The governed parameters in force now are what its close uses,
    so a governance change mid-round never alters a round already under way. Refused while more rounds than
    the governed ``max_posting_backlog`` (or the operator's stricter setting) are aggregated but not yet
    recorded on-chain. With ``cohort`` (wallet addresses), only those organizations may submit and the round
    closes early once all of them have (fedledger.domain.pipeline); without, early only once every active
    organization has. With the governed ``secure_group_size`` >= 3 the round runs in the secure-aggregation
    mode (:mod:`fedledger.domain.secagg`, phases timed by ``secagg_timing``)."""
    if server_data is not None:
        server_data.check()
    busy = in_progress(session)
    if busy is not None:
        raise Conflict(
            "round_in_progress",
            f"round {busy.id} is {busy.status.value}; close it first (`fedledger rounds close {busy.id}`)",
        )
    # Governance bounds the backlog; an operator's setting may only be stricter.
    governed = params.integer("max_posting_backlog")
    max_posting_backlog = governed if max_posting_backlog is None else min(max_posting_backlog, governed)
    behind = posting_backlog(session)
    if behind > max_posting_backlog:
        raise Conflict(
            "posting_behind",
            f"{behind} aggregated rounds are not yet recorded on-chain (at most {max_posting_backlog} may "
            "wait): a post is being retried (emission cap used for this period, or the node is down); "
            "open the next round once posting has caught up",
        )
    model = models.require_active(session)
    secure_size = secagg.group_size_of(params)
    duration = duration_seconds or params.integer("round_duration")
    if duration <= 0:
        raise Invalid("invalid_duration", "duration must be positive")
    invited = _cohort(cohort, quorum or params.integer("quorum"))
    now = utcnow()
    # Who the round waits for before an early close: every organization not idle past the governed
    # activity timeout (the same timeout that suspends idle organizations on-chain).
    timeout = params.integer("activity_timeout")
    active_since = now - timedelta(seconds=timeout) if timeout > 0 else None
    snapshot: dict[str, object] = dict(params)
    snapshot["reward_tiers"] = [list(t) for t in params.reward_tiers]
    round_ = Round(
        status=RoundStatus.open,
        model_version_id=model.id,
        opened_at=now,
        deadline=now + timedelta(seconds=duration),
        quorum=quorum or params.integer("quorum"),
        active_since=active_since,
        cohort=invited,
        cohort_size=len(invited) if invited is not None else None,
        min_participants=params.integer("min_participants"),
        strategy=params.text("strategy"),
        # Token amounts exceed JSON's safe integers in some readers: keep them as strings.
        params={
            k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and v > 2**53 else v)
            for k, v in snapshot.items()
        },
    )
    session.add(round_)
    session.flush()
    if secure_size:
        secagg.start(session, round_, params, model, secagg_timing or secagg.Timing(300, 120))
    audit.append(
        session,
        actor,
        "round.open",
        str(round_.id),
        {
            "model_version": model.id,
            "deadline": round_.deadline.isoformat(),
            "quorum": round_.quorum,
            "strategy": round_.strategy,
            "cohort": invited,
            "secure_group_size": secure_size,
        },
    )
    return round_


def _cohort(cohort: list[str] | None, quorum: int) -> list[str] | None:
    """The invited wallets, lower-cased and sorted; refused if malformed, repeated or fewer than the quorum
    (such a round could only close at its deadline, and then fail)."""
    if cohort is None:
        return None
    invited = sorted({address.lower() for address in cohort})
    malformed = [a for a in invited if not _ADDRESS.fullmatch(a)]
    if malformed:
        raise Invalid(
            "invalid_cohort", f"cohort members must be 0x-prefixed 20-byte addresses: {malformed[:3]}"
        )
    if len(invited) != len(cohort):
        raise Invalid("invalid_cohort", "the cohort names a wallet more than once")
    if len(invited) < quorum:
        raise Invalid(
            "invalid_cohort",
            f"a cohort of {len(invited)} can never reach the round's quorum of {quorum}: invite more "
            "organizations or lower the quorum",
        )
    return invited


def get(session: Session, round_id: int) -> Round:
    """Round ``round_id``; :class:`NotFound` if it does not exist."""
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    return round_


def latest(session: Session) -> Round | None:
    """The most recently opened round, if any."""
    return session.scalars(select(Round).order_by(Round.id.desc())).first()


def submission_count(session: Session, round_id: int) -> int:
    """How many updates round ``round_id`` has accepted so far."""
    return int(
        session.scalar(select(func.count()).select_from(Update).where(Update.round_id == round_id)) or 0
    )


def posting_backlog(session: Session) -> int:
    """Rounds aggregated but not yet recorded on-chain (their rewards, slashes and activity wait)."""
    return int(
        session.scalar(select(func.count()).select_from(Round).where(Round.status == RoundStatus.aggregated))
        or 0
    )


def close_now(session: Session, round_id: int, actor: str) -> Round:
    """End an OPEN round now (operator): its deadline becomes now and no extension follows, so the close
    aggregates the updates it has, or fails the round if they are too few (a secure round: its current
    phase ends now; the close follows once its protocol is over). The caller sends the close
    after the commit (the beat sends it too, the deadline having passed)."""
    round_ = session.get(Round, round_id, with_for_update=True)
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    if round_.status != RoundStatus.open:
        raise Conflict(
            "round_not_open", f"round {round_id} is {round_.status.value}; only an OPEN round closes"
        )
    now = utcnow()
    round_.deadline = min(round_.deadline, now)
    # The snapshot of the governed parameters is what the close reads: no extension past this one.
    round_.params = {**round_.params, "max_round_extensions": round_.extensions}
    secure = secagg.state_of(session, round_id, lock=True)
    if secure is not None:
        # A secure round closes once its protocol is over: its current phase ends now, with whoever sent
        # (the later steps keep their own deadlines, or the groups could not be unmasked at all).
        secure.phase_deadline = min(secure.phase_deadline, now)
    audit.append(
        session,
        actor,
        "round.close",
        str(round_id),
        {"deadline": round_.deadline.isoformat(), "submissions": submission_count(session, round_id)},
    )
    return round_
