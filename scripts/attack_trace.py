#!/usr/bin/env python3
"""One run of ``attack_eval.run`` traced round by round under the default rule (issue 20).

    .venv/bin/python scripts/attack_trace.py --task synthetic --partition iid --attack labelflip --fraction 0.5
    .venv/bin/python scripts/attack_trace.py ... --rows      # and every row of every round

Every round goes through the real ``compute_round`` as in ``scripts/attack_eval.py``; this script only
watches the round the attack sends (the last round computation of each round: an attack's search runs it on
candidates first). Per round: test accuracy after it, the step the close kept (``ref``: the server's own
step, the descent floor; ``RB``: rolled back), the reference test's and the centre test's levels, the
honest and the attacking rows' cosines to the reference and median cosines to their peers (median [min,
max]), how many of each pass both tests (the centre test with the judges' where the rule adds it), the
attackers' share of the aggregate's weight, the clip norm.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attack_eval  # noqa: E402

from aggregator.round.compute import RoundResult  # noqa: E402
from aggregator.strategies import fltrust_guarded  # noqa: E402


def _spread(values: np.ndarray) -> str:
    if not values.size:
        return "        -         "
    return f"{np.median(values):+.3f} [{values.min():+.3f},{values.max():+.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="synthetic", type=attack_eval.task_name, metavar="TASK")
    parser.add_argument("--partition", default="iid", choices=attack_eval.PARTITIONS)
    parser.add_argument("--alpha", type=float, default=attack_eval.DIRICHLET_ALPHA)
    parser.add_argument("--attack", default="labelflip", choices=attack_eval.ATTACKS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=attack_eval.BYZANTINE_FRACTION)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rows", action="store_true", help="every row of every round")
    args = parser.parse_args(argv)

    seen: dict[str, Any] = {}
    rounds: dict[int, tuple[RoundResult, Any, Any, list[int]]] = {}
    real_coefficients, real_trial = fltrust_guarded._coefficients, attack_eval._trial

    def coefficients(g: fltrust_guarded.Gate, *a: Any, **k: Any) -> np.ndarray:
        # The gate that weighs the rows, after the tests the rule adds to gate()'s (the judges').
        seen["gate"] = g
        seen["coefficients"] = real_coefficients(g, *a, **k)
        return seen["coefficients"]  # type: ignore[no-any-return]

    def trial(template: Any, attackers: list[int], *a: Any, **k: Any) -> RoundResult:
        result = real_trial(template, attackers, *a, **k)
        # The rule sees the eligible rows only (reputation at least the governed minimum): the attackers'
        # positions among them.
        floor = template.params.min_reputation
        members = [k for k, c in enumerate(template.clients) if c.reputation >= floor]
        among = [members.index(k) for k in attackers if k in members]
        rounds[template.round_id] = (result, seen.get("gate"), seen.get("coefficients"), among)
        return result

    fltrust_guarded._coefficients = coefficients
    attack_eval._trial = trial
    task = attack_eval.load_task(args.task, args.seed)
    fed = attack_eval.make_federation(
        task, args.seed, args.n, args.partition, alpha=args.alpha, fraction=args.fraction
    )
    run = attack_eval.run(fed, "fltrust_guarded", args.attack, args.rounds)
    print(
        f"# {args.task} {args.partition} n={args.n} fraction={args.fraction} attack={args.attack} "
        f"seed={args.seed}: final accuracy {100 * run.accuracy:.1f} %, rollbacks {run.rollbacks}"
    )
    print(
        "rnd  acc% step      | ref lvl  ctr lvl | cos ref: honest          attackers        "
        "| peer cos: honest attackers | pass H/A  att. weight % | clip"
    )
    for r in sorted(rounds):
        result, g, c, attackers = rounds[r]
        if g is None or c is None or result.status.value != "aggregated":
            print(f"{r:3d} {100 * run.accuracy_by_round[r - 1]:5.1f} {result.status.value} {result.reason}")
            continue
        kind = "RB" if not result.activate else ""
        if result.activate and result.record is not None and "server's own step" in result.record.decision:
            kind = "ref"
        attacker = np.zeros(g.cos_reference.size, dtype=bool)
        attacker[attackers] = True
        honest = ~attacker
        share = 100 * c[attacker].sum() / c.sum() if c.sum() > 0 else 0.0
        print(
            f"{r:3d} {100 * run.accuracy_by_round[r - 1]:5.1f} {result.step:4.2f} {kind:4s} | "
            f"{g.reference_level:+.3f}   {g.center_level:+.3f} | "
            f"{_spread(g.cos_reference[honest])} {_spread(g.cos_reference[attacker])} | "
            f"{np.median(g.cos_center[honest]):+.3f}  "
            f"{np.median(g.cos_center[attacker]) if attacker.any() else float('nan'):+.3f}    | "
            f"{int(g.passed[honest].sum())}/{int(g.passed[attacker].sum())}  {share:5.1f}          | "
            f"{g.clip_norm:.3g}"
        )
        if args.rows:
            for i in range(g.cos_reference.size):
                print(
                    f"      row {i} {'A' if attacker[i] else 'H'} cos ref {g.cos_reference[i]:+.3f} "
                    f"peer {g.cos_center[i]:+.3f} norm {g.norms[i]:.3g} passes ref {int(g.by_reference[i])} "
                    f"centre {int(g.by_center[i])} weight {c[i]:.3f}"
                    + ("" if g.judges is None else f" judge {int(g.judges[i])}")
                )
            if result.record is not None:
                print(f"      decision: {result.record.decision}")


if __name__ == "__main__":
    main()
