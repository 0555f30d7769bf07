#!/usr/bin/env python3
"""Verified encrypted update submissions per second through the real API.

    .venv/bin/python scripts/bench_submissions.py [--params 100000] [--rounds 20] [--workers 2] [--db sqlite|postgres]
        [--redis-port 6379]

Starts a Hardhat node (contracts deployed), the API under uvicorn (``--workers`` processes) on SQLite or the
local PostgreSQL, enrolls the 17 funded dev organizations on-chain, and then, round after round, has all
of them submit at once a 100K-parameter update sealed with X25519 + AES-256-GCM and signed with EIP-712.
Every submission takes the full path: JWT, registration and on-chain enrollment check, envelope header,
round state, signature recovery, decryption, shape validation, blob write, database row, audit entry,
broker notification. Envelopes are built before the clock starts (that is client work); the figure is
accepted submissions divided by the wall time of the submission bursts. During the bursts a separate
client polls ``/healthz`` every 10 ms; its latency percentiles show whether the event loop stays free.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

from client.wallet import Wallet  # noqa: E402
from fedledger.api.client import NO_RETRY, FedLedgerApi  # noqa: E402
from fedledger.api.errors import ApiError  # noqa: E402
from fedledger.chain.devnode import DevChain, free_port  # noqa: E402
from fedledger.chain.params import WAD  # noqa: E402
from fedledger.chain.tx import send_transaction  # noqa: E402
from fedledger.crypto.eip712 import sign_update  # noqa: E402
from fedledger.crypto.envelope import seal  # noqa: E402
from fedledger.devkeys import dev_private_key  # noqa: E402
from fedledger.payload import encode_update, encode_weights  # noqa: E402

ORGS = list(range(3, 20))
OPERATOR = 0


def submit(round_id: int, org: FedLedgerApi, envelope: bytes, signature: str) -> int:
    """202 for an accepted update, else the API's status (the benchmark counts, it does not stop)."""
    try:
        org.submit_update(round_id, envelope, signature)
    except ApiError as exc:
        return exc.status
    return 202


def signed_in(http: httpx.Client, index: int) -> FedLedgerApi:
    """Dev account ``index`` signed in over the shared connection pool; no retries: a refusal must show."""
    api = FedLedgerApi(http=http, wallet=Wallet(dev_private_key(index)), retry=NO_RETRY)
    api.login()
    return api


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp ... utime (11th) stime (12th), counted from the state.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class HealthProber:
    """Polls /healthz every 10 ms while ``running`` is set, from its own thread and connection."""

    def __init__(self, base_url: str) -> None:
        self.running = threading.Event()
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._http = httpx.Client(base_url=base_url, timeout=30)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.running.wait(timeout=0.1):
                continue
            start = time.perf_counter()
            self._http.get("/healthz").raise_for_status()
            self.latencies_ms.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis for the broker and rate limits")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedledger-bench-"))
    node = DevChain(port=free_port(), log_path=work / "chain.log")
    node.start()
    server = None
    schema = None
    try:
        deployments = node.deploy(work / "deployments.json")
        if args.db == "postgres":
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test").begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        else:
            db_url = f"sqlite:///{work / 'api.db'}"
        port = free_port()
        env = dict(
            os.environ,
            FEDLEDGER_DATA_DIR=str(work / "var"),
            FEDLEDGER_DATABASE_URL=db_url,
            FEDLEDGER_DEPLOYMENTS_FILE=str(work / "deployments.json"),
            FEDLEDGER_CHAIN_RPC_URL=node.rpc_url,
            FEDLEDGER_BROKER_URL=f"redis://127.0.0.1:{args.redis_port}/11",
            FEDLEDGER_REDIS_URL=f"redis://127.0.0.1:{args.redis_port}/11",
            FEDLEDGER_REDIS_NAMESPACE=f"bench-{uuid.uuid4().hex[:6]}",
            FEDLEDGER_SIWE_DOMAIN=f"127.0.0.1:{port}",
            FEDLEDGER_PUBLIC_URL=f"http://127.0.0.1:{port}",
            FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP="100000000",
            FEDLEDGER_RATE_LIMIT_PER_MINUTE_ADDRESS="100000000",
            FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP_NONCE="100000000",
            FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP_REGISTER="100000000",
            FEDLEDGER_OPERATOR_ADDRESSES=Account.from_key(dev_private_key(OPERATOR)).address,
            FEDLEDGER_MAX_UPDATE_BYTES=str(64 * 1024 * 1024),
        )
        # Migrate and create the server key once, before several workers race to.
        subprocess.run(
            [sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True, capture_output=True
        )
        with (work / "api.log").open("wb") as api_log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "middleware.app:app",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=api_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        for _ in range(600):  # up to 2 min on a busy machine
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        d = args.params
        model = {"w": np.zeros(d, np.float32)}
        operator = signed_in(http, OPERATOR)
        operator.upload_genesis(encode_weights(model))
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        registry, token = (
            deployments.contract(w3, "ParticipantRegistry"),
            deployments.contract(w3, "RewardToken"),
        )
        orgs = {}
        for index in ORGS:
            key = dev_private_key(index)
            send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), key)
            send_transaction(w3, registry.functions.enroll(100 * WAD), key)
            orgs[index] = signed_in(http, index)
            orgs[index].register(f"bench {index}")
        key_pem = operator.current_key().public_key_pem.encode()
        ledger = deployments.addresses["ContributionLedger"]
        rng = np.random.default_rng(0)
        burst_seconds = 0.0
        accepted = 0
        pool = ThreadPoolExecutor(len(ORGS))
        prober = HealthProber(f"http://127.0.0.1:{port}")
        api_cpu_seconds = 0.0
        payload_bytes = 0
        for r in range(args.rounds):
            round_ = operator.open_round(duration_seconds=3600, quorum=10**5)
            jobs = []
            for index in ORGS:
                address = Account.from_key(dev_private_key(index)).address
                envelope = seal(
                    encode_update({"w": rng.standard_normal(d, dtype=np.float32)}),
                    key_pem,
                    round_id=round_.id,
                    model_version=round_.model_version,
                    participant=address,
                    num_samples=100,
                )
                signature = sign_update(
                    dev_private_key(index),
                    chain_id=deployments.chain_id,
                    verifying_contract=ledger,
                    round_id=round_.id,
                    model_version=round_.model_version,
                    payload_hash=hashlib.sha256(envelope).digest(),
                    num_samples=100,
                )
                payload_bytes = len(envelope)
                jobs.append((orgs[index], envelope, signature))
            start = time.perf_counter()
            cpu_before = group_cpu_seconds(server.pid)
            prober.running.set()
            statuses = list(pool.map(lambda job, round_id=round_.id: submit(round_id, *job), jobs))
            prober.running.clear()
            burst_seconds += time.perf_counter() - start
            api_cpu_seconds += group_cpu_seconds(server.pid) - cpu_before
            accepted += statuses.count(202)
            if statuses.count(202) != len(jobs):
                raise SystemExit(f"round {r}: statuses {statuses}; see {work / 'api.log'}")
            # Between bursts the round is marked done directly, standing in for the worker's close.
            with sa.create_engine(db_url).begin() as conn:
                conn.exec_driver_sql(f"UPDATE rounds SET status = 'POSTED' WHERE id = {round_.id}")
        prober.stop()
        health = np.array(prober.latencies_ms)
        print(
            f"{accepted} verified encrypted submissions of {d:,} parameters ({payload_bytes / 1e6:.2f} MB each) "
            f"in {burst_seconds:.2f} s of bursts: {accepted / burst_seconds:,.0f} per second "
            f"({args.workers} uvicorn workers, {args.db}, {len(ORGS)} concurrent clients, {os.cpu_count()} cores)"
        )
        print(
            f"API CPU per accepted submission: {api_cpu_seconds / accepted * 1e3:.1f} ms (user + system, all "
            f"API processes): at most {(os.cpu_count() or 1) / (api_cpu_seconds / accepted):,.0f}/s on "
            f"{os.cpu_count()} otherwise idle cores"
        )
        print(
            f"/healthz during the bursts: {health.size} probes, p50 {np.percentile(health, 50):.1f} ms, "
            f"p99 {np.percentile(health, 99):.1f} ms, max {health.max():.1f} ms; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
    finally:
        if server is not None:
            import signal

            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        node.stop()
        if schema:
            with sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test").begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
