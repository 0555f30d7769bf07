"""Time of the public groups report of a secure round (``GET /v1/rounds/{id}/secagg/groups``) by its size.

A closed secure round of ``n`` organizations in groups of 3 (every group unmasked and scored, one member of
every tenth group dropped out) is written to a fresh database; the route's function (the domain's
``groups_report`` and the response model) is then timed against it, the sizes interleaved after a warm-up,
with a session per request as the API opens one. Figures: median (min-max) milliseconds over ``--repeats``.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench_secagg_report.py --n 100 1000 10000 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from db.base import Base, utcnow
from db.models import (
    Aggregation,
    Contribution,
    ModelVersion,
    Participant,
    Round,
    RoundStatus,
    SecAggGroup,
    SecAggPhase,
    SecAggRound,
    Update,
)
from db.session import make_engine
from middleware.routes.secagg import groups

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def populate(sessions: sessionmaker[Session], round_id: int, n: int, first_participant: int) -> None:
    """A POSTED secure round of ``n`` members in groups of 3, with its groups, updates and contributions."""
    now = utcnow()
    with sessions.begin() as session:
        session.add(
            Round(
                id=round_id,
                status=RoundStatus.posted,
                model_version_id=1,
                opened_at=now - timedelta(hours=1),
                deadline=now,
                quorum=3,
                strategy="fltrust_guarded",
                closed_at=now,
            )
        )
        session.flush()  # no relationship orders the inserts: the round first
        session.add(
            SecAggRound(
                round_id=round_id,
                group_size=3,
                clip=1.0,
                dimension=650,
                phase=SecAggPhase.closed,
                phase_deadline=now,
                seed_block=1,
                seed_block_hash="0x" + "11" * 32,
                seed="0x" + "22" * 32,
                left_out=[],
            )
        )
        session.add(Aggregation(round_id=round_id, strategy="fltrust_guarded", total_reward_wei="0"))
        addresses = [f"0x{first_participant + i:040x}" for i in range(n)]
        for i, address in enumerate(addresses):
            session.add(Participant(id=first_participant + i, address=address, org_name=f"org {i}"))
        session.flush()
        for g, start in enumerate(range(0, n - n % 3, 3)):
            members = addresses[start : start + 3]
            survivors = members[:2] if g % 10 == 0 else members
            session.add(
                SecAggGroup(
                    round_id=round_id,
                    group_index=g,
                    members=members,
                    threshold=2,
                    group_id="0x" + f"{g:064x}",
                    survivors=survivors,
                    dropped=members[len(survivors) :],
                    mean_hash=f"{g:064x}",
                )
            )
            for address in survivors:
                pid = first_participant + addresses.index(address)
                update = Update(
                    round_id=round_id,
                    participant_id=pid,
                    ciphertext_hash=f"{pid:064x}",
                    key_id=None,
                    model_version_id=1,
                    num_samples=100,
                    metrics={},
                    signature="0x",
                    size_bytes=2600,
                    receipt_id=f"{round_id}-{pid}",
                )
                session.add(update)
                session.flush()
                session.add(
                    Contribution(
                        round_id=round_id,
                        participant_id=pid,
                        update_id=update.id,
                        quality=80.0,
                        timeliness=90.0,
                        honesty=85.0,
                        fitness=84.5,
                        kept=True,
                        byzantine=False,
                        reward_wei=str(10**20),
                        reputation_after=60.0,
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--database", default=PG, help="PostgreSQL URL (a fresh schema is made and dropped)")
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(args.database)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        engine = make_engine(f"{args.database}?options=-csearch_path%3D{schema}")
        Base.metadata.create_all(engine)
        sessions = sessionmaker(bind=engine, expire_on_commit=False)
        with sessions.begin() as session:
            session.add(ModelVersion(id=1, weights_hash="0" * 64, signature="0x", spec={"w": [650]}))
        offset = 1
        for k, n in enumerate(args.n):
            populate(sessions, k + 1, n, offset)
            offset += n
        times: dict[int, list[float]] = {n: [] for n in args.n}
        for repeat in range(args.repeats + 1):  # the first pass warms up
            for k, n in enumerate(args.n):
                start = time.perf_counter()
                with sessions() as session:
                    report = groups(k + 1, session)
                elapsed = (time.perf_counter() - start) * 1e3
                assert len(report.groups) == n // 3
                if repeat:
                    times[n].append(elapsed)
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        print(f"{'members':>8} {'groups':>7}  ms median (min-max) over {args.repeats}")
        for n in args.n:
            t = times[n]
            print(f"{n:>8} {n // 3:>7}  {statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})")
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
