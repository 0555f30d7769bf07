#!/usr/bin/env python3
"""Time fedledger's aggregation strategies against Flower and qora-fl on identical inputs.

    make bench                      # installs the peers (pip extra "bench") and runs this
    .venv/bin/python scripts/bench_aggregation.py [--quick] [--repeats 5] [--background 2]

Every strategy the registry holds is timed (``aggregator.strategies.names()``), the chain's genesis default
(``strategy`` in fedledger/chain/param_table.json) first, built as the close builds it each round
(``registry.build`` on the genesis parameters: its standing, crowd and judges' test on), on reputations
spread as a federation's after some rounds (:func:`reputations`), so that every stage it runs in a round is
timed. Rules neither Flower nor qora-fl has (FLTrust, centered clipping, the guarded default) race a
straightforward NumPy implementation written from the paper (column "NumPy ref"), whose float32 output is
compared with ours like Flower's.

For n clients in {10, 50, 100} and d parameters in {100K, 1M} (float32, standard normal), every contender
of a cell (fedledger, Flower, qora-fl, the NumPy reference, and the bandwidth floor: one ``np.sum`` over
the same matrix) runs
once as a warm-up, then ``--repeats`` times interleaved (A B C A B C ...), so that a change in the
machine's load hits every contender alike. Each time is printed as median [min-max] in ms, with the
ratio of the faster peer's median to ours, the ratio of ours to the floor for coordinate-wise rules, the
1-minute load average when the cell finished, and whether our output agrees with Flower's (or the NumPy
reference's) where the rule is the same (max |ours - theirs| <= 1e-4 x max |theirs|, or the same client
chosen for Krum). FLTrust's reference update g_0 is a row of the same distribution plus the honest mean
direction, so that most trust scores are positive; centered clipping starts at the coordinate median.

``--clock cpu`` times each call by this process's CPU time instead of elapsed time: on a machine shared
with other jobs, elapsed time also counts the time the scheduler gave others, more of it the longer a
call runs, which inflates slow calls against fast ones (the floor); CPU time counts the work, including
any thread that spins. It sums all threads of the process, so a multi-threaded peer (qora-fl runs a pool
of worker threads) is charged for every core it used.
The row ``bulyan_columns`` times Bulyan's coordinate-wise step alone (the mean of the n - 4f values closest
to the median of n - 2f rows), against one ``np.sum`` over those n - 2f rows.
Our compiled (numba) kernels are compiled, or loaded from numba's cache, by one call of every strategy on
a small matrix before the table (the header says how long that took): it is a one-off cost per process.
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
import json
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

from aggregator import strategies  # noqa: E402
from aggregator.round.params import RoundParams  # noqa: E402
from aggregator.strategies import fltrust_guarded, registry  # noqa: E402
from aggregator.strategies.base import StrategyInputs  # noqa: E402
from aggregator.strategies.bulyan import closest_to_median_columns  # noqa: E402
from fedledger.chain.param_table import genesis, genesis_real  # noqa: E402

try:
    import flwr
    import flwr.server.strategy.aggregate as flower
except ImportError:  # pragma: no cover - the bench extra is optional
    flwr = flower = None
try:
    import qora
except ImportError:  # pragma: no cover
    qora = None

PARAM_TABLE = Path(__file__).resolve().parent.parent / "fedledger" / "chain" / "param_table.json"


def numba_version() -> str:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a pinned dependency
        return "absent (NumPy kernels)"
    return str(numba.__version__)


def default_strategy() -> str:
    """The genesis ``strategy`` of the chain's parameter table (the rule every new deployment runs)."""
    table = json.loads(PARAM_TABLE.read_text())
    (row,) = [p for p in table["parameters"] if p["name"] == "strategy"]
    return str(row["default"])


DEFAULT_STRATEGY = default_strategy()

# Bulyan's coordinate-wise step alone (the mean of the beta values closest to the median of the theta
# selected rows), held to the same floor as median and trimmed mean: its own row, after bulyan.
BULYAN_COLUMNS = "bulyan_columns"


def all_strategies() -> tuple[str, ...]:
    """Every registered strategy, the chain's default first, Bulyan's coordinate-wise step after Bulyan."""
    first = DEFAULT_STRATEGY
    names = [first, *[name for name in strategies.names() if name != first]]
    if "bulyan" in names:
        names.insert(names.index("bulyan") + 1, BULYAN_COLUMNS)
    return tuple(names)


STRATEGIES = all_strategies()
COORDINATE_WISE = {"fedavg", "median", "trimmed_mean", "reputation", BULYAN_COLUMNS}
SELECTING = {"krum"}
PEERS = ("flower", "qora", "numpy")
BETA = 0.2


def keep(n: int, f: int) -> int:
    """Multi-Krum's m: n - 2f - 2, the largest qora-fl accepts (and valid for Flower and us)."""
    return n - 2 * f - 2


def reference_update(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The server's g_0: an update of the same scale leaning towards the clients' mean, as a root-data
    update of an honest round does (cosines to it mostly positive, some rows below any cut)."""
    d = X.shape[1]
    g0 = rng.standard_normal(d, dtype=np.float32) + np.float32(0.3 * np.sqrt(X.shape[0])) * X.mean(axis=0)
    return np.ascontiguousarray(g0, dtype=np.float32)


def ours(name: str, X: np.ndarray, f: int, rep: np.ndarray, g0: np.ndarray) -> Callable[[], np.ndarray]:
    """The registered strategy as a round runs it: its object, then ``aggregate`` on checked inputs."""
    n = X.shape[0]
    if name == BULYAN_COLUMNS:  # theta = n - 2f rows (which ones does not change the time), beta = theta - 2f
        return partial(closest_to_median_columns, X, np.arange(n - 2 * f), n - 4 * f)
    params = {
        "trimmed_mean": {"beta": BETA},
        "krum": {"f": f},
        "multi_krum": {"f": f, "m": keep(n, f)},
        "bulyan": {"f": f},
    }.get(name, {})
    if name == DEFAULT_STRATEGY and not params:
        # The chain's default as the close builds it each round (its module options, the genesis
        # parameters): the rule a deployment runs, not the bare class a rule built by hand is.
        strategy = registry.build(RoundParams.from_snapshot(genesis()))
    else:
        strategy = strategies.strategy_class(name)(**params)  # type: ignore[arg-type]
    inputs = StrategyInputs.of(n, reputation=rep, reference=g0, rng=np.random.default_rng(0))
    return lambda: strategy.aggregate(X, inputs).vector


def numpy_fltrust(X: np.ndarray, g0: np.ndarray) -> np.ndarray:
    """FLTrust from the paper (Cao et al., NDSS 2021, Alg. 2): TS_i = ReLU(cos(g_i, g_0)); g_i rescaled to
    ||g_0||; the aggregate is sum_i TS_i g_i' / sum_j TS_j."""
    norms = np.linalg.norm(X, axis=1)
    g0_norm = np.linalg.norm(g0)
    trust = np.maximum((X @ g0) / (norms * g0_norm), 0.0)
    if trust.sum() <= 0:
        return np.zeros(X.shape[1], dtype=np.float32)
    out: np.ndarray = ((trust * g0_norm / norms) @ X) / trust.sum()
    return out.astype(np.float32)


def numpy_centered_clip(X: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Centered clipping (Karimireddy, He, Jaggi, ICML 2021, eq. 2): v <- v + mean_i (x_i - v) min(1,
    tau / ||x_i - v||), from the coordinate median, tau the median distance (our rule's tau = 0)."""
    v = np.median(X, axis=0)
    for _ in range(iterations):
        diff = X - v
        dist = np.linalg.norm(diff, axis=1)
        tau = np.median(dist)
        v = v + (np.minimum(1.0, tau / np.maximum(dist, 1e-30))[:, None] * diff).mean(axis=0)
    return np.asarray(v, dtype=np.float32)


def _robust_level(values: np.ndarray, z: float) -> float:
    """median - z x 1.4826 MAD: the level of every test of the guarded rule."""
    center = float(np.median(values))
    return center - z * 1.4826 * float(np.median(np.abs(values - center)))


def _reference_level(values: np.ndarray, z: float = 2.0, floor_z: float = 3.0) -> float:
    """The guarded rule's reference level: min(0, max(its robust level, the upper half's floor)), the floor
    min(0, m) - (Phi^-1(0.75) + floor_z) / sqrt(1 - 2 / pi) x s over the upper half's median m and its
    (n - 1) standard deviation s (no floor with fewer than three values there)."""
    if not values.size:
        return 0.0
    top = np.sort(values)[values.size // 2 :]
    floor = -np.inf
    if top.size >= 3:
        floor = min(0.0, float(np.median(top))) - (0.6744897501960817 + floor_z) / 0.6028102749890869 * float(
            np.std(top, ddof=1)
        )
    return min(0.0, max(_robust_level(values, z), floor))


def _medians_without_self(cos: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """For each of ``rows``, the median of its cosines to ``columns`` other than itself."""
    out = np.empty(rows.size)
    inside = np.isin(rows, columns)
    if inside.any():  # rows among the columns: their own column left out of a square block
        k = columns.size
        block = cos[np.ix_(rows[inside], columns)]
        same = rows[inside][:, None] == columns[None, :]
        out[inside] = np.median(block[~same].reshape(-1, k - 1), axis=1)
    if (~inside).any():
        out[~inside] = np.median(cos[np.ix_(rows[~inside], columns)], axis=1)
    return out


def numpy_guarded(
    X: np.ndarray, g0: np.ndarray, reputation: np.ndarray, unearned: float, power: float, z: float = 2.0
) -> np.ndarray:
    """The guarded default as the close builds it, from its docstrings (aggregator/strategies/
    fltrust_guarded.py, standing.py): standing min(1, r / 50), at most (r - u) / (median r - u) once the
    median reputation is above u (what timeliness and honesty alone give); the crowd the rows of standing
    >= 0.5 (every row when fewer than three or all). Among the crowd: the centre test (median cosine to the
    other crowd rows not below their median by more than z robust spreads), or the judges' test (the rows
    of full standing: median cosine to the other judges not below the judges' own median of those by more
    than z robust spreads), then the reference test (cosine to g_0 above min(0, max(median - z robust
    spreads, the upper half's floor)) of the centre passers' cosines). The passers weigh their standing to
    the ``power``, each clipped to the median norm of the reference test's passers."""
    n = X.shape[0]
    r = np.asarray(reputation, dtype=np.float64)
    grade = np.clip(r / 50.0, 0.0, 1.0)
    middle = float(np.median(r))
    if middle > unearned:
        grade = np.minimum(grade, np.clip((r - unearned) / (middle - unearned), 0.0, 1.0))
    crowd = grade >= 0.5
    if not 3 <= int(crowd.sum()) < n:
        crowd = np.ones(n, dtype=bool)
    norms = np.linalg.norm(X, axis=1).astype(np.float64)
    cos_ref = (X @ g0) / (norms * np.linalg.norm(g0))
    cos = (X @ X.T) / np.outer(norms, norms)
    members = np.flatnonzero(crowd)
    peers = _medians_without_self(cos, members, members)
    by_center = np.zeros(n, dtype=bool)
    by_center[members] = peers >= _robust_level(peers, z)
    judges = np.flatnonzero(crowd & (grade >= 1.0))
    if 3 <= judges.size < members.size:
        to_judges = _medians_without_self(cos, members, judges)
        level = _robust_level(to_judges[np.isin(members, judges)], z)
        by_center[members] |= to_judges >= level
    by_reference = crowd & (cos_ref > _reference_level(cos_ref[by_center], z))
    clip = np.median(norms[by_reference])
    passed = by_center & by_reference
    weight = np.where(passed, grade**power, 0.0)
    c = weight / weight.sum() * np.minimum(1.0, clip / norms)
    return np.asarray(c.astype(np.float32) @ X, dtype=np.float32)


# The paper's rule, where the registered one is that rule (the guarded default is its own entry).
NUMPY_REFERENCES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "fltrust": lambda X, g0, rep: numpy_fltrust(X, g0),
    "fltrust_guarded": lambda X, g0, rep: numpy_guarded(
        X, g0, rep, 100.0 * (1.0 - genesis_real("weight_quality")), fltrust_guarded.STANDING_POWER
    ),
    "centered_clip": lambda X, g0, rep: numpy_centered_clip(X),
}


def numpy_call(name: str, X: np.ndarray, g0: np.ndarray, rep: np.ndarray) -> Callable[[], np.ndarray] | None:
    rule = NUMPY_REFERENCES.get(name)
    return None if rule is None else partial(rule, X, g0, rep)


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


def compile_kernels(names: list[str]) -> float:
    """Run every strategy once on a small matrix, so that numba compiles (or loads from its cache) the
    kernels before any timing: a one-off cost per process, not per call. Returns the seconds it took."""
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for n in (11, 23):  # odd and even counts take the same kernels; two sizes exercise both
        X = rng.standard_normal((n, 1000), dtype=np.float32)
        g0 = reference_update(X, rng)
        for name in names:
            ours(name, X, (n - 3) // 4, reputations(n, rng), g0)()
    return time.perf_counter() - start


def busy_loop() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def summary(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0] * 1e3:,.1f} (1 run)"
    return f"{statistics.median(times) * 1e3:,.1f} [{min(times) * 1e3:,.1f}-{max(times) * 1e3:,.1f}]"


def reputations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Reputations as a federation's after some rounds, spread from 50 to 100: the default's earned
    standing (above what timeliness and honesty alone give, 60 at genesis) then leaves about a third of
    the rows out of its crowd and makes about half of them judges, so every stage of the rule runs."""
    return rng.uniform(50, 100, size=n)


# What a contender's time is: wall-clock time, or the CPU time of this process (all its threads).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def run_cell(
    contenders: dict[str, Callable[[], object]], repeats: int, budget: float, clock: Callable[[], float]
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Warm every contender up once (keeping its output), then time them interleaved; one slower than
    ``budget`` seconds in its warm-up is timed by that run alone."""
    times: dict[str, list[float]] = {}
    outputs: dict[str, object] = {}
    repeated = []
    for name, call in contenders.items():
        start = clock()
        outputs[name] = call()
        elapsed = clock() - start
        if elapsed > budget:
            times[name] = [elapsed]
        else:
            times[name] = []
            repeated.append(name)
    for _ in range(repeats):
        for name in repeated:
            call = contenders[name]
            start = clock()
            call()
            times[name].append(clock() - start)
    return times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="n in {10, 50}, d = 100K only")
    parser.add_argument("--ns", default="10,50,100", help="client counts n, comma-separated")
    parser.add_argument("--ds", default="100000,1000000", help="parameter counts d, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--background", type=int, default=0, help="busy processes to run alongside")
    parser.add_argument("--peer-budget", type=float, default=10.0, help="seconds; see the module docstring")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process and its threads (see the module docstring)",
    )
    args = parser.parse_args()

    ns = [10, 50] if args.quick else [int(n) for n in args.ns.split(",")]
    ds = [100_000] if args.quick else [int(d) for d in args.ds.split(",")]
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
            compiled = compile_kernels(names)
            print(
                f"# numpy {np.__version__}; numba {numba_version()}; "
                f"flwr {'absent' if flwr is None else flwr.__version__}; "
                f"qora-fl {'absent' if qora is None else 'present'}; BLAS {blas}; "
                f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
                f"{args.background} busy background processes; {args.clock} clock; "
                f"{args.repeats} interleaved runs after a "
                f"warm-up; load average at start {os.getloadavg()[0]:.2f}"
            )
            print(
                f"# compiled kernels loaded or compiled before timing in {compiled:.1f} s (once per process)"
            )
            print()
            print(
                "| strategy | n | d | fedledger ms | Flower ms | qora-fl ms | NumPy ref ms | floor ms "
                "| faster peer / ours | ours / floor | = peer | load |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |")
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
        rep = reputations(n, rng)
        for d in ds:
            X = rng.standard_normal((n, d), dtype=np.float32)
            g0 = reference_update(X, rng)
            for name in names:
                contenders: dict[str, Callable[[], object]] = {"ours": ours(name, X, f, rep, g0)}
                reference = numpy_call(name, X, g0, rep)
                if reference is not None:
                    contenders["numpy"] = reference
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
                    contenders["floor"] = partial(np.sum, X[: n - 2 * f] if name == BULYAN_COLUMNS else X)
                times, outputs = run_cell(contenders, args.repeats, args.peer_budget, CLOCKS[args.clock])
                for peer in ("flower", "qora"):
                    if peer in times and len(times[peer]) == 1 and d == 100_000:
                        slow_peers[(peer, name, n)] = times[peer][0]
                med = {k: statistics.median(v) for k, v in times.items()}
                cells = {k: summary(v) for k, v in times.items()}
                for peer, seconds in extrapolated.items():
                    med[peer] = seconds
                    cells[peer] = f"~{seconds * 1e3:,.0f}"
                peers = [med[p] for p in PEERS if p in med]
                measured = [med[p] for p in PEERS if p in times and len(times[p]) > 1]
                ratio = min(peers) / med["ours"] if peers else None
                if measured and min(measured) / med["ours"] < 2.0:
                    failing.append(f"{name} n={n} d={d:,}: {min(measured) / med['ours']:.1f}x")
                over = med["ours"] / med["floor"] if "floor" in med else None
                if over is not None and over > 5.0:
                    floor_misses.append(f"{name} n={n} d={d:,}: {over:.1f}x")
                compared = next((p for p in ("flower", "numpy") if p in outputs), None)
                same = (
                    "n/a" if compared is None else agrees(name, outputs["ours"], outputs[compared], X)  # type: ignore[arg-type]
                )
                print(
                    f"| {name} | {n} | {d:,} | {cells['ours']} | {cells.get('flower', 'n/a')} "
                    f"| {cells.get('qora', 'n/a')} | {cells.get('numpy', 'n/a')} | {cells.get('floor', '')} "
                    f"| {'n/a' if ratio is None else f'{ratio:,.1f}x'} "
                    f"| {'' if over is None else f'{over:,.1f}x'} | {same} | {os.getloadavg()[0]:.2f} |",
                    flush=True,
                )
    print()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print(
        f"# cells below 2x the fastest measured peer: {len(failing)}" + "".join(f"\n#   {c}" for c in failing)
    )
    print(f"# coordinate-wise cells above 5x the floor: {len(floor_misses)}")
    for cell in floor_misses:
        print(f"#   {cell}")


if __name__ == "__main__":
    main()
