#!/usr/bin/env python3
"""Where the API's CPU goes per accepted submission: CPU time by stage, then a cProfile of the path.

    .venv/bin/python scripts/profile_submission.py [--db sqlite|postgres] [--rounds 4] [--params 100000]
        [--redis-port 6379] [--enrollment-ttl 30] [--top 35] [--sort cumulative|tottime] [--dump FILE]

Builds the world the middleware tests build (a Hardhat node with the contracts deployed, the app from
``create_app`` with Redis rate limits and broker, a model of ``--params`` float32 parameters, the 17 funded
dev organizations enrolled on-chain, signed in and registered), then has every organization submit once per
round, ``--rounds`` rounds a pass, through the whole ASGI app (JWT, rate limits, enrollment, envelope
header, round, EIP-712 recovery, decryption, shapes, fsynced blob, row + audit entry, quorum check).
Envelopes and signatures are built before measuring (client work).

Everything runs on this one thread: requests go through httpx's ASGI transport and the thread pool the
route hands its blocking work to runs that work inline, so CPU-time clocks (``time.thread_time``: other
processes of a shared machine are not counted) see all of it. Not included: uvicorn's HTTP parsing, the
hops between the event loop and the pool's threads, and the PostgreSQL server's own CPU.

Passes: a warm-up; one without instruments (the app's CPU per submission); one with each stage's function
wrapped by a CPU timer (inclusive CPU per submission, cheap enough not to distort); one under cProfile with
a CPU clock (``--top 0`` skips it; its own overhead inflates Python-heavy code, so read it for where, not
how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio.to_thread  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402
from web3 import Web3  # noqa: E402

from fedledger.api import paths  # noqa: E402
from fedledger.chain.devnode import DevChain, free_port  # noqa: E402
from fedledger.chain.params import WAD  # noqa: E402
from fedledger.chain.tx import send_transaction  # noqa: E402
from fedledger.config import Settings  # noqa: E402
from fedledger.crypto.eip712 import sign_update  # noqa: E402
from fedledger.crypto.envelope import seal  # noqa: E402
from fedledger.devkeys import dev_private_key  # noqa: E402
from fedledger.domain.tasks import CeleryTaskQueue  # noqa: E402
from fedledger.payload import encode_update, encode_weights  # noqa: E402
from middleware.app import create_app  # noqa: E402

ORGS = list(range(3, 20))
OPERATOR = 0
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# The stages of the path, timed by wrappers that add up this thread's CPU time (inclusive: an indented row is
# part of the row above it). (label, where the callers look the function up, attribute name: the first of
# the |-separated names the code has, so that the script also profiles the code before a rename).
def _stage_targets() -> list[tuple[str, Any, str]]:
    from sqlalchemy.orm import Session, SessionTransaction

    import fedledger.domain.audit as audit
    import fedledger.domain.keys as keys
    import fedledger.domain.pipeline as pipeline
    import fedledger.domain.submissions as submissions
    import middleware.deps as deps
    from fedledger.chain.reader import ChainReader
    from fedledger.domain.blobstore import FilesystemBlobStore

    return [
        ("JWT decode", deps, "decode_token"),
        ("rate limits (2 Redis round trips)", deps, "_limit"),
        ("submissions.submit", submissions, "submit"),
        ("  verify", submissions, "verify"),
        ("    participant: row + chain enrollment", submissions, "_participant"),
        ("      ChainReader.enrollment (registry read)", ChainReader, "enrollment"),
        ("    envelope header", submissions, "split_envelope|parse_header"),
        ("    replay check (_existing)", submissions, "_existing"),
        ("    EIP-712 recovery", submissions, "recover_update_signer"),
        ("    server key file (keys.private_key)", keys, "private_key"),
        ("    decryption", submissions, "open_parts|open_envelope"),
        ("    model shapes (_shapes)", submissions, "_shapes"),
        ("    decode_update (shapes, finite)", submissions, "decode_update"),
        ("  record", submissions, "record"),
        ("    blob put (sha256 + write + fsync)", FilesystemBlobStore, "put"),
        ("    blob exists", FilesystemBlobStore, "exists"),
        ("    _insert (lock, row, audit, quorum)", submissions, "_insert"),
        ("      audit entry", audit, "write|append"),
        ("      early-close check", pipeline, "request_early_close"),
        ("    commit", SessionTransaction, "commit"),
        ("Session.execute (anywhere)", Session, "execute"),
        ("Session.close (anywhere)", Session, "close"),
    ]


class StageTimers:
    """Wraps each stage's function to add up CPU time and calls (one thread, so thread_time is exact)."""

    def __init__(self) -> None:
        self.targets = []
        for label, owner, names in _stage_targets():
            name = next((n for n in names.split("|") if hasattr(owner, n)), None)
            if name is not None:
                self.targets.append((label, owner, name))
        self.cpu = [0.0] * len(self.targets)
        self.calls = [0] * len(self.targets)
        self.on = [False]  # counted only while the submissions are sent (not the rounds' opening)
        for slot, (_, owner, name) in enumerate(self.targets):
            setattr(owner, name, self._wrap(getattr(owner, name), slot))

    def _wrap(self, func: Callable[..., Any], slot: int) -> Callable[..., Any]:
        cpu, calls, on, clock = self.cpu, self.calls, self.on, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not on[0]:
                return func(*args, **kwargs)
            start = clock()
            try:
                return func(*args, **kwargs)
            finally:
                cpu[slot] += clock() - start
                calls[slot] += 1

        return timed

    def report(self, n: int, app_cpu: float) -> None:
        print(f"{'stage (inclusive CPU time)':46} {'ms/sub':>7} {'calls/sub':>9}")
        print(f"{'whole app (ASGI, from the first byte in)':46} {app_cpu / n * 1e3:7.2f} {1:9.1f}")
        top = 0.0
        for slot, (label, _, _) in enumerate(self.targets):
            if not label.startswith(" ") and not label.startswith("Session."):
                top += self.cpu[slot]
            print(f"{label:46} {self.cpu[slot] / n * 1e3:7.2f} {self.calls[slot] / n:9.1f}")
        print(f"{'rest: framework, middleware, body, response':46} {(app_cpu - top) / n * 1e3:7.2f}")


def login(http: httpx.AsyncClient, index: int) -> Awaitable[dict[str, str]]:
    async def run() -> dict[str, str]:
        key = dev_private_key(index)
        address = Account.from_key(key).address
        challenge = (await http.post(paths.NONCE, json={"address": address})).json()
        signature = Account.sign_message(encode_defunct(text=challenge["message"]), key).signature.to_0x_hex()
        response = await http.post(
            paths.LOGIN, json={"message": challenge["message"], "signature": signature}
        )
        if response.status_code != 200:
            raise SystemExit(f"login of dev account {index} failed: {response.text}")
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return run()


class CpuTimedApp:
    """ASGI wrapper adding up this thread's CPU time inside the app (the client's side left out)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cpu = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await timed_app(self, scope, receive, send)


async def timed_app(wrapper: CpuTimedApp, scope: Any, receive: Any, send: Any) -> None:
    start = time.thread_time()
    try:
        await wrapper.app(scope, receive, send)
    finally:
        wrapper.cpu += time.thread_time() - start


def run_inline() -> None:
    """Make the thread pool run its work on the calling thread (one profiler sees everything)."""

    async def inline(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]


async def main_async(args: argparse.Namespace, work: Path, node: DevChain) -> None:
    deployments = node.deploy(work / "deployments.json")
    schema = None
    if args.db == "postgres":
        schema = f"prof_{uuid.uuid4().hex[:8]}"
        with sa.create_engine(PG_ADMIN_URL).begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        db_url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    else:
        db_url = f"sqlite:///{work / 'api.db'}"
    redis_url = f"redis://127.0.0.1:{args.redis_port}/11"
    settings = Settings(
        data_dir=work / "var",
        database_url=db_url,
        redis_url=redis_url,
        redis_namespace=f"prof-{uuid.uuid4().hex[:6]}",
        broker_url=redis_url,
        chain_rpc_url=node.rpc_url,
        deployments_file=work / "deployments.json",
        siwe_domain="testserver",
        public_url="http://testserver",
        operator_addresses=[Account.from_key(dev_private_key(OPERATOR)).address],
        max_update_bytes=64 * 1024 * 1024,
        rate_limit_per_minute_ip=10**8,
        rate_limit_per_minute_address=10**8,
        rate_limit_per_minute_ip_nonce=10**8,
        rate_limit_per_minute_ip_register=10**8,
    )
    app = create_app(settings, queue=CeleryTaskQueue(settings.resolved_broker_url))
    timed = CpuTimedApp(app)
    run_inline()
    try:
        async with app.router.lifespan_context(app):
            # 0 reads the registry on every submission, as in production, where an organization submits
            # once a round (minutes apart) and the cache's 30 s never answer.
            app.state.fl.chain().enrollment_ttl = args.enrollment_ttl
            transport = httpx.ASGITransport(app=timed, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", timeout=60
            ) as http:
                await measure(args, http, timed, deployments, db_url)
    finally:
        if schema:
            from db.session import engine_for

            engine_for(db_url).dispose()
            with sa.create_engine(PG_ADMIN_URL).begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


async def measure(
    args: argparse.Namespace, http: httpx.AsyncClient, timed: CpuTimedApp, deployments: Any, db_url: str
) -> None:
    d = args.params
    operator = await login(http, OPERATOR)
    response = await http.post(
        paths.MODELS, content=encode_weights({"w": np.zeros(d, np.float32)}), headers=operator
    )
    assert response.status_code == 201, response.text
    w3 = Web3(Web3.HTTPProvider(args.rpc_url))
    registry = deployments.contract(w3, "ParticipantRegistry")
    token = deployments.contract(w3, "RewardToken")
    tokens = {}
    for index in ORGS:
        key = dev_private_key(index)
        send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), key)
        send_transaction(w3, registry.functions.enroll(100 * WAD), key)
        tokens[index] = await login(http, index)
        (
            await http.post(paths.PARTICIPANTS, json={"org_name": f"prof {index}"}, headers=tokens[index])
        ).raise_for_status()
    key_pem = (await http.get(paths.CURRENT_KEY)).json()["public_key_pem"].encode()
    ledger = deployments.addresses["ContributionLedger"]
    rng = np.random.default_rng(0)
    engine = sa.create_engine(db_url)
    sizes: list[int] = []

    async def one_pass(
        profiler: cProfile.Profile | None = None, timers: StageTimers | None = None
    ) -> tuple[int, float]:
        accepted = 0
        cpu = 0.0
        for _ in range(args.rounds):
            round_ = (
                await http.post(
                    paths.ROUNDS, json={"duration_seconds": 3600, "quorum": 10**5}, headers=operator
                )
            ).json()
            jobs = []
            for index in ORGS:
                envelope = seal(
                    encode_update({"w": rng.standard_normal(d, dtype=np.float32)}),
                    key_pem,
                    round_id=round_["id"],
                    model_version=round_["model_version"],
                    participant=Account.from_key(dev_private_key(index)).address,
                    num_samples=100,
                )
                signature = sign_update(
                    dev_private_key(index),
                    chain_id=deployments.chain_id,
                    verifying_contract=ledger,
                    round_id=round_["id"],
                    model_version=round_["model_version"],
                    payload_hash=hashlib.sha256(envelope).digest(),
                    num_samples=100,
                )
                headers = {
                    **tokens[index],
                    "X-Update-Signature": signature,
                    "Content-Type": "application/octet-stream",
                }
                jobs.append((envelope, headers))
                sizes.append(len(envelope))
            url = paths.updates_path(round_["id"])
            before = timed.cpu
            if profiler is not None:
                profiler.enable()
            if timers is not None:
                timers.on[0] = True
            for envelope, headers in jobs:
                status = (await http.post(url, content=envelope, headers=headers)).status_code
                if status != 202:
                    raise SystemExit(f"submission refused with {status}")
                accepted += 1
            if profiler is not None:
                profiler.disable()
            if timers is not None:
                timers.on[0] = False
            cpu += timed.cpu - before
            with engine.begin() as conn:  # stands in for the worker's close, as the bench does
                conn.exec_driver_sql(f"UPDATE rounds SET status = 'POSTED' WHERE id = {round_['id']}")
        return accepted, cpu

    n, cpu = await one_pass()  # warm-up: caches, connections, first-call imports
    print(f"first pass (warm-up): {cpu / n * 1e3:.2f} ms per submission")
    n, cpu = await one_pass()
    print(
        f"{n} submissions of {d:,} parameters ({sizes[-1] / 1e6:.2f} MB each), {args.db}: "
        f"app CPU {cpu / n * 1e3:.2f} ms per submission (no profiler, no stage timers)\n"
    )
    timers = StageTimers()
    n, cpu = await one_pass(timers=timers)
    timers.report(n, cpu)
    if args.top:
        profiler = cProfile.Profile(time.thread_time)
        n, cpu = await one_pass(profiler)
        print(
            f"\ncProfile (CPU clock; its overhead inflates Python-heavy code the most): {cpu / n * 1e3:.2f} ms "
            "per submission under it"
        )
        stats = pstats.Stats(profiler)
        if args.dump:
            stats.dump_stats(args.dump)
        stats.sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per pass (17 submissions each)")
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("FEDLEDGER_TEST_REDIS_PORT", "6379"))
    )
    parser.add_argument(
        "--enrollment-ttl",
        type=float,
        default=30.0,
        help="seconds the API reuses an 'active' enrollment read (its default: 30; 0 reads the chain every time)",
    )
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--dump", help="write the raw pstats here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedledger-prof-"))
    node = DevChain(port=free_port(), log_path=work / "chain.log")
    node.start()
    args.rpc_url = node.rpc_url
    try:
        asyncio.run(main_async(args, work, node))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
