#!/usr/bin/env python3
"""Time fedledger's aggregation strategies against Flower and qora-fl on identical inputs.

    make bench                      # installs the peers (pip extra "bench") and runs this
    .venv/bin/python scripts/bench_aggregation.py [--quick] [--repeats 5] [--background 2]

For n clients in {10, 50, 100} and d parameters in {100K, 1M} (float32, standard normal), every contender
of a cell (fedledger, Flower, qora-fl, and the bandwidth floor: one ``np.sum`` over the same matrix) runs
once as a warm-up, then ``--repeats`` times interleaved (A B C A B C ...), so that a change in the
machine's load hits every contender alike. Each time is printed as median [min-max] in ms, with the
ratio of the faster peer's median to ours, the ratio of ours to the floor for coordinate-wise rules, the
1-minute load average when the cell finished, and whether our output agrees with Flower's where the rule
is the same (max |ours - Flower| <= 1e-4 x max |Flower|, or the same client chosen for Krum).

BLAS runs one thread for every contender (threadpoolctl), so no contender spins on a core another holds.
``--background N`` starts N busy processes (pure Python loops) for the whole run and stops them after.
Krum-family rules use f = floor((n - 3) / 4), the largest f Bulyan accepts; multi_krum keeps
m = n - 2f - 2 clients, the most qora-fl allows.
Flower's Bulyan loops over client pairs in Python: where its warm-up at d = 100K took longer than
``--peer-budget`` seconds it is not repeated, and its d = 1M figure is extrapolated linearly in d and
marked "~"; such cells are not counted in the verdict.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.strategies import functions as robust  # noqa: E402

try:
    import flwr
    import flwr.server.strategy.aggregate as flower
except ImportError:  # pragma: no cover - the bench extra is optional
    flwr = flower = None
try:
    import qora
except ImportError:  # pragma: no cover
    qora = None

STRATEGIES = ("fedavg", "trimmed_mean", "median", "krum", "multi_krum", "bulyan", "reputation")
COORDINATE_WISE = {"fedavg", "median", "trimmed_mean", "reputation"}
SELECTING = {"krum"}
BETA = 0.2


def keep(n: int, f: int) -> int:
    """Multi-Krum's m: n - 2f - 2, the largest qora-fl accepts (and valid for Flower and us)."""
    return n - 2 * f - 2


def ours(name: str, X: np.ndarray, f: int, rep: np.ndarray) -> Callable[[], np.ndarray]:
    n = X.shape[0]
    params = {
        "fedavg": {},
        "median": {},
        "trimmed_mean": {"beta": BETA},
        "krum": {"f": f},
        "multi_krum": {"f": f, "m": keep(n, f)},
        "bulyan": {"f": f},
        "reputation": {"reputation": rep},
    }[name]
    return lambda: robust.aggregate(name, X, **params)


def flower_call(name: str, X: np.ndarray, f: int) -> Callable[[], np.ndarray] | None:
    if flower is None:
        return None
    results = [([row], 1) for row in X]
    n = X.shape[0]
    calls: dict[str, Callable[[], list[np.ndarray]]] = {
        "fedavg": lambda: flower.aggregate(results),
        "median": lambda: flower.aggregate_median(results),
        "trimmed_mean": lambda: flower.aggregate_trimmed_avg(results, BETA),
        "krum": lambda: flower.aggregate_krum(results, f, 0),
        "multi_krum": lambda: flower.aggregate_krum(results, f, keep(n, f)),
        "bulyan": lambda: flower.aggregate_bulyan(list(results), f, flower.aggregate_krum, to_keep=0),
    }
    call = calls.get(name)
    return None if call is None else (lambda: call()[0])


def qora_call(name: str, X: np.ndarray, f: int) -> Callable[[], np.ndarray] | None:
    n = X.shape[0]
    method = {
        "fedavg": "fedavg",
        "median": "median",
        "trimmed_mean": "trimmed_mean",
        "krum": f"krum:{f}",
        "multi_krum": f"multi_krum:{f}:{keep(n, f)}",
    }.get(name)
    if qora is None or method is None:
        return None
    aggregator = qora.ByzantineAggregator(method, BETA)
    updates = [row.reshape(-1, 1000) for row in X]
    return lambda: aggregator.aggregate(updates).reshape(-1)


def agrees(name: str, mine: np.ndarray, theirs: np.ndarray, X: np.ndarray) -> str:
    theirs = np.asarray(theirs, dtype=np.float32).reshape(-1)
    if name in SELECTING:
        same = [i for i in range(X.shape[0]) if np.array_equal(X[i], theirs)]
        return "yes" if same and np.array_equal(mine, theirs) else "NO"
    scale = float(np.abs(theirs).max()) or 1.0
    return "yes" if float(np.abs(mine - theirs).max()) <= 1e-4 * scale else "NO"


def busy_loop() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def summary(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0] * 1e3:,.1f} (1 run)"
    return f"{statistics.median(times) * 1e3:,.1f} [{min(times) * 1e3:,.1f}-{max(times) * 1e3:,.1f}]"


def run_cell(
    contenders: dict[str, Callable[[], object]], repeats: int, budget: float
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Warm every contender up once (keeping its output), then time them interleaved; one slower than
    ``budget`` seconds in its warm-up is timed by that run alone."""
    times: dict[str, list[float]] = {}
    outputs: dict[str, object] = {}
    repeated = []
    for name, call in contenders.items():
        start = time.perf_counter()
        outputs[name] = call()
        elapsed = time.perf_counter() - start
        if elapsed > budget:
            times[name] = [elapsed]
        else:
            times[name] = []
            repeated.append(name)
    for _ in range(repeats):
        for name in repeated:
            call = contenders[name]
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="n in {10, 50}, d = 100K only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--background", type=int, default=0, help="busy processes to run alongside")
    parser.add_argument("--peer-budget", type=float, default=10.0, help="seconds; see the module docstring")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()

    ns = [10, 50] if args.quick else [10, 50, 100]
    ds = [100_000] if args.quick else [100_000, 1_000_000]
    names = [s for s in args.strategies.split(",") if s]
    background = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.background)]
    for process in background:
        process.start()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            blas = ", ".join(
                f"{i['internal_api']} {i['version']} ({i.get('architecture', '?')}) x{i['num_threads']}"
                for i in threadpool_info()
                if i["user_api"] == "blas"
            )
            print(
                f"# numpy {np.__version__}; flwr {'absent' if flwr is None else flwr.__version__}; "
                f"qora-fl {'absent' if qora is None else 'present'}; BLAS {blas}; "
                f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
                f"{args.background} busy background processes; {args.repeats} interleaved runs after a "
                f"warm-up; load average at start {os.getloadavg()[0]:.2f}"
            )
            print()
            print(
                "| strategy | n | d | fedledger ms | Flower ms | qora-fl ms | floor ms | faster peer / ours "
                "| ours / floor | = Flower | load |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |")
            verdict(ns, ds, names, args)
    finally:
        for process in background:
            process.terminate()
            process.join()


def verdict(ns: list[int], ds: list[int], names: list[str], args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    slow_peers: dict[tuple[str, str, int], float] = {}
    failing: list[str] = []
    floor_misses: list[str] = []
    for n in ns:
        f = (n - 3) // 4
        rep = rng.uniform(20, 100, size=n)
        for d in ds:
            X = rng.standard_normal((n, d), dtype=np.float32)
            for name in names:
                contenders: dict[str, Callable[[], object]] = {"ours": ours(name, X, f, rep)}
                extrapolated: dict[str, float] = {}
                for peer, call in (("flower", flower_call(name, X, f)), ("qora", qora_call(name, X, f))):
                    if call is None:
                        continue
                    small = slow_peers.get((peer, name, n))
                    if small is not None and d > 100_000:
                        extrapolated[peer] = small * d / 100_000
                    else:
                        contenders[peer] = call
                if name in COORDINATE_WISE:
                    contenders["floor"] = partial(np.sum, X)
                times, outputs = run_cell(contenders, args.repeats, args.peer_budget)
                for peer in ("flower", "qora"):
                    if peer in times and len(times[peer]) == 1 and d == 100_000:
                        slow_peers[(peer, name, n)] = times[peer][0]
                med = {k: statistics.median(v) for k, v in times.items()}
                cells = {k: summary(v) for k, v in times.items()}
                for peer, seconds in extrapolated.items():
                    med[peer] = seconds
                    cells[peer] = f"~{seconds * 1e3:,.0f}"
                peers = [med[p] for p in ("flower", "qora") if p in med]
                measured = [med[p] for p in ("flower", "qora") if p in times and len(times[p]) > 1]
                ratio = min(peers) / med["ours"] if peers else None
                if measured and min(measured) / med["ours"] < 2.0:
                    failing.append(f"{name} n={n} d={d:,}: {min(measured) / med['ours']:.1f}x")
                over = med["ours"] / med["floor"] if "floor" in med else None
                if over is not None and over > 5.0:
                    floor_misses.append(f"{name} n={n} d={d:,}: {over:.1f}x")
                same = (
                    agrees(name, outputs["ours"], outputs["flower"], X)  # type: ignore[arg-type]
                    if "flower" in outputs
                    else "n/a"
                )
                print(
                    f"| {name} | {n} | {d:,} | {cells['ours']} | {cells.get('flower', 'n/a')} "
                    f"| {cells.get('qora', 'n/a')} | {cells.get('floor', '')} "
                    f"| {'n/a' if ratio is None else f'{ratio:,.1f}x'} "
                    f"| {'' if over is None else f'{over:,.1f}x'} | {same} | {os.getloadavg()[0]:.2f} |",
                    flush=True,
                )
    print()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print(
        f"# cells below 2x the faster measured peer: {len(failing)}" + "".join(f"\n#   {c}" for c in failing)
    )
    print(f"# coordinate-wise cells above 5x the floor: {len(floor_misses)}")
    for cell in floor_misses:
        print(f"#   {cell}")


if __name__ == "__main__":
    main()
