#!/usr/bin/env python3
"""Time every phase of consecutive rounds on the embedded defaults (what ``make run`` uses).

    .venv/bin/python scripts/bench_rounds.py [--rounds 20] [--orgs 8]

Starts a dev chain, the API and a worker with its beat as ``fedledger run`` does (SQLite, kombu's SQL
broker, blobs on disk; nothing else), enrolls ``--orgs`` organizations through the SDK, trains each one
on the current model before each round (client training is not part of a round's time here) and runs
``--rounds`` rounds back to back: the operator opens a round with quorum = every organization still
allowed to submit (an organization the platform slashed sits out, as in ``fedledger run``), each one seals
and signs its update for that round and submits it, and the script waits for POSTED. Per round it prints:

- open: the operator opening the round until the API answers;
- seal: until the last organization sealed and signed its update (client side; every organization seals
  and submits in its own thread, as independent organizations do);
- submit: from then until the last 202;
- close: last 202 until the round's closed_at (broker delay plus the close itself);
- post: closed_at until POSTED is seen (broker delay plus the chain writes and their confirmations,
  which Hardhat mines at once; polled every 20 ms);
- round: open sent until POSTED seen: everything but training (done once, before the first round);
- close task / post task: how long the worker's close and post tasks ran (its log); the post task is the
  chain writes (sign, send, wait for the receipt) and their bookkeeping;
- round - post task: the round's time outside the chain writes;
- closes / posts: how many times the worker ran the close and the post task for the round (its log).

The goal (issue 14, item 1) is at most 2 s per round outside client training and chain confirmation, in
every round with no drift, and exactly one close and one post per round. The last lines print the load average and the verdict.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from app.launcher import Supervisor  # noqa: E402
from client.data import load_digits_dataset, partition_iid  # noqa: E402
from client.sdk import Organization  # noqa: E402
from client.wallet import Wallet  # noqa: E402
from fedledger.api.client import FedLedgerApi  # noqa: E402
from fedledger.chain.devnode import DevChain, free_port  # noqa: E402
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, MODEL_SIGNER_INDEX, dev_private_key  # noqa: E402
from fedledger.models import init_softmax  # noqa: E402
from fedledger.payload import encode_weights  # noqa: E402

GOAL_SECONDS = 2.0


def task_runs(log: Path, task: str) -> dict[int, list[float]]:
    """The duration (ms) of every run of the worker's close or post task, by round, from its log."""
    runs: dict[int, list[float]] = {}
    for round_id, ms in re.findall(rf"{task} round (\d+): \S+ in (\d+) ms", log.read_text(errors="replace")):
        runs.setdefault(int(round_id), []).append(float(ms))
    return runs


def participate(org: Organization, round_id: int, version: int, delta: Any, samples: int) -> float:
    """Seal, sign and submit one organization's update; returns when it was sealed."""
    update = org.prepare_update(round_id, version, delta, samples)
    sealed = time.time()
    org.submit(update)
    return sealed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--orgs", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    api_port = free_port()
    node = DevChain(port=free_port(), log_path=work / "chain.log")
    node.start()
    supervisor: Supervisor | None = None
    try:
        node.deploy(work / "deployments.json")
        operator_key = dev_private_key(0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")} | {
            "FEDLEDGER_DATA_DIR": str(work / "var"),
            "FEDLEDGER_DEPLOYMENTS_FILE": str(work / "deployments.json"),
            "FEDLEDGER_CHAIN_RPC_URL": node.rpc_url,
            "FEDLEDGER_OPERATOR_ADDRESSES": Account.from_key(operator_key).address,
            "FEDLEDGER_API_PORT": str(api_port),
            "FEDLEDGER_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "FEDLEDGER_SIWE_DOMAIN": f"127.0.0.1:{api_port}",
            "FEDLEDGER_TICK_SECONDS": "2",
        }
        api_url = f"http://127.0.0.1:{api_port}"
        supervisor = Supervisor(work / "logs", env)
        api = supervisor.start("api", "api")
        supervisor.wait_http(api, f"{api_url}/healthz")
        worker = supervisor.start("worker", "worker")
        # Round 1 must not wait for the worker to boot: the goal is about rounds, not start-up.
        booted = time.monotonic() + 120
        while " ready." not in worker.log.read_text(errors="replace"):
            supervisor.check()
            if time.monotonic() > booted:
                raise SystemExit(f"the worker did not start; see {worker.log}")
            time.sleep(0.2)

        operator = FedLedgerApi(api_url, wallet=Wallet(operator_key))
        operator.login()
        operator.upload_genesis(encode_weights(init_softmax(64, 10)))
        signer = Account.from_key(dev_private_key(MODEL_SIGNER_INDEX)).address
        parts = partition_iid(load_digits_dataset("train"), args.orgs, 0)
        orgs = []
        for i in range(args.orgs):
            org = Organization(
                Wallet(dev_private_key(FIRST_ORGANIZATION_INDEX + i)),
                api_url,
                rpc_url=node.rpc_url,
                trusted_model_signer=signer,
                org_name=f"bench-org-{i}",
                poll_interval=0.02,
            )
            org.setup()
            orgs.append(org)
        print(
            f"# {args.orgs} organizations, {args.rounds} rounds, embedded defaults (SQLite, kombu SQL broker); "
            f"load average at start {os.getloadavg()[0]:.2f}; times in ms"
        )
        print()
        print(
            "| round | orgs | open | seal | submit | close | post | round | close task | post task "
            "| round - post task | closes | posts | load |"
        )
        print(
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        totals: list[float] = []
        round_ids: list[int] = []
        rows = []
        pool = ThreadPoolExecutor(max_workers=args.orgs)
        for number in range(args.rounds):
            supervisor.check()
            # Training, before the round opens and outside its time: every organization still allowed to
            # submit trains on the current model, as it would between rounds.
            members, trained = [], []
            for org, data in zip(orgs, parts, strict=True):
                if org.api.me().may_submit:
                    training = org.train(org.pull_model(), data, seed=number)
                    members.append(org)
                    trained.append((training.delta, training.num_samples))
            start = time.time()
            round_ = operator.open_round(duration_seconds=600, quorum=len(members))
            opened = time.time()
            round_id, version = round_.id, round_.model_version
            # Each organization seals and submits on its own, at the same time as the others.
            sealed_at = list(
                pool.map(
                    participate,
                    members,
                    [round_id] * len(members),
                    [version] * len(members),
                    [delta for delta, _ in trained],
                    [samples for _, samples in trained],
                )
            )
            submitted = time.time()
            sealed = max(sealed_at)
            while True:
                state = operator.round(round_id)
                if state.status in ("POSTED", "FAILED"):
                    posted = time.time()
                    break
                if time.time() - start > 300:
                    raise SystemExit(f"round {round_id} stuck in {state.status}; see {work / 'logs'}")
                time.sleep(0.02)
            if state.status != "POSTED" or state.closed_at is None:
                raise SystemExit(f"round {round_id} FAILED: {state.failure_reason}")
            closed = state.closed_at.timestamp()
            rows.append(
                (
                    round_id,
                    len(members),
                    opened - start,
                    sealed - opened,
                    submitted - sealed,
                    closed - submitted,
                    posted - closed,
                    posted - start,
                    os.getloadavg()[0],
                )
            )
            totals.append(rows[-1][-2])
            round_ids.append(round_id)
        time.sleep(3 * 2)  # three ticks after the last post: nothing more may run
        closes, posts = task_runs(worker.log, "close"), task_runs(worker.log, "post")
        outside_chain = []
        for round_id, count, *phases, load in rows:
            cells = f"{count} | " + " | ".join(f"{p * 1e3:,.0f}" for p in phases)
            close_ms, post_ms = sum(closes.get(round_id, [])), sum(posts.get(round_id, []))
            outside_chain.append(phases[-1] - post_ms / 1e3)
            print(
                f"| {round_id} | {cells} | {close_ms:,.0f} | {post_ms:,.0f} | {outside_chain[-1] * 1e3:,.0f} "
                f"| {len(closes.get(round_id, []))} | {len(posts.get(round_id, []))} | {load:.2f} |"
            )
        print()
        half = len(totals) // 2
        exact = all(len(closes.get(r, [])) == 1 and len(posts.get(r, [])) == 1 for r in round_ids)
        # One round has no halves to compare (the smallest run, --rounds 1, only checks the path).
        halves = (
            f"; first half median {statistics.median(totals[:half]) * 1e3:,.0f} ms, "
            f"second half {statistics.median(totals[half:]) * 1e3:,.0f} ms"
            if half
            else ""
        )
        print(
            f"# round time (open to POSTED, training excluded): median {statistics.median(totals) * 1e3:,.0f} ms, "
            f"max {max(totals) * 1e3:,.0f} ms{halves}"
        )
        print(
            f"# round minus the post task (the chain writes: sign, send, wait for mining, and their bookkeeping): "
            f"median {statistics.median(outside_chain) * 1e3:,.0f} ms, max {max(outside_chain) * 1e3:,.0f} ms; "
            f"first half median {statistics.median(outside_chain[:half]) * 1e3:,.0f} ms, "
            f"second half {statistics.median(outside_chain[half:]) * 1e3:,.0f} ms"
        )
        print(f"# one close and one post per round: {'yes' if exact else 'NO'}")
        print(
            f"# every round <= {GOAL_SECONDS:.0f} s outside the chain writes: "
            f"{'yes' if max(outside_chain) <= GOAL_SECONDS else 'NO'}; with them: "
            f"{'yes' if max(totals) <= GOAL_SECONDS else 'NO'}; load average at end {os.getloadavg()[0]:.2f}"
        )
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        node.stop()


if __name__ == "__main__":
    main()
