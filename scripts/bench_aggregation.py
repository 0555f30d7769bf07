#!/usr/bin/env python3
"""Time fedledger's aggregation strategies against Flower and qora-fl on identical inputs.

    make bench                      # installs the peers (pip extra "bench") and runs this
    .venv/bin/python scripts/bench_aggregation.py [--quick] [--repeats 3]

For n clients in {10, 50, 100} and d parameters in {100K, 1M} (float32, standard normal), each strategy
runs ``--repeats`` times and the median wall time is printed, with the ratio to the faster peer and,
for coordinate-wise strategies, the memory-bandwidth floor: the time to read the n x d matrix once at
the bandwidth this machine reaches for a streaming read (measured at start). Krum-family strategies use
f = floor((n - 3) / 4), the largest f Bulyan accepts. Flower's Krum and Bulyan loop over client pairs in
Python; where one run at d = 100K already took longer than ``--peer-budget`` seconds, the d = 1M figure
is extrapolated linearly in d and marked with "~".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import robust  # noqa: E402

try:
    import flwr.server.strategy.aggregate as flower
except ImportError:  # pragma: no cover - the bench extra is optional
    flower = None
try:
    import qora
except ImportError:  # pragma: no cover
    qora = None

COORDINATE_WISE = {"fedavg", "median", "trimmed_mean", "reputation"}
BETA = 0.2


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth() -> float:
    """Bytes per second of a streaming read (one matrix-vector product over 512 MB)."""
    big = np.ones((64, 2_000_000), dtype=np.float32)
    ones = np.ones(64, dtype=np.float32)
    seconds = min(timed(lambda: ones @ big, 1) for _ in range(5))
    return big.nbytes / seconds


def ours(name: str, X: np.ndarray, f: int, rep: np.ndarray) -> Callable[[], object]:
    params = {
        "fedavg": {},
        "median": {},
        "trimmed_mean": {"beta": BETA},
        "krum": {"f": f},
        "multi_krum": {"f": f},
        "bulyan": {"f": f},
        "reputation": {"reputation": rep},
    }[name]
    return lambda: robust.aggregate(name, X, **params)


def flower_call(name: str, X: np.ndarray, f: int) -> Callable[[], object] | None:
    if flower is None:
        return None
    results = [([row], 1) for row in X]
    n = X.shape[0]
    return {
        "fedavg": lambda: flower.aggregate(results),
        "median": lambda: flower.aggregate_median(results),
        "trimmed_mean": lambda: flower.aggregate_trimmed_avg(results, BETA),
        "krum": lambda: flower.aggregate_krum(results, f, 0),
        "multi_krum": lambda: flower.aggregate_krum(results, f, n - f),
        "bulyan": lambda: flower.aggregate_bulyan(list(results), f, flower.aggregate_krum, to_keep=0),
    }.get(name)


def qora_call(name: str, X: np.ndarray) -> Callable[[], object] | None:
    if qora is None or name not in {"fedavg", "median", "trimmed_mean"}:
        return None
    aggregator = qora.ByzantineAggregator(name, BETA)
    updates = [row.reshape(-1, 1000) for row in X]
    return lambda: aggregator.aggregate(updates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="n in {10, 50}, d = 100K only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-budget", type=float, default=3.0, help="seconds; see the module docstring")
    args = parser.parse_args()

    ns = [10, 50] if args.quick else [10, 50, 100]
    ds = [100_000] if args.quick else [100_000, 1_000_000]
    bandwidth = read_bandwidth()
    print(
        f"# numpy {np.__version__}; flwr {'absent' if flower is None else __import__('flwr').__version__}; "
        f"qora-fl {'absent' if qora is None else 'present'}; streaming read {bandwidth / 1e9:.1f} GB/s"
    )
    print()
    print(
        "| strategy | n | d | fedledger ms | Flower ms | qora-fl ms | faster peer / ours | bandwidth floor ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    slow_peers: dict[tuple[str, str, int], float] = {}
    rng = np.random.default_rng(0)
    for n in ns:
        f = (n - 3) // 4
        rep = rng.uniform(20, 100, size=n)
        for d in ds:
            X = rng.standard_normal((n, d), dtype=np.float32)
            floor_ms = X.nbytes / bandwidth * 1e3
            for name in robust.STRATEGIES:
                ours_ms = timed(ours(name, X, f, rep), args.repeats) * 1e3
                peers: dict[str, str] = {}
                peer_ms: list[float] = []
                for peer, call in (("flower", flower_call(name, X, f)), ("qora", qora_call(name, X))):
                    if call is None:
                        peers[peer] = "n/a"
                        continue
                    small = slow_peers.get((peer, name, n))
                    if small is not None and d > 100_000:
                        ms = small * d / 100_000
                        peers[peer] = f"~{ms:,.0f}"
                    else:
                        ms = timed(call, 1 if d > 100_000 else args.repeats) * 1e3
                        if d == 100_000 and ms > args.peer_budget * 1e3:
                            slow_peers[(peer, name, n)] = ms
                        peers[peer] = f"{ms:,.1f}"
                    peer_ms.append(ms)
                ratio = f"{min(peer_ms) / ours_ms:,.1f}x" if peer_ms else "n/a"
                floor = f"{floor_ms:.1f}" if name in COORDINATE_WISE else ""
                print(
                    f"| {name} | {n} | {d:,} | {ours_ms:,.1f} | {peers['flower']} | {peers['qora']} | {ratio} | {floor} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
