#!/usr/bin/env python3
"""Time and memory of one round's close (``compute_round``) at large n x d (issue 25, item 2).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench_close.py [--n 100] [--d 1000000 10000000]
        [--family softmax mlp] [--val 200] [--repeats 3] [--trees /work/main .]

Every close runs in a fresh child process that builds a synthetic round of ``n`` updates of ``d`` float32
parameters (honest rows: the server's reference step plus noise; a tenth of them pointing the other way),
the chain's genesis parameters (the default rule), the server's reference and ``--val`` validation examples,
then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and runs ``compute_round`` once (after
one small close of 8 x 20K in the same process, as a worker that has closed rounds before). It
prints per close: the phases the close records (``durations_ms``: aggregate, scores, ...), the whole close,
the close over its aggregation, the RSS held before the close (the updates, the holdout, the interpreter),
the peak RSS during it, and the peak's excess over the held RSS as a share of the updates' bytes.

``--clock cpu`` times the close and its phases by the child's CPU time (``time.process_time`` stands in for
``time.perf_counter`` in the child, which the close's phase timings read): on a machine shared with other
jobs, elapsed time also counts the time the scheduler gave others (at a load of 20 on 2 cores, most of it).

``--dp`` turns differential privacy on (clip norm: the reference's norm, so every update is clipped).

``--trees`` runs the same child against several source trees (e.g. main before a change, this checkout
after it), interleaved within every repeat after one warm-up close per tree, so contenders see the same load.

Goal (issue 25 item 2): peak memory of a close at most 1.25x the updates it holds (an excess of at most
0.25x) and at n = 100, d = 10M the whole close under 3x its aggregation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CLASSES = 10
HIDDEN = 1000
ATTACKER_SHARE = 0.1
WARM_UP_D = 20_000


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def child(args: argparse.Namespace) -> None:
    """Build one synthetic round, close it once, print a JSON line of figures."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    if args.clock == "cpu":
        time.perf_counter = time.process_time  # the close's phase timings read time.perf_counter
    if args.d > WARM_UP_D:
        # A worker process has closed rounds before: the first close pays one-time costs (numba compiling
        # or loading the kernels, about 130 MB of RSS) that are not the close's memory. A small round of
        # the same family pays them here, before the peak counter is reset.
        small = argparse.Namespace(**{**vars(args), "n": 8, "d": WARM_UP_D, "quiet": True})
        child(small)
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from aggregator.round.compute import ClientMeta, RoundInputs, compute_round
    from aggregator.round.params import RoundParams
    from fedledger.chain import param_table
    from fedledger.models import evaluate, init_mlp, init_softmax, train
    from fedledger.payload import flatten, unflatten

    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.d
    if args.family == "softmax":
        features = max(d // CLASSES - 1, 1)
        weights = init_softmax(features, CLASSES)
    else:
        features = max((d - HIDDEN - HIDDEN * CLASSES - CLASSES) // HIDDEN, 1)
        weights = init_mlp(features, HIDDEN, CLASSES, rng)
    spec = {name: list(t.shape) for name, t in weights.items()}
    base = flatten(weights, spec)
    d = base.size
    # Labels from a hidden linear rule, so the server's reference step lowers the validation loss.
    truth = rng.standard_normal((features, CLASSES), dtype=np.float32)
    Xv = rng.standard_normal((args.val, features), dtype=np.float32)
    yv = (Xv @ truth).argmax(axis=1)
    Xr = rng.standard_normal((args.val, features), dtype=np.float32)
    yr = (Xr @ truth).argmax(axis=1)
    # One full-batch step on the root data: the server's reference update.
    stepped = train(weights, Xr, yr, epochs=1, lr=0.5, batch=args.val, rng=rng)
    reference = (flatten(stepped, spec) - base).astype(np.float32)
    del stepped, Xr, yr, truth
    # The step size the validation data likes best, so that the round's aggregate is a plausible model.
    reference *= min(
        (np.float32(2.0**-k) for k in range(0, 12, 2)),
        key=lambda t: evaluate(unflatten(base + t * reference, spec), Xv, yv)[0],
    )
    ref_norm = float(np.linalg.norm(reference))
    deltas = np.empty((n, d), dtype=np.float32)
    attackers = int(ATTACKER_SHARE * n)
    for i in range(n):
        # Row by row, so building the round needs no n x d temporary of its own.
        rng.standard_normal(out=deltas[i], dtype=np.float32)
        deltas[i] *= np.float32(ref_norm / np.sqrt(d))
        deltas[i] += reference if i >= attackers else -reference
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    clients = tuple(
        ClientMeta(i + 1, i + 1, f"0x{i + 1:040x}", 100, opened + timedelta(minutes=5), 50.0)
        for i in range(n)
    )
    snapshot: dict[str, Any] = param_table.genesis()
    if args.dp:
        # Differential privacy on, clipping every update (their norms are about 1.4x the reference's).
        snapshot.update(dp_enabled=True, dp_clip_norm=ref_norm)
    inputs = RoundInputs(
        round_id=1,
        params=RoundParams.from_snapshot(snapshot),
        opened_at=opened,
        deadline=opened + timedelta(hours=1),
        extensions=0,
        clients=clients,
        deltas=deltas,
        rejected=(),
        weights=weights,
        spec=spec,
        holdout=(Xv, yv),
        reference=reference,
    )
    held = _status()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    result = compute_round(inputs, np.random.default_rng(1), opened + timedelta(hours=1))
    total = time.perf_counter() - start
    peak = _status()["VmHWM"]
    if getattr(args, "quiet", False):
        return
    record = result.record
    phases = dict(record.durations_ms) if record is not None else {}
    exact: dict[str, Any] = {}
    if args.exact and record is not None and "score_examples" in record.params:
        # The same round with the score budget lifted (every validation example), after the measured close.
        from aggregator.scoring import budget

        budget.SCORE_WORK_FLOOR = 1e30
        full = compute_round(inputs, np.random.default_rng(1), opened + timedelta(hours=1))
        q = np.array([c.quality for c in result.clients]) - np.array([c.quality for c in full.clients])
        f = np.array([c.fitness for c in result.clients]) - np.array([c.fitness for c in full.clients])
        paid = np.array([c.reward_wei > 0 for c in result.clients])
        paid_full = np.array([c.reward_wei > 0 for c in full.clients])
        flagged = np.array([c.byzantine for c in result.clients])
        flagged_full = np.array([c.byzantine for c in full.clients])
        honest = np.arange(len(result.clients)) >= attackers
        reward = np.array([c.reward_wei for c in result.clients], dtype=float)
        reward_full = np.array([c.reward_wei for c in full.clients], dtype=float)
        exact = {
            "score_examples": record.params["score_examples"],
            "quality_abs_diff_median": float(np.median(np.abs(q))),
            "quality_abs_diff_max": float(np.abs(q).max()),
            "fitness_abs_diff_max": float(np.abs(f).max()),
            "paid_differs": int((paid != paid_full).sum()),
            "flagged_differs": int((flagged != flagged_full).sum()),
            "attackers_paid": int(paid[~honest].sum()),
            "honest_reward_rel_diff_max": float(
                np.max(np.abs(reward - reward_full)[honest] / np.maximum(reward_full[honest], 1.0))
            ),
            # To float32 rounding: under --dp the first close clipped the updates in place, and the second
            # clips them again (factors of 1 up to rounding).
            "same_model": bool(
                result.aggregate is not None
                and full.aggregate is not None
                and np.allclose(result.aggregate, full.aggregate, rtol=1e-5, atol=1e-9)
                and result.step == full.step
                and result.activate == full.activate
            ),
        }
    print(
        json.dumps(
            {
                "status": str(result.status),
                "strategy": record.strategy if record else None,
                "d": d,
                "phases_ms": phases,
                "total_ms": total * 1e3,
                "held": held,
                "peak": peak,
                "updates": deltas.nbytes,
                "kept": len(result.kept),
                "activate": result.activate,
                "exact": exact,
            }
        )
    )


def run_child(args: argparse.Namespace, tree: str, d: int, family: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--tree",
        tree,
        "--n",
        str(args.n),
        "--d",
        str(d),
        "--family",
        family,
        "--val",
        str(args.val),
        "--seed",
        str(args.seed),
        "--clock",
        args.clock,
        *(["--dp"] if args.dp else []),
        *(["--exact"] if args.exact else []),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["load"] = os.getloadavg()[0]
    return row


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--family", nargs="+", default=["softmax"], choices=["softmax", "mlp"])
    parser.add_argument("--val", type=int, default=200, help="validation examples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trees", nargs="+", default=[str(HERE)], help="source trees to compare")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: the child's CPU time",
    )
    parser.add_argument("--dp", action="store_true", help="differential privacy on, every update clipped")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="after each measured close, close the same round again with every validation example in the "
        "scores (the score budget lifted) and print how far the budgeted scores and pay are from it",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(HERE), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.d = args.d[0]
        args.family = args.family[0]
        child(args)
        return

    print(
        f"# n = {args.n}, {args.val} validation examples, genesis parameters"
        f"{' with DP (clip norm = the reference norm)' if args.dp else ''}; OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}; one warm-up close per tree, then "
        f"{args.repeats} interleaved; {args.clock} clock; times in ms as median (min-max); load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )
    for family in args.family:
        for d in args.d:
            rows: dict[str, list[dict[str, Any]]] = {tree: [] for tree in args.trees}
            for tree in args.trees:
                run_child(args, tree, d, family)
            for _ in range(args.repeats):
                for tree in args.trees:
                    rows[tree].append(run_child(args, tree, d, family))
            print()
            first = rows[args.trees[0]][0]
            print(
                f"## {family}, n = {args.n}, d = {first['d']:,} ({first['updates'] / 2**30:.2f} GiB of updates), "
                f"{first['strategy']}"
            )
            keys = sorted({k for tree in args.trees for r in rows[tree] for k in r["phases_ms"]})
            print()
            print(
                "| tree | "
                + " | ".join(keys)
                + " | close | close / aggregate | held GiB | peak GiB | (peak - held) / updates | load |"
            )
            print("| --- |" + " ---: |" * (len(keys) + 6))
            for tree in args.trees:
                rs = rows[tree]
                cells = [summary([r["phases_ms"].get(k, float("nan")) for r in rs]) for k in keys]
                ratio = [r["total_ms"] / r["phases_ms"]["aggregate_ms"] for r in rs]
                excess = [(r["peak"] - r["held"]) / r["updates"] for r in rs]
                print(
                    f"| {tree} | "
                    + " | ".join(cells)
                    + f" | {summary([r['total_ms'] for r in rs])} | {statistics.median(ratio):.2f}"
                    f" ({min(ratio):.2f}-{max(ratio):.2f}) | {statistics.median(r['held'] for r in rs) / 2**30:.2f}"
                    f" | {max(r['peak'] for r in rs) / 2**30:.2f} | {max(excess):.2f} max"
                    f" | {statistics.median(r['load'] for r in rs):.1f} |"
                )
            for tree in args.trees:
                r = rows[tree][-1]
                print(f"# {tree}: {r['status']}, {r['kept']} kept, activate {r['activate']}")
                # One line per distinct comparison (a round's comparison is the same every repeat).
                seen: list[dict[str, Any]] = []
                for e in (row["exact"] for row in rows[tree] if row.get("exact")):
                    if e in seen:
                        continue
                    seen.append(e)
                    print(
                        f"# {tree}: scores on {e['score_examples']} examples against all of them: quality "
                        f"|diff| median {e['quality_abs_diff_median']:.2f}, max {e['quality_abs_diff_max']:.2f} "
                        f"points; fitness max {e['fitness_abs_diff_max']:.2f}; paid decisions differ "
                        f"{e['paid_differs']}, flags differ {e['flagged_differs']}, attackers paid "
                        f"{e['attackers_paid']}; honest reward max rel. diff "
                        f"{e['honest_reward_rel_diff_max']:.3f}; same model (to float32 rounding) {e['same_model']}"
                    )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
