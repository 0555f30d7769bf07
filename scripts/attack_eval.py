#!/usr/bin/env python3
"""Accuracy of fedledger's aggregation strategies when 3 of 10 federated clients are Byzantine.

    .venv/bin/python scripts/attack_eval.py                 # full run: 3 seeds x 30 rounds
    .venv/bin/python scripts/attack_eval.py --quick         # smoke run: 1 seed x 8 rounds
    .venv/bin/python scripts/attack_eval.py --seeds 0 1 --rounds 20

Task: scikit-learn's bundled digits (8x8 images, 10 classes; no download), features standardized on the
training split, a stratified 25% test split. Model: multinomial softmax regression (64x10 weights + 10
biases = 650 parameters) in NumPy. Each round every client runs a few epochs of mini-batch SGD from the
global model on its own shard and sends its delta (local - global); the server applies
global += aggregate(deltas) with the strategy under test, through ``aggregator.robust.aggregate``.

10 clients, shards IID or Dirichlet(alpha=0.5) non-IID over labels; 3 clients (drawn per seed) attack:

- ``none``: they behave honestly (the attack-free baseline).
- ``scaling``: 100 x the honest delta they computed (model replacement / boosting).
- ``signflip``: -4 x their honest delta. -1 x would merely cancel honest work; -4 x is strong enough
  to reverse a plain mean (0.7 - 0.3 x 4 < 0) without being trivially far from the honest cloud.
- ``noise``: pure Gaussian noise, per-coordinate std = 10 x the RMS coordinate of the attacker's own
  honest delta (so the noise's norm is ~10 x an honest delta's norm, whatever the round).
- ``labelflip``: they train honestly on labels y -> 9 - y.
- ``alie``: "A Little Is Enough" (Baruch et al., NeurIPS 2019), omniscient variant: all attackers send
  mean - z * std of the 7 honest deltas, coordinate-wise (population std), with the paper's
  s = floor(n/2 + 1) - f and z = Phi^-1((n - s) / n), i.e. z = Phi^-1(0.7) = 0.524 for n=10, f=3.

Strategies: fedavg (sample-count weights), trimmed_mean(beta=0.2, the platform default), median,
krum(f=3), multi_krum(f=3, m=n-f=7, sample-count weights), bulyan(f=1): Bulyan needs n >= 4f + 3, so
with n = 10 the largest valid f is 1 and Bulyan runs below the true number of attackers (3). One
diagnostic row, ``trimmed_mean(beta=0.3)``, is not a separate strategy: the default beta = 0.2 trims
floor(0.2 x 10) = 2 clients per side, fewer than the 3 attackers, and beta = 0.3 = f/n shows what that
costs. The reputation-weighted mean is left out: its outcome depends on a reputation-update rule, which is
not part of the numeric core.

All clients report their true sample counts (a lying attacker would only make fedavg worse).
Everything is seeded: one ``numpy.random.Generator`` per (seed, purpose, round, client), derived from
integers only, so results do not depend on the order experiments run in, and two runs print the same
tables. Output: one Markdown table per partition (mean test accuracy over the seeds, in %) and the worst
drop of the default strategy against its attack-free run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import robust  # noqa: E402

N_CLIENTS = 10
N_ATTACKERS = 3
N_CLASSES = 10
N_FEATURES = 64
N_PARAMS = N_FEATURES * N_CLASSES + N_CLASSES
TEST_FRACTION = 0.25
DIRICHLET_ALPHA = 0.5
# Non-IID shards are redrawn until every client holds at least this many training samples.
MIN_CLIENT_SAMPLES = 10
DEFAULT_STRATEGY = "trimmed_mean"

PARTITIONS = ("iid", "dirichlet")
ATTACKS = ("none", "scaling", "signflip", "noise", "labelflip", "alie")
# Row label -> (name in aggregator.robust, fixed parameters); "weights" is filled with the sample counts.
# Read-only: the evaluation has no mutable module state.
STRATEGY_SPECS: MappingProxyType[str, tuple[str, dict[str, object]]] = MappingProxyType(
    {
        "fedavg": ("fedavg", {"weights": None}),
        "trimmed_mean": ("trimmed_mean", {"beta": 0.2}),
        "median": ("median", {}),
        "krum": ("krum", {"f": N_ATTACKERS}),
        "multi_krum": ("multi_krum", {"f": N_ATTACKERS, "weights": None}),
        # n = 10 >= 4f + 3 only for f <= 1.
        "bulyan": ("bulyan", {"f": 1}),
        # Diagnostic: beta = f/n, so floor(beta n) = f clients are trimmed from each end.
        "trimmed_mean(beta=0.3)": ("trimmed_mean", {"beta": 0.3}),
    }
)
STRATEGIES = tuple(STRATEGY_SPECS)

SCALING_FACTOR = 100.0
SIGNFLIP_FACTOR = -4.0
NOISE_RMS_MULTIPLE = 10.0

# Purposes of the random streams; a stream is seeded by (seed, purpose, ...) integers only.
STREAM_PARTITION, STREAM_ATTACKERS, STREAM_TRAIN, STREAM_NOISE = 1, 2, 3, 4


@dataclass(frozen=True)
class TrainConfig:
    """Local SGD of one client in one round. Chosen so the attack-free run converges in ~30 rounds."""

    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05


@dataclass(frozen=True)
class Federation:
    """Everything fixed for one (seed, partition): data, the clients' shards, and who attacks."""

    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    shards: tuple[np.ndarray, ...]
    attackers: frozenset[int]

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(s) for s in self.shards], dtype=np.float64)


def stream(*key: int) -> np.random.Generator:
    """An independent generator for one purpose; integer keys only, so it is the same in every run."""
    return np.random.default_rng(list(key))


# --- data and partitions -------------------------------------------------------------------------


def load_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits, stratified train/test split, standardized with statistics of the training split only."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=TEST_FRACTION, stratify=digits.target, random_state=seed
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype(np.float32),
        y_train.astype(np.int64),
        scaler.transform(x_test).astype(np.float32),
        y_test.astype(np.int64),
    )


def partition_iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into near-equal shards."""
    return [np.sort(s) for s in np.array_split(rng.permutation(n_samples), n_clients)]


def partition_dirichlet(
    y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator, min_size: int = MIN_CLIENT_SAMPLES
) -> list[np.ndarray]:
    """Label-skewed shards (Hsu et al. 2019): each class is split across clients by Dirichlet(alpha) shares.

    Small alpha can leave a client almost empty, which would make its delta degenerate; the whole draw is
    repeated (same generator, so still deterministic) until every client has ``min_size`` samples.
    """
    classes = np.unique(y)
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].append(part)
        merged = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(s) for s in merged) >= min_size:
            return merged
    raise RuntimeError(f"no Dirichlet({alpha}) partition with >= {min_size} samples per client in 1000 draws")


def make_federation(seed: int, partition: str) -> Federation:
    """Split, shard and pick the attackers of one seed; the attackers do not depend on the partition."""
    x_train, y_train, x_test, y_test = load_split(seed)
    part_rng = stream(seed, STREAM_PARTITION, PARTITIONS.index(partition))
    if partition == "iid":
        shards = partition_iid(len(y_train), N_CLIENTS, part_rng)
    elif partition == "dirichlet":
        shards = partition_dirichlet(y_train, N_CLIENTS, DIRICHLET_ALPHA, part_rng)
    else:
        raise ValueError(f"unknown partition {partition!r}; valid: {', '.join(PARTITIONS)}")
    attackers = stream(seed, STREAM_ATTACKERS).choice(N_CLIENTS, size=N_ATTACKERS, replace=False)
    return Federation(
        seed, x_train, y_train, x_test, y_test, tuple(shards), frozenset(int(a) for a in attackers)
    )


# --- model and local training --------------------------------------------------------------------


def unpack(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views of the flat parameter vector as weights (64, 10) and bias (10,)."""
    return params[: N_FEATURES * N_CLASSES].reshape(N_FEATURES, N_CLASSES), params[N_FEATURES * N_CLASSES :]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax, shifted by the row maximum so huge (attacked) weights do not overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def accuracy(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    w, b = unpack(params)
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def local_train(
    params: np.ndarray, x: np.ndarray, y: np.ndarray, config: TrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """Mini-batch SGD on the cross-entropy from ``params``; returns the new parameters (a copy)."""
    local = params.astype(np.float32, copy=True)
    w, b = unpack(local)
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y]
    for _ in range(config.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            xb = x[batch]
            err = softmax(xb @ w + b) - onehot[batch]
            scale = np.float32(config.lr / len(batch))
            w -= scale * (xb.T @ err)
            b -= scale * err.sum(axis=0)
    return local


# --- attacks -------------------------------------------------------------------------------------


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max: s = floor(n/2 + 1) - f supporters needed, z = Phi^-1((n - s) / n)."""
    s = n // 2 + 1 - f
    return statistics.NormalDist().inv_cdf((n - s) / n)


def alie_delta(honest: np.ndarray, n: int, f: int) -> np.ndarray:
    """mean - z * std of the honest deltas, per coordinate: inside the spread robust rules accept."""
    return (honest.mean(axis=0) - alie_z(n, f) * honest.std(axis=0)).astype(np.float32)


def noise_delta(own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose per-coordinate std is NOISE_RMS_MULTIPLE x the RMS coordinate of ``own``."""
    rms = float(np.sqrt(np.mean(np.square(own, dtype=np.float64))))
    return rng.normal(0.0, NOISE_RMS_MULTIPLE * rms, size=own.shape).astype(np.float32)


def apply_attack(
    attack: str, deltas: np.ndarray, attackers: Sequence[int], seed: int, round_: int
) -> np.ndarray:
    """Replace the attackers' rows of ``deltas`` (computed honestly, or on flipped labels) by what they send."""
    out = deltas.copy()
    if attack in ("none", "labelflip"):
        return out
    honest_rows = [i for i in range(len(deltas)) if i not in set(attackers)]
    for a in attackers:
        if attack == "scaling":
            out[a] = SCALING_FACTOR * deltas[a]
        elif attack == "signflip":
            out[a] = SIGNFLIP_FACTOR * deltas[a]
        elif attack == "noise":
            out[a] = noise_delta(deltas[a], stream(seed, STREAM_NOISE, round_, a))
        elif attack == "alie":
            out[a] = alie_delta(deltas[honest_rows], len(deltas), len(attackers))
        else:
            raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")
    return out


# --- one experiment and the grid -----------------------------------------------------------------


def aggregate_deltas(strategy: str, deltas: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The strategy under test (a row label of STRATEGY_SPECS) with the parameters this evaluation fixes."""
    try:
        name, fixed = STRATEGY_SPECS[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGY_SPECS)}") from None
    params = {key: sizes if key == "weights" else value for key, value in fixed.items()}
    return robust.aggregate(name, deltas, **params)


def run_experiment(
    fed: Federation, attack: str, strategy: str, rounds: int, config: TrainConfig = TrainConfig()
) -> float:
    """Train ``rounds`` federated rounds from a zero model; return the final test accuracy (0..1).

    Local training of client i in round r uses stream (seed, TRAIN, r, i), identical for every strategy
    and attack, so differences between cells come from the attack and the aggregation only.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")
    attackers = sorted(fed.attackers)
    flipped = N_CLASSES - 1 - fed.y_train
    global_params = np.zeros(N_PARAMS, dtype=np.float32)
    deltas = np.empty((N_CLIENTS, N_PARAMS), dtype=np.float32)
    for r in range(rounds):
        for i, shard in enumerate(fed.shards):
            labels = flipped if attack == "labelflip" and i in fed.attackers else fed.y_train
            rng = stream(fed.seed, STREAM_TRAIN, r, i)
            deltas[i] = (
                local_train(global_params, fed.x_train[shard], labels[shard], config, rng) - global_params
            )
        sent = apply_attack(attack, deltas, attackers, fed.seed, r)
        global_params = global_params + aggregate_deltas(strategy, sent, fed.sizes)
    return accuracy(global_params, fed.x_test, fed.y_test)


Results = dict[tuple[str, str, str], list[float]]  # (partition, strategy, attack) -> accuracy per seed


def run_grid(
    seeds: Sequence[int],
    rounds: int,
    partitions: Sequence[str] = PARTITIONS,
    attacks: Sequence[str] = ATTACKS,
    strategies: Sequence[str] = STRATEGIES,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Every (partition, strategy, attack) cell for every seed."""
    results: Results = {}
    for partition in partitions:
        for seed in seeds:
            fed = make_federation(seed, partition)
            for strategy in strategies:
                for attack in attacks:
                    acc = run_experiment(fed, attack, strategy, rounds)
                    results.setdefault((partition, strategy, attack), []).append(acc)
            if progress is not None:
                progress(f"{partition} seed {seed} done")
    return results


# --- report --------------------------------------------------------------------------------------


def mean_pct(values: Sequence[float]) -> float:
    return 100.0 * float(np.mean(values))


def format_table(results: Results, partition: str, attacks: Sequence[str], strategies: Sequence[str]) -> str:
    """Markdown table: rows = strategies, columns = attacks, cells = mean accuracy in % (one decimal)."""
    lines = [
        "| strategy | " + " | ".join(attacks) + " |",
        "| --- | " + " | ".join("---:" for _ in attacks) + " |",
    ]
    for strategy in strategies:
        cells = [f"{mean_pct(results[(partition, strategy, a)]):.1f}" for a in attacks]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_drop(results: Results, partition: str, strategy: str, attacks: Sequence[str]) -> tuple[float, str]:
    """Largest fall, in percentage points of mean accuracy, from the attack-free run; and its attack."""
    base = mean_pct(results[(partition, strategy, "none")])
    drops = {a: base - mean_pct(results[(partition, strategy, a)]) for a in attacks if a != "none"}
    attack = max(drops, key=lambda a: drops[a])
    return drops[attack], attack


def report(
    results: Results, seeds: Sequence[int], rounds: int, attacks: Sequence[str], strategies: Sequence[str]
) -> str:
    partitions = sorted({p for p, _, _ in results}, key=PARTITIONS.index)
    config = TrainConfig()
    out = [
        f"# attack_eval: digits, softmax regression, {N_CLIENTS} clients ({N_ATTACKERS} Byzantine), "
        f"{rounds} rounds, local {config.epochs} epochs of SGD (batch {config.batch_size}, lr {config.lr}), "
        f"seeds {', '.join(map(str, seeds))}; mean test accuracy %",
    ]
    for partition in partitions:
        title = "IID" if partition == "iid" else f"Dirichlet non-IID (alpha = {DIRICHLET_ALPHA})"
        out += ["", f"## {title}", "", format_table(results, partition, attacks, strategies)]
        if "none" in attacks and DEFAULT_STRATEGY in strategies and len(attacks) > 1:
            drop, attack = worst_drop(results, partition, DEFAULT_STRATEGY, attacks)
            out += [
                "",
                f"default strategy ({DEFAULT_STRATEGY}) worst drop vs attack-free: {drop:.1f} points ({attack})",
            ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0 only, 8 rounds")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (0 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 30 (8 with --quick)")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    rounds = args.rounds if args.rounds is not None else (8 if args.quick else 30)
    start = time.perf_counter()
    results = run_grid(seeds, rounds, progress=lambda msg: print(f"[{msg}]", file=sys.stderr, flush=True))
    print(report(results, seeds, rounds, ATTACKS, STRATEGIES))
    # Timing goes to stderr so stdout is byte-identical between runs.
    print(f"[{time.perf_counter() - start:.1f} s]", file=sys.stderr)


if __name__ == "__main__":
    main()
