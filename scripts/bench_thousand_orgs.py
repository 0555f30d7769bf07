#!/usr/bin/env python3
"""1,000 organizations in one round, through the real API, worker and chain.

    .venv/bin/python scripts/bench_thousand_orgs.py [--orgs 1000] [--hidden 1333] [--api-workers 2]
        [--redis-port 6379] [--keep]

Starts a Hardhat node (contracts deployed), the API (uvicorn, ``--api-workers`` processes) and one worker
with its beat on PostgreSQL (a fresh schema of database ``test``) and Redis, then:

1. creates ``--orgs`` wallets, gives each gas (``hardhat_setBalance``) and the minimum stake in tokens
   (transfers from the funded dev accounts), and enrolls each on-chain (approve + enroll, its own key);
2. signs each in (SIWE) and registers it with the API;
3. opens one round with quorum = ``--orgs`` on a digits MLP of ~100K parameters (``--hidden 1333``);
4. has every organization submit at once (one connection each, asyncio): a real training delta
   (one of 20 digits partitions, trained with the platform's own trainer) plus a little noise of its own,
   sealed for the server's key and EIP-712-signed;
5. waits until the worker has closed the round and posted it on-chain.

Prints: accepted / refused submissions (nothing may be lost: the round must hold exactly the accepted ones),
latency percentiles of the burst, wall time of each phase, the round's close and post durations, peak
resident memory of the API and worker processes (VmHWM), and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402
from web3 import Web3  # noqa: E402

from fedledger.api import paths  # noqa: E402
from fedledger.chain.devnode import DevChain, free_port  # noqa: E402
from fedledger.crypto.eip712 import sign_update  # noqa: E402
from fedledger.crypto.envelope import seal  # noqa: E402
from fedledger.datasets import digits_split  # noqa: E402
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key  # noqa: E402
from fedledger.models import init_mlp, train  # noqa: E402
from fedledger.payload import encode_update, encode_weights  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
OPERATOR = 0
FUNDERS = list(range(FIRST_ORGANIZATION_INDEX, 20))
PARTITIONS = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def peak_rss_mb(root_pid: int) -> dict[int, float]:
    """Peak resident set (VmHWM) of every live process in ``root_pid``'s process group, in MB."""
    peaks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != root_pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[int(entry.name)] = int(line.split()[1]) / 1024
        except (OSError, ProcessLookupError):
            continue
    return peaks


class Chain:
    """Raw, locally signed transactions with managed nonces: thousands of them without a wallet library."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.chain_id = w3.eth.chain_id
        self.nonces: dict[str, int] = {}

    def send(self, key: str, call, gas: int) -> bytes:  # type: ignore[no-untyped-def]
        account = Account.from_key(key)
        nonce = self.nonces.get(account.address)
        if nonce is None:
            nonce = self.w3.eth.get_transaction_count(account.address)
        self.nonces[account.address] = nonce + 1
        tx = call.build_transaction(
            {
                "from": account.address,
                "nonce": nonce,
                "gas": gas,
                "maxFeePerGas": 50 * 10**9,
                "maxPriorityFeePerGas": 10**9,
                "chainId": self.chain_id,
            }
        )
        signed = account.sign_transaction(tx)
        return self.w3.eth.send_raw_transaction(signed.raw_transaction)

    def wait_all(self, hashes: list[bytes]) -> None:
        for tx_hash in hashes:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=300)
            if receipt["status"] != 1:
                raise SystemExit(f"transaction {tx_hash.hex()} reverted")


def honest_deltas(weights: dict[str, np.ndarray], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Real local training on ``count`` IID digits partitions with the platform's trainer."""
    X, y, _, _ = digits_split()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    deltas = []
    for part in np.array_split(order, count):
        local = train(
            weights,
            X[part],
            y[part],
            epochs=2,
            lr=0.1,
            batch=32,
            rng=np.random.default_rng(seed + len(deltas)),
        )
        deltas.append({k: (local[k] - weights[k]).astype(np.float32) for k in weights})
    return deltas


async def burst(base_url: str, jobs: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, float]]:
    """Every job at once, one connection each; (status, latency seconds) per job."""
    limits = httpx.Limits(max_connections=len(jobs), max_keepalive_connections=len(jobs))
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as http:

        async def one(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
            start = time.perf_counter()
            response = await http.post(url, content=body, headers=headers)
            return response.status_code, time.perf_counter() - start

        return list(await asyncio.gather(*(one(*job) for job in jobs)))


def main() -> None:  # noqa: C901 - one linear scenario, phase by phase
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=1333, help="MLP hidden units (1333: ~100K parameters)")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the round to post")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and the schema")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedledger-1000-"))
    node = DevChain(port=free_port(), log_path=work / "chain.log")
    schema = f"orgs_{uuid.uuid4().hex[:8]}"
    api = worker = None
    timings: dict[str, float] = {}
    try:
        log(f"work directory {work}; starting the chain")
        node.start()
        deployments = node.deploy(work / "deployments.json")
        with sa.create_engine(PG).begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        db_url = f"{PG}?options=-csearch_path%3D{schema}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")} | {
            "FEDLEDGER_DATA_DIR": str(work / "var"),
            "FEDLEDGER_DATABASE_URL": db_url,
            "FEDLEDGER_DEPLOYMENTS_FILE": str(work / "deployments.json"),
            "FEDLEDGER_CHAIN_RPC_URL": node.rpc_url,
            "FEDLEDGER_BROKER_URL": f"redis://127.0.0.1:{args.redis_port}/9",
            "FEDLEDGER_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/9",
            "FEDLEDGER_REDIS_NAMESPACE": f"orgs-{uuid.uuid4().hex[:6]}",
            "FEDLEDGER_SIWE_DOMAIN": f"127.0.0.1:{port}",
            "FEDLEDGER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP": str(10**9),
            "FEDLEDGER_RATE_LIMIT_PER_MINUTE_ADDRESS": str(10**9),
            # Every organization signs in and registers from this one host.
            "FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP_NONCE": str(10**9),
            "FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP_REGISTER": str(10**9),
            "FEDLEDGER_OPERATOR_ADDRESSES": Account.from_key(dev_private_key(OPERATOR)).address,
            "FEDLEDGER_MAX_UPDATE_BYTES": str(8 * 1024 * 1024),
            "OPENBLAS_NUM_THREADS": "1",
        }
        subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, check=True)
        with (work / "api.log").open("wb") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "middleware.app:app", "--port", str(port),
                 "--workers", str(args.api_workers), "--log-level", "warning", "--backlog", "4096"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        with (work / "worker.log").open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--loglevel", "INFO"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=base_url, timeout=120)
        for _ in range(600):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

        def login(key: str) -> dict[str, str]:
            address = Account.from_key(key).address
            challenge = http.post(paths.NONCE, json={"address": address})
            challenge.raise_for_status()
            message = challenge.json()["message"]
            signature = Account.sign_message(encode_defunct(text=message), key).signature.to_0x_hex()
            response = http.post(paths.LOGIN, json={"message": message, "signature": signature})
            response.raise_for_status()
            return {"Authorization": f"Bearer {response.json()['access_token']}"}

        operator = login(dev_private_key(OPERATOR))
        genesis = init_mlp(64, args.hidden, 10, np.random.default_rng(0))
        params = sum(int(v.size) for v in genesis.values())
        response = http.post(paths.MODELS, content=encode_weights(genesis), headers=operator)
        if response.status_code != 201:
            raise SystemExit(f"genesis model refused: {response.text}")

        # 1. wallets, gas, stake, enrollment
        start = time.perf_counter()
        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 300}))
        chain = Chain(w3)
        token = deployments.contract(w3, "RewardToken")
        registry = deployments.contract(w3, "ParticipantRegistry")
        stake = int(deployments.contract(w3, "ProtocolParameters").functions.getAll().call()[1])
        keys = [Account.from_key(hashlib.sha256(f"fedledger-1000-{i}".encode()).digest()).key.hex()
                for i in range(args.orgs)]  # fmt: skip
        addresses = [Account.from_key(k).address for k in keys]
        for address in addresses:
            w3.provider.make_request("hardhat_setBalance", [address, hex(10 * 10**18)])  # type: ignore[arg-type]
        hashes = [
            chain.send(
                dev_private_key(FUNDERS[i % len(FUNDERS)]), token.functions.transfer(a, stake), 250_000
            )
            for i, a in enumerate(addresses)
        ]
        chain.wait_all(hashes[-len(FUNDERS) :])
        hashes = [chain.send(k, token.functions.approve(registry.address, stake), 120_000) for k in keys]
        hashes += [chain.send(k, registry.functions.enroll(stake), 600_000) for k in keys]
        chain.wait_all(hashes)
        timings["enroll"] = time.perf_counter() - start
        log(f"{args.orgs} organizations enrolled on-chain in {timings['enroll']:.1f} s")

        # 2. sign-in and registration
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            tokens = list(pool.map(login, keys))

            def register(item: tuple[int, dict[str, str]]) -> None:
                http.post(
                    paths.PARTICIPANTS, json={"org_name": f"org {item[0]}"}, headers=item[1]
                ).raise_for_status()

            list(pool.map(register, enumerate(tokens)))
        timings["login"] = time.perf_counter() - start
        log(f"signed in and registered in {timings['login']:.1f} s")

        # 3. the round and the updates (client work: before the clock starts)
        round_ = http.post(
            paths.ROUNDS, json={"duration_seconds": 3600, "quorum": args.orgs}, headers=operator
        ).json()
        key_pem = http.get(paths.CURRENT_KEY).json()["public_key_pem"].encode()
        deltas = honest_deltas(genesis, PARTITIONS, seed=1)
        rng = np.random.default_rng(2)
        jobs = []
        for i, (key, address) in enumerate(zip(keys, addresses, strict=True)):
            base = deltas[i % PARTITIONS]
            delta = {k: v + (0.01 * np.abs(v).mean() * rng.standard_normal(v.shape)).astype(np.float32)
                     for k, v in base.items()}  # fmt: skip
            envelope = seal(
                encode_update(delta), key_pem, round_id=round_["id"], model_version=round_["model_version"],
                participant=address, num_samples=int(1437 / PARTITIONS),
            )  # fmt: skip
            signature = sign_update(
                key, chain_id=deployments.chain_id, verifying_contract=deployments.addresses["ContributionLedger"],
                round_id=round_["id"], model_version=round_["model_version"],
                payload_hash=hashlib.sha256(envelope).digest(), num_samples=int(1437 / PARTITIONS),
            )  # fmt: skip
            jobs.append(
                (
                    paths.updates_path(round_["id"]),
                    envelope,
                    {
                        **tokens[i],
                        "X-Update-Signature": signature,
                        "Content-Type": "application/octet-stream",
                    },
                )
            )
        log(
            f"{len(jobs)} updates sealed and signed ({len(jobs[0][1]) / 1e6:.2f} MB each, {params:,} parameters)"
        )

        # 4. all at once
        start = time.perf_counter()
        results = asyncio.run(burst(base_url, jobs))
        timings["burst"] = time.perf_counter() - start
        statuses = [s for s, _ in results]
        latencies = np.array([t for _, t in results]) * 1e3
        accepted = statuses.count(202)
        refused = {s: statuses.count(s) for s in set(statuses) if s != 202}
        log(f"burst: {accepted} accepted, refused {refused or 'none'} in {timings['burst']:.1f} s")

        # 5. close and post
        start = time.perf_counter()
        deadline = time.monotonic() + args.timeout
        status = None
        while time.monotonic() < deadline:
            status = http.get(paths.round_path(round_["id"])).json()
            if status["status"] in ("POSTED", "FAILED"):
                break
            time.sleep(1)
        timings["close_and_post"] = time.perf_counter() - start
        assert status is not None
        with sa.create_engine(db_url).connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT count(*) FROM updates WHERE round_id = {round_['id']}"
            ).scalar()
            durations = conn.exec_driver_sql(
                f"SELECT durations_ms FROM aggregations WHERE round_id = {round_['id']}"
            ).scalar()
        api_peaks, worker_peaks = peak_rss_mb(api.pid), peak_rss_mb(worker.pid)

        print()
        print(f"organizations: {args.orgs}; model: digits MLP, {params:,} parameters; "
              f"API: {args.api_workers} uvicorn workers; PostgreSQL + Redis; {os.cpu_count()} cores")  # fmt: skip
        print(f"submissions: {accepted} accepted (202), refused: {refused or 'none'}; rows in the round: {rows} "
              f"({'none lost' if rows == accepted else 'MISMATCH'})")  # fmt: skip
        print(f"burst wall time {timings['burst']:.1f} s ({accepted / timings['burst']:.0f}/s); latency "
              f"p50 {np.percentile(latencies, 50):.0f} ms, p99 {np.percentile(latencies, 99):.0f} ms, "
              f"max {latencies.max():.0f} ms")  # fmt: skip
        print(f"round {round_['id']}: {status['status']} {timings['close_and_post']:.1f} s after the burst; "
              f"close phases (ms): {durations}")  # fmt: skip
        print(f"setup: enrollment {timings['enroll']:.0f} s, sign-in + registration {timings['login']:.0f} s")
        print(f"peak RSS: API {sum(api_peaks.values()):.0f} MB over {len(api_peaks)} processes "
              f"(largest {max(api_peaks.values(), default=0):.0f} MB); worker {sum(worker_peaks.values()):.0f} MB "
              f"over {len(worker_peaks)} (largest {max(worker_peaks.values(), default=0):.0f} MB)")  # fmt: skip
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if status["status"] != "POSTED" or rows != accepted:
            raise SystemExit(
                f"round ended {status['status']}: {status.get('failure_reason')}; logs in {work}"
            )
    finally:
        for process in (api, worker):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        node.stop()
        if not args.keep:
            with sa.create_engine(PG).begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
