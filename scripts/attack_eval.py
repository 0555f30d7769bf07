#!/usr/bin/env python3
"""Omniscient Byzantine attacks against fedledger's round computation: accuracy, rewards, detection.

    .venv/bin/python scripts/attack_eval.py                  # full grid (see --help for its size)
    .venv/bin/python scripts/attack_eval.py --quick          # smoke run, used by tests/aggregator
    .venv/bin/python scripts/attack_eval.py --honest         # honest-only runs: false positives, reward spread

Every round goes through ``aggregator.round.compute.compute_round``, the same pure computation a real
round's close runs (strategy -> scores -> evidence -> reputation -> rewards -> rollback decision), with the
contracts' default parameters (``DEFAULT_PARAMS`` below, the parameter table's genesis values) and
only the strategy varied. After each round this script applies what posting does on-chain: Byzantine
counts grow by the round's flags and ``aggregator.scoring.reputation.slashing_decisions`` decides the slashes.

Tasks (no download): ``digits`` (scikit-learn's 8x8 digits, softmax regression, 650 parameters) and
``synthetic`` (scikit-learn ``make_classification``: 10 classes, 2 clusters per class, 20 features, a
non-linear task; one-hidden-layer MLP of 32 units, 1,002 parameters) and ``noisy`` (``make_classification``:
10 classes, 3 clusters per class, 40 features, 5 % random labels; MLP of 64 units, 3,274 parameters) and
``friedman`` (regression as ordinal classification: ``make_friedman1``'s target, 10 features of which 5 matter,
cut at its deciles into 10 classes; MLP of 64 units, 1,354 parameters), or a task of your own:
``--tasks file:path/to/task.npz`` (:func:`task_from_file`: arrays ``X`` and ``y``, optionally the model and its
training as scalars), run exactly as the built-in ones. Data: 25 % test (reported accuracy),
20 % of the rest is the server's holdout, split by ``aggregator.scoring.contribution.split_holdout`` into root data
(the FLTrust reference update is trained on it each round with the clients' own procedure) and
validation data (scores, rollback). Clients share the rest, IID or Dirichlet(0.5) over labels.

A fraction ``BYZANTINE_FRACTION`` (0.3, the governed default) of the n clients attack. Attacks, each
omniscient (it sees every honest update of the round) and implemented from its paper:

- ``none``: attack-free baseline (the "attackers" train honestly).
- ``absent``: the attackers stay away (only the honest organizations train). An attacker withholds its
  data whatever it sends, and no defence can recover that; accuracy of ``absent`` minus accuracy under an
  attack is the attack's *cost* beyond the missing data (the ``cost`` column), ``none`` minus it the
  ``drop``.
- ``alie``: A Little Is Enough (Baruch et al., NeurIPS 2019): mean - z std of the honest updates,
  z = Phi^-1((n - s) / n), s = floor(n / 2 + 1) - f.
- ``ipm_0.5``, ``ipm_100``: inner-product manipulation (Xie et al., UAI 2020): -eps x the honest mean.
- ``minmax_uv``, ``minmax_std``, ``minsum_uv``, ``minsum_std``: Shejwalkar & Houmansadr (NDSS 2021):
  mean + gamma p with p the negative unit mean (uv) or the negative coordinate std (std), gamma the largest
  (binary search) keeping the malicious update's max (Min-Max) or summed squared (Min-Sum) distance to the
  honest updates within the honest updates' own largest.
- ``fang``: Fang et al. (USENIX Security 2020), full-knowledge attack on trimmed mean / median: per
  coordinate, values beyond the honest extreme opposite the direction of change (b = 2).
- ``labelflip``: attackers train honestly on labels y -> C - 1 - y.
- ``adaptive``: platform-aware: each round the attackers try mean + gamma ||mean|| p for p in {-unit mean,
  -std, -sign(mean)} and gamma in a geometric grid, run the REAL round computation on each candidate (with
  the server's own reference and validation data: a white-box attacker), and send the candidate that
  maximises the new model's validation loss among those under which no attacker is flagged and the model
  is not rolled back (or the honest mean if none is).
- ``orthogonal``: knows the reference (Kerckhoffs): u = m (c g + sqrt(1 - c^2) h), g the unit reference, h the
  honest mean's opposite made orthogonal to g, m the honest median norm, c searched each round against the
  real round computation. ``orthogonal_noise``: the same, each attacker adding independent noise so that the
  attackers' pairwise cosine is the honest one (defeats weight sharing among similar rows).
  ``orthogonal_pay``: the same family searched for pay instead of harm (Kerckhoffs: the attacker knows the
  scoring): c in ``PAY_C`` and each attacker's row jittered by independent noise of ``PAY_JITTER`` x its
  norm (0: exact copies; a little: near-copies that are not copies), the candidate under which the
  attackers' total reward is largest sent (no attacker flagged, no rollback).
  ``orthogonal_subset``: the orthogonal family against a part of the crowd only: h the opposite of the mean of
  the k honest updates most aligned with the honest mean (the ones that carry what the crowd shares), made
  orthogonal to g and to every other honest update, so that the other honest rows' cosines to the attackers,
  and their agreement with the aggregate, stay as they were; k a share of ``SUBSET_SHARES`` of the honest
  rows (or all of them, the orthogonal attack) and c in ``SUBSET_C``, searched each round as ``orthogonal``.
  ``orthogonal_subset_noise``: the same directions with each attacker's h mixed with its own noise, a h + b xi_i
  (as ``orthogonal_noise``), a matched to the honest median pairwise cosine or one of ``SUBSET_A``: against
  weights shared among similar rows (fltrust_guarded's ``similar``), which copies cannot pass.
  ``orthogonal_subset_fixed``: the same, each attacker's noise one fixed direction for the whole run
  (projected off g and h each round): fresh noise averages out of a history of updates (FoolsGold on
  histories, the harness's ``foolsgold`` stage), a fixed direction does not.
  ``subset_sleeper``: against standing earned by useful work (fltrust_guarded's ``earned``): each round the
  attackers read the round's reputations (posted on the chain) and send ``orthogonal_subset`` while the
  platform's own :func:`~aggregator.strategies.standing.earned_grade` leaves them at least
  ``SLEEPER_STANDING`` of full weight, else their honest training, which earns it back.
- ``oracle``: the broad white-box search: ALIE scalings, Min-Max gammas, both orthogonal families and a few
  coordinate-search steps, every candidate through the real round computation, the most damaging one the
  platform accepts sent, judged by the new model's loss on the attackers' own data (which nobody trains on).
- ``freeride``: no training, the last public model change resent at the honest median norm.
- ``race``: the race to quorum: the attackers submit a free ride at the round's opening, the honest
  organizations over the window; the platform's own close rule (``CloseRule``) decides whose updates the
  close sees.
- ``countpoison``: count poisoning: the attackers train honestly but claim one sample each (with
  ``--fraction 0.5``, half the wallets).
- ``backdoor``, ``backdoor_boost``, ``backdoor_proj``: trigger + target label (see ``stamp``), plain, boosted to
  the largest factor the platform accepts, or projected to the honest median norm and reference cosine;
  ``backdoor_decor``: projected, each attacker's part orthogonal to the reference mixed with its own noise so
  that the attackers' rows are as mutually unrelated as honest ones (against similarity-based defences).
- ``collapse``: against the evidence, not the model: u = m (c g + sqrt(1 - c^2) h), g the unit reference, c the
  honest rows' median cosine to it, h the honest mean's part orthogonal to g (a benign direction), m the honest
  median norm, each row jittered by independent noise of 1e-3 of its norm. The attackers' cosines sit at the
  round's median and shrink the robust spread the direction evidence's level is read from, so that honest
  organizations below the median become its outliers (docs/benchmarks.md, "the default outside its grid").
  ``collapse_up``: the same rows at the honest cosines' ``COLLAPSE_UP_QUANTILE`` (0.8) quantile instead of their
  median: the placement that narrows the most a spread read from the round's middle and from its upper half
  together (simulated: at n = 10 and 30 % attackers, one value near the honest 0.8 quantile leaves about twice
  as many honest values below the median-less-three-robust-spreads level as one at the median).

Secure aggregation (issue 24): a strategy spelled ``<rule>@secure<s>`` (``fltrust_guarded@secure3``) runs the
same round under the secure mode: each round the present organizations are assigned to groups of at least
``s`` (``fedledger.secagg.groups.assign_tiers``, seeded per round), every coordinate clipped to the
quantizer's range (``SECURE_CLIP``; an attacker's are not: it may put any ring element in its masked input, so
its group's sum reaches k x ``SECURE_CLIP``), and ``aggregator.round.secure.compute_secure_round`` scores,
defends and pays the group means, splitting each group's reward among its members. The group mean is taken in floating
point: the protocol's masking adds at most ``m / (2 scale)`` per coordinate (2e-9 here), far below these
figures. Attacks see and search against that pipeline, as they do against the clear one.

Differential privacy: a strategy suffixed ``:dp=<z>`` (and optionally ``:clip=<C>``, default the governed
``dp_clip_norm``) turns on the governed DP with noise multiplier z and an unlimited budget (the spent epsilon
is reported): ``fltrust_guarded:dp=1`` clips at the server and adds central noise to the aggregate (the clear
mode); ``fltrust_guarded@secure3:dp=1`` has every honest member clip and add its share sigma^2 / t of the
noise before masking (``fedledger.secagg.noise.MemberNoise``, t the group's strict-majority threshold; the
range then holds the noise), the server adding none and charging each round at its worst group.

Reported per (task, partition, n): mean test accuracy over seeds per strategy x attack; for every strategy
the attackers' total reward / the median honest organization's, flagged and slashed attackers (first round),
honest organizations flagged / slashed. Everything is seeded from integers: two runs print the same tables.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import strategies as strategies_package  # noqa: E402
from aggregator.round import rollback  # noqa: E402
from aggregator.round.compute import (  # noqa: E402
    ClientMeta,
    CloseStatus,
    RoundInputs,
    RoundResult,
    compute_round,
)
from aggregator.round.params import RoundParams  # noqa: E402
from aggregator.round.secure import SecureGroup, compute_secure_round, split_noiseless  # noqa: E402
from aggregator.scoring import novelty  # noqa: E402
from aggregator.scoring.contribution import split_holdout  # noqa: E402
from aggregator.scoring.reputation import slashing_decisions  # noqa: E402
from aggregator.strategies import Aggregated, StrategyInputs, fltrust_guarded, targeted  # noqa: E402
from aggregator.strategies.fltrust_guarded import (  # noqa: E402
    CENTER_Z,
    CROWD_REFERENCE_Z,
    FLTrustGuarded,
    Gate,
    _coefficients,
    _robust_level,
    reference_level,
    spread_clip,
)
from aggregator.strategies.standing import earned_grade, unearned_reputation  # noqa: E402
from fedledger.chain import param_table  # noqa: E402
from fedledger.chain import params as chain_params  # noqa: E402
from fedledger.evidence import is_conclusive  # noqa: E402
from fedledger.models import evaluate, init_mlp, init_softmax  # noqa: E402
from fedledger.payload import flatten, unflatten  # noqa: E402
from fedledger.privacy import epsilon_of  # noqa: E402
from fedledger.secagg.groups import assign_tiers  # noqa: E402
from fedledger.secagg.noise import MemberNoise  # noqa: E402

WAD_TOKEN = 10**18
BYZANTINE_FRACTION = 0.3
DIRICHLET_ALPHA = 0.5
TEST_FRACTION = 0.25
SERVER_FRACTION = 0.2
ROOT_FRACTION = 0.5
MIN_CLIENT_SAMPLES = 8
STAKE = 100 * WAD_TOKEN
BIG_HIDDEN = 15_000

TASKS = ("digits", "synthetic", "noisy", "friedman")
# A task of the evaluator's own, spelled ``file:<path>`` wherever a task name goes (:func:`task_from_file`).
TASK_FILE = "file:"
# Scalars a task file may carry besides ``X`` and ``y``: the hidden layer's width (0: softmax regression) and
# the clients' (and the server's) local training.
TASK_FILE_SCALARS = ("hidden", "epochs", "batch_size", "lr")
# Each label of a task file at least this often: the test, server and root splits are stratified by label.
MIN_TASK_FILE_LABEL = 10
PARTITIONS = ("iid", "dirichlet")
ATTACKS = (
    "none",
    "absent",
    "alie",
    "ipm_0.5",
    "ipm_100",
    "minmax_uv",
    "minmax_std",
    "minsum_uv",
    "minsum_std",
    "fang",
    "labelflip",
    "adaptive",
    "orthogonal",
    "orthogonal_noise",
    "orthogonal_pay",
    "orthogonal_subset",
    "orthogonal_subset_noise",
    "orthogonal_subset_fixed",
    "subset_sleeper",
    "oracle",
    "freeride",
    "race",
    "countpoison",
    "backdoor",
    "backdoor_boost",
    "backdoor_proj",
    "backdoor_decor",
    "collapse",
    "collapse_up",
)
# Attacks whose attack success rate (triggered test inputs sent to the target class) is reported.
BACKDOORS = ("backdoor", "backdoor_boost", "backdoor_proj", "backdoor_decor")
BACKDOOR_TARGET = 0
# "fedavg_plain": the sample-weighted mean with no rollback, the attack-free reference of what robustness
# costs (issue 20: the default must stay within 2 points of it when nobody attacks).
STRATEGIES = (
    "fedavg",
    "trimmed_mean",
    "median",
    "multi_krum",
    "centered_clip",
    "fltrust",
    "fltrust_guarded",
    "fedavg_plain",
)
PLAIN = {"fedavg_plain": ("fedavg", {"rollback_threshold": 1e9})}
ROOTS = ("split", "small", "biased")
SMALL_ROOT = 100
DEFAULT_STRATEGY = str(param_table.param("strategy").default)

# The chain's genesis values (the parameter table) as a round's parameter snapshot; only ``strategy`` is
# varied by this script, and the governed Byzantine share is the share of attackers it runs.
DEFAULT_PARAMS: dict[str, Any] = param_table.genesis() | {
    "strategy": DEFAULT_STRATEGY,
    "byzantine_fraction": BYZANTINE_FRACTION,
}

(
    STREAM_SPLIT,
    STREAM_PARTITION,
    STREAM_ATTACKERS,
    STREAM_TRAIN,
    STREAM_ATTACK,
    STREAM_ROUND,
    STREAM_ARRIVAL,
    STREAM_NOISE,
) = range(1, 9)


def stream(*key: int) -> np.random.Generator:
    """An independent generator for one purpose; integer keys only, so it is the same in every run."""
    return np.random.default_rng(list(key))


# --- tasks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05


@dataclass(frozen=True)
class Task:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    root: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    hidden: int  # 0 = softmax regression
    train: TrainConfig
    classes: int = 10
    # Under the ``clamp`` stage: per-feature bounds every input is clamped to (the model's first step).
    bounds: tuple[np.ndarray, np.ndarray] | None = None
    # Under the ``augment`` stage: out-of-range copies per example every honest organization (and the
    # server's reference step) trains on besides its data, labels kept.
    augment: int = 0

    def init_weights(self, seed: int) -> dict[str, np.ndarray]:
        features = self.x_train.shape[1]
        if self.hidden:
            return init_mlp(features, self.hidden, self.classes, stream(seed, 99))
        return init_softmax(features, self.classes)


@lru_cache(maxsize=16)
def load_task(name: str, seed: int, hidden: int | None = None, root: str = "split") -> Task:
    """A task's standardized splits for one seed (train for clients, server root/validation, test).

    ``root``: ``split`` (half the server's holdout), ``small`` (``SMALL_ROOT`` examples of it, stratified)
    or ``biased`` (only the classes 0-4 of it); the validation part is the same in all three.
    """
    from sklearn.datasets import load_digits, make_classification, make_friedman1
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    classes = 10
    if name.startswith(TASK_FILE):
        X, y, width, config = task_from_file(name[len(TASK_FILE) :])
        classes = int(y.max()) + 1
    elif name == "digits":
        data = load_digits()
        X, y, width, config = data.data, data.target, 0, TrainConfig()
    elif name == "synthetic":
        X, y = make_classification(
            n_samples=4000,
            n_features=20,
            n_informative=15,
            n_redundant=2,
            n_classes=10,
            n_clusters_per_class=2,
            class_sep=1.5,
            random_state=1000 + seed,
        )
        width, config = 32, TrainConfig(epochs=2, batch_size=16, lr=0.05)
    elif name == "noisy":
        # A harder task: 3 clusters per class, 40 features, 5 % of labels flipped at random.
        X, y = make_classification(
            n_samples=5000,
            n_features=40,
            n_informative=20,
            n_redundant=5,
            n_classes=10,
            n_clusters_per_class=3,
            class_sep=1.0,
            flip_y=0.05,
            random_state=77 + seed,
        )
        width, config = 64, TrainConfig(epochs=1, batch_size=32, lr=0.1)
    elif name == "friedman":
        # Regression as ordinal classification: Friedman's #1 target (a smooth non-linear function of the
        # first 5 of 10 uniform features, plus noise) cut at its deciles into 10 classes; neighbouring classes
        # overlap, and half the features (the trigger's among them) carry nothing.
        X, target = make_friedman1(n_samples=5000, n_features=10, noise=1.0, random_state=500 + seed)
        y = np.searchsorted(np.quantile(target, np.linspace(0.1, 0.9, 9)), target)
        width, config = 64, TrainConfig(epochs=2, batch_size=16, lr=0.1)
    else:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}, or {TASK_FILE}<path to .npz>")
    width = width if hidden is None else hidden
    x_rest, x_test, y_rest, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    x_clients, x_server, y_clients, y_server = train_test_split(
        x_rest, y_rest, test_size=SERVER_FRACTION, stratify=y_rest, random_state=seed
    )
    scaler = StandardScaler().fit(x_clients)

    def scale(a: np.ndarray) -> np.ndarray:
        return np.asarray(scaler.transform(a), dtype=np.float32)

    server_root, validation = split_holdout(scale(x_server), y_server.astype(np.int64), ROOT_FRACTION, seed)
    if root == "small":
        server_root, _ = split_holdout(*server_root, min(SMALL_ROOT / len(server_root[1]), 0.99), seed)
    elif root == "biased":
        mask = server_root[1] < 5
        server_root = (server_root[0][mask], server_root[1][mask])
    elif root != "split":
        raise ValueError(f"unknown root variant {root!r}; valid: {', '.join(ROOTS)}")
    return Task(
        name,
        scale(x_clients),
        y_clients.astype(np.int64),
        scale(x_test),
        y_test.astype(np.int64),
        server_root,
        validation,
        width,
        config,
        classes,
    )


def task_from_file(path: str) -> tuple[np.ndarray, np.ndarray, int, TrainConfig]:
    """A task of one's own from an ``.npz`` file: ``X`` (examples x features, finite numbers; standardized
    here like the built-in tasks) and ``y`` (integer labels 0 .. k - 1, k >= 2, every label at least
    ``MIN_TASK_FILE_LABEL`` times so that every split can be stratified); optional scalars ``hidden`` (the
    MLP's width, 0 = softmax regression; default 32), ``epochs``, ``batch_size`` and ``lr`` (the local
    training's, :class:`TrainConfig`'s defaults otherwise). The split into clients, root, validation and test
    data, the partitions and every attack are those of the built-in tasks; the backdoor trigger is the last
    ``TRIGGER_FEATURES`` features (``--trigger`` sets its value). Raises ``ValueError`` saying what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"task file {path!r}: not a readable .npz file ({exc})") from exc
    missing = [key for key in ("X", "y") if key not in arrays]
    unknown = sorted(set(arrays) - {"X", "y", *TASK_FILE_SCALARS})
    if missing or unknown:
        raise ValueError(
            f"task file {path!r}: needs arrays X and y (missing: {', '.join(missing) or 'none'}); "
            f"may carry only {', '.join(TASK_FILE_SCALARS)} besides (unknown: {', '.join(unknown) or 'none'})"
        )
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
        raise ValueError(
            f"task file {path!r}: X must be a 2-D array of finite numbers, got {X.dtype} {X.shape}"
        )
    if y.ndim != 1 or y.shape[0] != X.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"task file {path!r}: y must be 1-D integer labels, one per row of X, got {y.dtype} {y.shape}"
        )
    counts = np.bincount(y) if y.size and y.min() >= 0 else np.zeros(0, dtype=np.int64)
    if counts.size < 2 or counts.min() < MIN_TASK_FILE_LABEL:
        raise ValueError(
            f"task file {path!r}: y must hold the labels 0 .. k - 1 (k >= 2), each at least "
            f"{MIN_TASK_FILE_LABEL} times, got counts {counts.tolist() or 'of negative labels'}"
        )
    if X.shape[1] <= TRIGGER_FEATURES:
        raise ValueError(
            f"task file {path!r}: needs more than {TRIGGER_FEATURES} features (the backdoor's trigger)"
        )
    scalars: dict[str, float] = {}
    for key in TASK_FILE_SCALARS:
        if key in arrays:
            value = arrays[key]
            if value.shape != () or not np.isfinite(value) or value < 0 or (key != "hidden" and value <= 0):
                raise ValueError(f"task file {path!r}: {key} must be one finite scalar > 0 (hidden >= 0)")
            scalars[key] = float(value)
    defaults = TrainConfig()
    config = TrainConfig(
        epochs=int(scalars.get("epochs", defaults.epochs)),
        batch_size=int(scalars.get("batch_size", defaults.batch_size)),
        lr=scalars.get("lr", defaults.lr),
    )
    return X.astype(np.float64), y.astype(np.int64), int(scalars.get("hidden", 32)), config


def train_local(
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Mini-batch SGD on the cross-entropy of the softmax or MLP family (fedledger.models' tensors)."""
    w = {k: v.astype(np.float32, copy=True) for k, v in weights.items()}
    classes = (w["output.bias"] if "output.bias" in w else w["dense.bias"]).shape[0]
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(config.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), config.batch_size):
            b = order[start : start + config.batch_size]
            xb = x[b]
            scale = np.float32(config.lr / len(b))
            if "dense.weight" in w:
                z = xb @ w["dense.weight"] + w["dense.bias"]
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                g = p - onehot[b]
                w["dense.weight"] -= scale * (xb.T @ g)
                w["dense.bias"] -= scale * g.sum(axis=0)
            else:
                pre = xb @ w["hidden.weight"] + w["hidden.bias"]
                h = np.maximum(pre, 0.0)
                z = h @ w["output.weight"] + w["output.bias"]
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                g = p - onehot[b]
                gh = (g @ w["output.weight"].T) * (pre > 0)
                w["output.weight"] -= scale * (h.T @ g)
                w["output.bias"] -= scale * g.sum(axis=0)
                w["hidden.weight"] -= scale * (xb.T @ gh)
                w["hidden.bias"] -= scale * gh.sum(axis=0)
    return w


# --- federation ------------------------------------------------------------------------------------


def partition_iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(s) for s in np.array_split(rng.permutation(n_samples), n_clients)]


def partition_dirichlet(
    y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator, min_size: int = MIN_CLIENT_SAMPLES
) -> list[np.ndarray]:
    """Label-skewed shards (Hsu et al. 2019), redrawn until every client has ``min_size`` samples."""
    for _ in range(1000):
        shards: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha)))[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].append(part)
        merged = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(s) for s in merged) >= min_size:
            return merged
    raise RuntimeError(f"no Dirichlet({alpha}) partition with >= {min_size} samples per client")


@dataclass(frozen=True)
class Federation:
    task: Task
    seed: int
    n: int
    shards: tuple[np.ndarray, ...]
    attackers: tuple[int, ...]

    @property
    def honest(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n) if i not in self.attackers)


def make_federation(
    task: Task,
    seed: int,
    n: int,
    partition: str,
    alpha: float = DIRICHLET_ALPHA,
    fraction: float = BYZANTINE_FRACTION,
) -> Federation:
    rng = stream(seed, STREAM_PARTITION, n, int(alpha * 100) if partition == "dirichlet" else 0)
    if partition == "iid":
        shards = partition_iid(len(task.y_train), n, rng)
    elif partition == "dirichlet":
        shards = partition_dirichlet(task.y_train, n, alpha, rng)
    else:
        raise ValueError(f"unknown partition {partition!r}; valid: {', '.join(PARTITIONS)}")
    f = int(np.floor(fraction * n + 1e-9))
    attackers = stream(seed, STREAM_ATTACKERS, n).choice(n, size=f, replace=False)
    return Federation(task, seed, n, tuple(shards), tuple(sorted(int(a) for a in attackers)))


# --- attacks ---------------------------------------------------------------------------------------


@dataclass
class AttackContext:
    """What an omniscient attacker sees in one round."""

    honest: np.ndarray  # (h, d) the honest clients' updates this round
    own: np.ndarray  # (f, d) what the attackers' own honest training produced
    n: int
    rng: np.random.Generator
    # Runs the real round computation with the attackers' rows replaced by the given (f, d) matrix.
    trial: Callable[[np.ndarray], RoundResult]
    attacker_rows: tuple[int, ...]
    # Kerckhoffs: the server's reference update of this round (the root data and the code are public).
    reference: np.ndarray | None = None
    # The last public change of the global model (None before the first accepted round).
    last_change: np.ndarray | None = None
    # How much a round's result hurts the attackers' goal, higher is worse for the federation (``oracle``
    # judges candidates by it): the new model's loss on the attackers' own data, which nobody trains on.
    damage: Callable[[RoundResult], float] | None = None
    # The reputation the close reads for each organization in the round (public on the chain), by index.
    reputation: Mapping[int, float] | None = None


def _accepted(ctx: AttackContext, rows: np.ndarray) -> RoundResult | None:
    """The round's result if the platform aggregates and keeps it with no attacker flagged, else None."""
    result = ctx.trial(rows)
    if result.status != CloseStatus.aggregated or not result.activate:
        return None
    if {c.participant_id for c in result.clients if c.byzantine} & set(ctx.attacker_rows):
        return None
    return result


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _honest_norm(ctx: AttackContext) -> float:
    return float(np.median(np.linalg.norm(ctx.honest.astype(np.float64), axis=1)))


ORTHOGONAL_C = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8)


# orthogonal_subset_fixed: attacker i's noise direction for the whole run, from this seed plus i.
FIXED_NOISE_SEED = 1000


def _reference_and_push(ctx: AttackContext) -> tuple[np.ndarray, np.ndarray]:
    """(g, h): the unit reference and the unit opposite of the honest mean made orthogonal to it."""
    assert ctx.reference is not None
    g = _unit(ctx.reference)
    mean = ctx.honest.mean(axis=0, dtype=np.float64)
    return g, _unit(-mean + float(mean @ g) * g)


def _peer_share(peer_cosine: float, c: float) -> float:
    """The share a of the push beside each attacker's noise that gives two attackers' rows at cosine ``c``
    to the reference the pairwise cosine c^2 + (1 - c^2) a^2 = ``peer_cosine`` (clipped to [0, 1])."""
    s2 = max(1.0 - c * c, 0.0)
    return float(np.sqrt(np.clip((peer_cosine - c * c) / max(s2, 1e-12), 0.0, 1.0)))


def _pushed_rows(
    ctx: AttackContext,
    g: np.ndarray,
    h: np.ndarray,
    m: float,
    c: float,
    a: float | None = None,
    fixed: bool = False,
) -> np.ndarray:
    """The attackers' rows m (c g + sqrt(1 - c^2) h), identical copies with ``a`` None; otherwise h mixed with
    each attacker's own unit noise xi_i (orthogonal to g and h) as a h + b xi_i, a^2 + b^2 = 1: fresh from
    ``ctx.rng``, or with ``fixed`` attacker i's one direction for the whole run (``FIXED_NOISE_SEED`` + i)."""
    f = ctx.own.shape[0]
    s = np.sqrt(max(1.0 - c * c, 0.0))
    if a is None:
        return _repeat(m * (c * g + s * h), f)
    b = np.sqrt(1.0 - a * a)
    rows = np.empty((f, g.size), dtype=np.float32)
    for i in range(f):
        xi = (
            np.random.default_rng(FIXED_NOISE_SEED + i).standard_normal(g.size)
            if fixed
            else ctx.rng.standard_normal(g.size)
        )
        xi -= float(xi @ g) * g + float(xi @ h) * h
        rows[i] = m * (c * g + s * (a * h + b * _unit(xi)))
    return rows


def _orthogonal_rows(ctx: AttackContext, c: float, peer_cosine: float | None = None) -> np.ndarray:
    """The orthogonal family's rows at cosine ``c`` to the reference: u = m (c g + sqrt(1 - c^2) h) for every
    attacker; with ``peer_cosine``, each attacker's h is mixed with its own independent unit noise xi_i
    (orthogonal to g and h) as a h + b xi_i, a^2 + b^2 = 1, so that two attackers' rows have cosine
    c^2 + (1 - c^2) a^2 = ``peer_cosine``: they look as mutually unrelated as honest updates do, which
    defeats weight sharing among similar rows (FoolsGold-style) while keeping the shared push a h."""
    g, h = _reference_and_push(ctx)
    a = None if peer_cosine is None else _peer_share(peer_cosine, c)
    return _pushed_rows(ctx, g, h, _honest_norm(ctx), c, a)


def _peer_cosine(ctx: AttackContext) -> float:
    """The honest updates' median pairwise cosine this round (what ``orthogonal_noise`` imitates)."""
    H = ctx.honest.astype(np.float64)
    U = H / np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-30)
    cos = U @ U.T
    return float(np.median(cos[~np.eye(len(U), dtype=bool)])) if len(U) > 1 else 0.0


def _most_damaging(
    ctx: AttackContext, candidates: Sequence[np.ndarray], damage: Callable[[RoundResult], float]
) -> tuple[np.ndarray | None, float]:
    """The candidate the platform accepts (:func:`_accepted`) that maximises ``damage``, and its damage."""
    best, best_damage = None, -np.inf
    for candidate in candidates:
        result = _accepted(ctx, candidate)
        if result is not None and (value := damage(result)) > best_damage:
            best, best_damage = candidate, value
    return best, best_damage


def _validation_loss(result: RoundResult) -> float:
    assert result.record is not None
    return result.record.holdout_loss_after


# The collapse attack's per-row noise, a share of the row's norm: rows that are not copies of one another.
COLLAPSE_JITTER = 1e-3


# collapse_up: the honest cosines' quantile the attackers sit at.
COLLAPSE_UP_QUANTILE = 0.8


def spread_collapse(ctx: AttackContext, quantile: float = 0.5) -> np.ndarray:
    """Rows at the honest cosines' ``quantile`` (the median by default) to the reference, along the honest
    mean's part orthogonal to it, at the honest median norm, each jittered by independent noise of
    ``COLLAPSE_JITTER`` of its norm (see the module docstring's ``collapse`` and ``collapse_up``)."""
    assert ctx.reference is not None
    g = _unit(ctx.reference)
    H = ctx.honest.astype(np.float64)
    norms = np.linalg.norm(H, axis=1)
    cosines = (H @ g) / np.maximum(norms, 1e-30)
    c = float(np.median(cosines) if quantile == 0.5 else np.quantile(cosines, quantile))
    mean = H.mean(axis=0)
    h = _unit(mean - float(mean @ g) * g)
    m = _honest_norm(ctx)
    u = m * (c * g + np.sqrt(max(0.0, 1.0 - c * c)) * h)
    f = ctx.own.shape[0]
    jitter = COLLAPSE_JITTER * m * ctx.rng.standard_normal((f, u.size)) / np.sqrt(u.size)
    rows: np.ndarray = (u[None, :] + jitter).astype(np.float32)
    return rows


def orthogonal(ctx: AttackContext, noise: bool = False) -> np.ndarray:
    """u = m (c g + sqrt(1 - c^2) h): g the unit reference, h minus the honest mean made orthogonal to g,
    m the honest median norm; c the most damaging of ``ORTHOGONAL_C`` (new validation loss, the real round
    computation as the oracle) under which no attacker is flagged and the round is not rolled back. With
    ``noise``, the attackers' rows are decorrelated to the honest pairwise cosine (:func:`_orthogonal_rows`)."""
    peer = _peer_cosine(ctx) if noise else None
    candidates = [_orthogonal_rows(ctx, c, peer) for c in ORTHOGONAL_C]
    best, _ = _most_damaging(ctx, candidates, _validation_loss)
    return best if best is not None else _repeat(ctx.honest.mean(axis=0, dtype=np.float64), ctx.own.shape[0])


# orthogonal_subset: the shares of the honest rows it opposes (at least one row each), and its cosines to g.
SUBSET_SHARES = (0.15, 0.3, 0.45, 0.6)
SUBSET_C = (0.1, 0.3)


def subset_direction(honest: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """The unit opposite of the mean of the ``k`` honest rows with the largest cosine to the honest mean,
    made orthogonal to the unit reference ``g`` and to every other honest row (zero if nothing is left)."""
    H = honest.astype(np.float64)
    mean = H.mean(axis=0)
    cosines = (H @ mean) / np.maximum(np.linalg.norm(H, axis=1) * np.linalg.norm(mean), 1e-30)
    order = np.argsort(-cosines, kind="stable")
    target, rest = order[:k], order[k:]
    h = -H[target].mean(axis=0)
    basis, _ = np.linalg.qr(np.vstack([g[None, :], H[rest]]).T)
    return _unit(h - basis @ (basis.T @ h))


def _subset_directions(ctx: AttackContext) -> tuple[np.ndarray, list[np.ndarray]]:
    """(g, the subset family's pushes): the whole honest mean's opposite first, then :func:`subset_direction`
    for each k of ``SUBSET_SHARES`` x the honest rows (at least one, fewer than all)."""
    g, whole = _reference_and_push(ctx)
    h_count = ctx.honest.shape[0]
    sizes = sorted({max(1, round(share * h_count)) for share in SUBSET_SHARES})
    return g, [whole] + [subset_direction(ctx.honest, g, k) for k in sizes if k < h_count]


def orthogonal_subset(ctx: AttackContext) -> np.ndarray:
    """The orthogonal family against the ``k`` most central honest rows only (see the module docstring):
    the most damaging candidate the platform accepts (new validation loss, the real round computation as
    the oracle, as :func:`orthogonal`), the honest mean if none is."""
    g, directions = _subset_directions(ctx)
    m = _honest_norm(ctx)
    candidates = [_pushed_rows(ctx, g, h, m, c) for h in directions for c in SUBSET_C]
    best, _ = _most_damaging(ctx, candidates, _validation_loss)
    return best if best is not None else _repeat(ctx.honest.mean(axis=0, dtype=np.float64), ctx.own.shape[0])


# subset_sleeper: the share of full standing at which the attackers attack (below it they train honestly):
# the most damaging measured (synthetic Dirichlet(0.5), n = 10: 0.5, 0.6, 0.75 cost 4.2, 1.9, 0.7; below
# fltrust_guarded.CROWD_STANDING an attacking row is left out of the round).
SLEEPER_STANDING = 0.5


def attacker_standing(ctx: AttackContext) -> float:
    """The attackers' mean standing this round under the platform's :func:`earned_grade` (the reputations
    the close reads, ``ctx.reputation``: public on the chain)."""
    if ctx.reputation is None:
        raise ValueError("attacker_standing needs the round's reputations (AttackContext.reputation)")
    members = list(ctx.reputation)
    reputation = np.array([ctx.reputation[i] for i in members], dtype=np.float64)
    ours = [k for k, i in enumerate(members) if i in ctx.attacker_rows]
    unearned = unearned_reputation(float(DEFAULT_PARAMS["weight_quality"]))
    return float(earned_grade(reputation, unearned)[ours].mean()) if ours else 0.0


def subset_sleeper(ctx: AttackContext) -> np.ndarray:
    """:func:`orthogonal_subset` while the attackers' standing (:func:`attacker_standing`) is at least
    ``SLEEPER_STANDING``, else their own honest rows (see the module docstring)."""
    return orthogonal_subset(ctx) if attacker_standing(ctx) >= SLEEPER_STANDING else ctx.own


# orthogonal_subset_noise: the share a of each attacker's h beside its own noise (None: matched to the honest
# median pairwise cosine, as orthogonal_noise; 0.71: the most push a similarity-shared weight leaves).
SUBSET_A = (None, 0.5, 0.71)


def orthogonal_subset_noise(ctx: AttackContext, fixed: bool = False) -> np.ndarray:
    """:func:`orthogonal_subset`'s directions (the whole honest mean's opposite first), each attacker's h
    mixed with its own unit noise xi_i (orthogonal to g and h) as a h + b xi_i, a^2 + b^2 = 1, a of
    ``SUBSET_A``: the most damaging candidate the platform accepts, the honest mean if none is. ``fixed``:
    xi_i is attacker i's one direction for the whole run (``FIXED_NOISE_SEED`` + i), projected off g and h,
    instead of fresh noise each round."""
    g, directions = _subset_directions(ctx)
    m = _honest_norm(ctx)
    peer = _peer_cosine(ctx)
    candidates = [
        _pushed_rows(ctx, g, h, m, c, _peer_share(peer, c) if share is None else share, fixed)
        for h in directions
        for c in SUBSET_C
        for share in SUBSET_A
    ]
    best, _ = _most_damaging(ctx, candidates, _validation_loss)
    return best if best is not None else _repeat(ctx.honest.mean(axis=0, dtype=np.float64), ctx.own.shape[0])


PAY_C = (0.05, 0.2, 0.5)
PAY_JITTER = (0.0, 0.01, 0.1, 0.3)


def orthogonal_pay(ctx: AttackContext) -> np.ndarray:
    """The orthogonal family searched for the attackers' own pay (see the module docstring): at each c of
    ``PAY_C`` and jitter of ``PAY_JITTER``, each attacker's row plus independent noise (orthogonal to the
    reference) of that fraction of its norm, rescaled to the honest median norm; the candidate the platform
    accepts with the largest total attacker reward is sent (the honest mean if none is)."""
    f = ctx.own.shape[0]
    assert ctx.reference is not None
    g = _unit(ctx.reference)
    m = _honest_norm(ctx)
    candidates = []
    for c in PAY_C:
        base = _orthogonal_rows(ctx, c).astype(np.float64)
        for jitter in PAY_JITTER:
            rows = base.copy()
            if jitter > 0:
                for i in range(f):
                    xi = ctx.rng.standard_normal(g.size)
                    xi -= float(xi @ g) * g
                    rows[i] += jitter * m * _unit(xi)
                    rows[i] *= m / max(float(np.linalg.norm(rows[i])), 1e-30)
            candidates.append(rows.astype(np.float32))
    attackers = set(ctx.attacker_rows)

    def pay(result: RoundResult) -> float:
        return float(sum(c.reward_wei for c in result.clients if c.participant_id in attackers))

    best, _ = _most_damaging(ctx, candidates, pay)
    return best if best is not None else _repeat(ctx.honest.mean(axis=0, dtype=np.float64), f)


ALIE_SCALES = (0.5, 1.0, 2.0, 4.0)
MINMAX_SCALES = (0.5, 1.0, 2.0)
ORACLE_C = (0.05, 0.15, 0.3, 0.5)
COORDINATE_STEPS = 4
COORDINATE_BLOCK = 0.1


def oracle(ctx: AttackContext) -> np.ndarray:
    """The broad white-box search (issue 20 item 7): ALIE at ``ALIE_SCALES`` x its z, Min-Max (uv and std)
    at ``MINMAX_SCALES`` x its largest gamma, the orthogonal family and its decorrelated variant at
    ``ORACLE_C``, then ``COORDINATE_STEPS`` coordinate-search steps from the best (a random tenth of the
    coordinates pushed against the honest mean by half the row's typical magnitude, kept if more damaging).
    Every candidate runs through the real round computation; the most damaging one the platform accepts
    (no attacker flagged, no rollback) is sent, judged by ``ctx.damage`` (the attackers' own held-out data,
    not the server's validation set the acceptance test already uses); the honest mean if none is."""
    f = ctx.own.shape[0]
    damage = ctx.damage or _validation_loss
    H = ctx.honest.astype(np.float64)
    mean, std = H.mean(axis=0), H.std(axis=0)
    z = alie_z(ctx.n, f)
    candidates = [_repeat(mean - k * z * std, f) for k in ALIE_SCALES]
    for perturbation in ("uv", "std"):
        p = -mean / max(float(np.linalg.norm(mean)), 1e-12) if perturbation == "uv" else -std
        edge = min_max_min_sum(ctx.honest, perturbation, "minmax").astype(np.float64)
        gamma_p = edge - mean  # gamma p at the largest gamma
        candidates += [_repeat(mean + k * gamma_p, f) for k in MINMAX_SCALES if np.any(p)]
    peer = _peer_cosine(ctx)
    candidates += [_orthogonal_rows(ctx, c) for c in ORACLE_C]
    candidates += [_orthogonal_rows(ctx, c, peer) for c in ORACLE_C]
    best, best_damage = _most_damaging(ctx, candidates, damage)
    if best is None:
        return _repeat(mean, f)
    push = -np.sign(mean)
    for _ in range(COORDINATE_STEPS):
        block = ctx.rng.random(mean.size) < COORDINATE_BLOCK
        magnitude = np.abs(best).mean(axis=0, dtype=np.float64)
        step = np.where(block, 0.5 * float(magnitude.mean()) * push, 0.0)
        candidate = (best + step[None, :]).astype(np.float32)
        found, value = _most_damaging(ctx, [candidate], damage)
        if found is not None and value > best_damage:
            best, best_damage = found, value
    return best


def free_ride(ctx: AttackContext) -> np.ndarray:
    """No training: the last public model change (before any, the server's reference, which the public
    root data gives), scaled to the honest median norm."""
    source = ctx.last_change if ctx.last_change is not None and ctx.last_change.any() else ctx.reference
    assert source is not None
    return _repeat(_honest_norm(ctx) * _unit(source), ctx.own.shape[0])


BOOST_FACTORS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def backdoor_boost(ctx: AttackContext) -> np.ndarray:
    """The backdoored updates scaled by the largest factor the platform accepts (no attacker flagged, no
    rollback); unscaled when none is."""
    best = ctx.own
    for factor in BOOST_FACTORS:
        candidate = (ctx.own * np.float32(factor)).astype(np.float32)
        if _accepted(ctx, candidate) is None:
            break
        best = candidate
    return best


def backdoor_project(ctx: AttackContext) -> np.ndarray:
    """Each backdoored update made to look like the honest crowd: the honest median norm and the honest
    median cosine to the reference, keeping its own direction orthogonal to the reference."""
    assert ctx.reference is not None
    g = _unit(ctx.reference)
    H = ctx.honest.astype(np.float64)
    c = float(np.median(H @ g / np.maximum(np.linalg.norm(H, axis=1), 1e-30)))
    c = float(np.clip(c, -1.0, 1.0))
    m = _honest_norm(ctx)
    rows = []
    for u in ctx.own.astype(np.float64):
        h = _unit(u - float(u @ g) * g)
        rows.append(m * (c * g + np.sqrt(1.0 - c * c) * h))
    return np.asarray(rows, dtype=np.float32)


def backdoor_decorrelated(ctx: AttackContext) -> np.ndarray:
    """:func:`backdoor_project`'s rows with each attacker's part orthogonal to the reference, h_i, mixed with
    its own unit noise xi_i (orthogonal to the reference and to h_i) as a h_i + b xi_i, a^2 + b^2 = 1, a
    chosen so that the attackers' rows have about the honest updates' median pairwise cosine (the way
    ``orthogonal_noise`` hides from FoolsGold-style similarity); the shared backdoor push is a x what it was."""
    assert ctx.reference is not None
    rows = backdoor_project(ctx).astype(np.float64)
    g = _unit(ctx.reference)
    c = float(np.median(rows @ g) / max(float(np.linalg.norm(rows[0])), 1e-30)) if len(rows) else 0.0
    s2 = max(1.0 - c * c, 1e-12)
    H = rows - np.outer(rows @ g, g)
    U = H / np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-30)
    if len(U) < 2:
        return rows.astype(np.float32)
    shared = float(np.mean((U @ U.T)[~np.eye(len(U), dtype=bool)]))
    target = _peer_cosine(ctx)
    a = float(np.sqrt(np.clip((target - c * c) / (s2 * max(shared, 1e-12)), 0.0, 1.0)))
    b = np.sqrt(1.0 - a * a)
    out = np.empty_like(rows)
    for i, (row, h) in enumerate(zip(rows, U, strict=True)):
        xi = ctx.rng.standard_normal(g.size)
        xi -= float(xi @ g) * g + float(xi @ h) * h
        norm = float(np.linalg.norm(row))
        out[i] = norm * (c * g + np.sqrt(s2) * (a * h + b * _unit(xi)))
    return out.astype(np.float32)


def alie_z(n: int, f: int) -> float:
    # With half the organizations or more attacking the paper's s is below 1; it stays 1 (z finite).
    s = max(n // 2 + 1 - f, 1)
    return statistics.NormalDist().inv_cdf((n - s) / n)


def _repeat(v: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(v[None, :].astype(np.float32), f, axis=0)


def _largest_gamma(ok: Callable[[float], bool], start: float = 10.0, steps: int = 25) -> float:
    """Shejwalkar & Houmansadr's search: the largest gamma with ok(gamma), halving steps from ``start``."""
    gamma, step, best = start, start / 2, 0.0
    for _ in range(steps):
        if ok(gamma):
            best = max(best, gamma)
            gamma += step
        else:
            gamma -= step
        step /= 2
    return best


def min_max_min_sum(honest: np.ndarray, perturbation: str, objective: str) -> np.ndarray:
    mean = honest.mean(axis=0, dtype=np.float64)
    if perturbation == "uv":
        p = -mean / max(np.linalg.norm(mean), 1e-12)
    else:
        p = -honest.std(axis=0, dtype=np.float64)
    H = honest.astype(np.float64)
    G = H @ H.T
    sq = np.diag(G)
    pair = np.maximum(sq[:, None] + sq[None, :] - 2 * G, 0.0)
    if objective == "minmax":
        bound = float(np.sqrt(pair.max()))

        def ok(gamma: float) -> bool:
            m = mean + gamma * p
            return float(np.sqrt(((H - m) ** 2).sum(axis=1)).max()) <= bound
    else:
        bound_sum = float(pair.sum(axis=1).max())

        def ok(gamma: float) -> bool:
            m = mean + gamma * p
            return float(((H - m) ** 2).sum()) <= bound_sum

    malicious: np.ndarray = (mean + _largest_gamma(ok) * p).astype(np.float32)
    return malicious


def fang_trim(honest: np.ndarray, f: int, rng: np.random.Generator, b: float = 2.0) -> np.ndarray:
    direction = np.sign(honest.mean(axis=0))
    hi, lo = honest.max(axis=0), honest.min(axis=0)
    # Push each coordinate against its direction of change, beyond the honest extreme on that side.
    up_lo, up_hi = hi, np.where(hi > 0, b * hi, hi / b)
    down_lo, down_hi = np.where(lo > 0, lo / b, b * lo), lo
    u = rng.random((f, honest.shape[1]))
    up = up_lo + u * (up_hi - up_lo)
    down = down_lo + u * (down_hi - down_lo)
    malicious: np.ndarray = np.where(direction < 0, up, down).astype(np.float32)
    return malicious


def adaptive(ctx: AttackContext) -> np.ndarray:
    """Platform-aware search: the most damaging candidate the real round computation does not flag."""
    f = ctx.own.shape[0]
    mean = ctx.honest.mean(axis=0, dtype=np.float64)
    scale = float(np.linalg.norm(mean)) or 1.0
    directions = []
    for p in (-mean, -ctx.honest.std(axis=0, dtype=np.float64), -np.sign(mean)):
        norm = float(np.linalg.norm(p))
        if norm > 0:
            directions.append(p / norm)
    best, best_loss = _repeat(mean, f), -np.inf
    for p in directions:
        for gamma in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
            candidate = _repeat(mean + gamma * scale * p, f)
            result = ctx.trial(candidate)
            if result.status != CloseStatus.aggregated or not result.activate:
                continue
            flagged = {c.participant_id for c in result.clients if c.byzantine}
            if flagged & set(ctx.attacker_rows):
                continue
            assert result.record is not None
            loss = result.record.holdout_loss_after
            if loss > best_loss:
                best, best_loss = candidate, loss
    return best


def craft(attack: str, ctx: AttackContext) -> np.ndarray:
    """The attackers' rows (f, d) for this round."""
    f = ctx.own.shape[0]
    honest = ctx.honest
    if attack in ("none", "labelflip", "backdoor", "countpoison"):
        return ctx.own
    if attack == "backdoor_boost":
        return backdoor_boost(ctx)
    if attack == "backdoor_proj":
        return backdoor_project(ctx)
    if attack == "backdoor_decor":
        return backdoor_decorrelated(ctx)
    if attack == "orthogonal":
        return orthogonal(ctx)
    if attack == "orthogonal_noise":
        return orthogonal(ctx, noise=True)
    if attack == "orthogonal_pay":
        return orthogonal_pay(ctx)
    if attack == "orthogonal_subset":
        return orthogonal_subset(ctx)
    if attack == "orthogonal_subset_noise":
        return orthogonal_subset_noise(ctx)
    if attack == "orthogonal_subset_fixed":
        return orthogonal_subset_noise(ctx, fixed=True)
    if attack == "subset_sleeper":
        return subset_sleeper(ctx)
    if attack == "oracle":
        return oracle(ctx)
    if attack in ("freeride", "race"):
        return free_ride(ctx)
    if attack == "collapse":
        return spread_collapse(ctx)
    if attack == "collapse_up":
        return spread_collapse(ctx, COLLAPSE_UP_QUANTILE)
    if attack == "alie":
        return _repeat(honest.mean(axis=0) - alie_z(ctx.n, f) * honest.std(axis=0), f)
    if attack.startswith("ipm_"):
        return _repeat(-float(attack[4:]) * honest.mean(axis=0), f)
    if attack in ("minmax_uv", "minmax_std", "minsum_uv", "minsum_std"):
        objective, perturbation = attack.split("_")
        return _repeat(min_max_min_sum(honest, perturbation, objective), f)
    if attack == "fang":
        return fang_trim(honest, f, ctx.rng)
    if attack == "adaptive":
        return adaptive(ctx)
    raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    accuracy: float
    attacker_reward: float  # mean over attackers, tokens
    honest_rewards: list[float]
    attacker_first_flag: list[int | None]  # round (1-based) per attacker
    attacker_first_slash: list[int | None]
    honest_flagged: int  # honest organizations flagged at least once
    honest_slashed: int
    rollbacks: int
    failed_rounds: int
    seconds: float = 0.0
    accuracy_by_round: list[float] = field(default_factory=list)
    # Share of triggered test inputs (true class not the target) the final model sends to the target class.
    attack_success: float = 0.0
    # Under DP: the epsilon spent after the last aggregated round (at the governed delta).
    epsilon: float | None = None
    # Under the ``cleanse`` stage: rounds in which Neural Cleanse flagged a class, rows it left out in them.
    cleanse_rounds: int | None = None
    cleanse_target_rounds: int = 0  # of them, rounds in which the flagged class was the backdoor's target
    cleanse_rows_out: int = 0
    # Each attacker's total reward, tokens (``attacker_reward`` is their mean).
    attacker_rewards: list[float] = field(default_factory=list)


TRIGGER_FEATURES = 3
TRIGGER_VALUE = 4.0


def stamp(x: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The backdoor trigger: the last ``TRIGGER_FEATURES`` (standardized) features set to a value far out
    in their distribution (on digits, bright pixels in the bottom-right corner); under the ``clamp`` stage
    the model clamps its inputs first, so the trigger it sees is those features at their upper bound."""
    out = np.array(x, dtype=np.float32, copy=True)
    out[:, -TRIGGER_FEATURES:] = TRIGGER_VALUE
    return out if bounds is None else targeted.clamp_inputs(out, bounds)


def attack_success_rate(weights: dict[str, np.ndarray], task: Task) -> float:
    victims = task.y_test != BACKDOOR_TARGET
    return float(np.mean(_predict(weights, stamp(task.x_test[victims], task.bounds)) == BACKDOOR_TARGET))


def _trial(
    template: RoundInputs,
    attackers: list[int],
    rng_key: tuple[int, ...],
    rows: np.ndarray,
    secure_groups: int | None = None,
    deviating: bool = True,
) -> RoundResult:
    """The real round computation on the round's updates with the attackers' rows replaced by ``rows``
    (in groups of ``secure_groups`` under secure aggregation; ``deviating``: the attackers break the secure
    protocol, skipping the clip and their DP noise, rather than only sending what they trained).

    Every trial uses the same generator seed, so trials differ only in what the attackers send.
    """
    X = template.deltas.copy()
    if attackers:
        X[attackers] = rows
    if secure_groups:
        return _secure_trial(
            replace(template, deltas=X), secure_groups, rng_key, attackers if deviating else []
        )
    return compute_round(replace(template, deltas=X), stream(*rng_key), template.deadline)


# The secure mode's governed quantization range: every coordinate of an update is clipped to it.
SECURE_CLIP = 1.0
# Attacks whose wallets send honestly trained updates (attack-free, count poisoning): they run the secure
# protocol as written, clip and DP noise included; every other attack may break it.
FOLLOW_PROTOCOL = ("none", "countpoison")


def _secure_trial(
    inputs: RoundInputs, group_size: int, rng_key: tuple[int, ...], attackers: Sequence[int]
) -> RoundResult:
    """The round under secure aggregation: groups drawn for the round, their means scored and paid.

    An honest member's update is clipped to the quantizer's range; an attacker need not quantize honestly
    and may put any ring element in its masked input, so its group's decoded sum can be anywhere in the
    ring's signed range, k x ``SECURE_CLIP`` per coordinate for a group of k: the attacker's rows are
    added unclipped and the group's sum is clipped to that range."""
    seed = hashlib.sha256(repr(("groups", *rng_key)).encode()).digest()
    floor = inputs.params.min_reputation
    eligible = [c.address for c in inputs.clients if c.reputation >= floor]
    below = [c.address for c in inputs.clients if c.reputation < floor]
    groups, _ = assign_tiers(seed, eligible, below, group_size)
    row = {c.address.lower(): i for i, c in enumerate(inputs.clients)}
    rows = np.asarray(inputs.deltas, dtype=np.float64)
    honest = np.ones(len(rows), dtype=bool)
    honest[list(attackers)] = False
    dp = inputs.params.dp
    secure = []
    for g in groups:
        members = [row[a.lower()] for a in g]
        threshold = len(members) // 2 + 1
        span = SECURE_CLIP
        group_rows = rows[members].copy()
        if dp is not None:
            # Each honest member clips and adds its share of the group's noise; the group's range holds it.
            noise = MemberNoise.for_group(dp.clip_norm, dp.noise_multiplier, len(members), threshold)
            span = noise.required_range(rows.shape[1])
            for k, i in enumerate(members):
                if honest[i]:
                    group_rows[k] = noise.apply(rows[i], stream(*rng_key, STREAM_NOISE, i))
        honest_in = honest[members]
        group_rows[honest_in] = np.clip(group_rows[honest_in], -span, span)
        reach = len(members) * span
        total = np.clip(group_rows.sum(axis=0), -reach, reach)
        secure.append(
            SecureGroup(
                tuple(inputs.clients[i] for i in members),
                (total / len(members)).astype(np.float32),
                threshold,
            )
        )
    empty = replace(inputs, clients=(), deltas=inputs.deltas[:0])
    # Under DP a group of attackers who all skip their noise is left out, as the close leaves it out.
    secure, _ = split_noiseless(empty, secure)
    return compute_secure_round(empty, secure, stream(*rng_key), inputs.deadline)


class CloseRule:
    """When the platform closes a round and with whose updates: the platform's own rule, not a copy of it.

    ``fedledger.domain.rounds.open_round`` opens each round (quorum, deadline and who counts as active from
    the governed parameters) and every submission runs ``fedledger.domain.pipeline.request_early_close``, the
    statement a submission's transaction runs, on an in-memory SQLite copy of the tables; a round that no
    submission closes early closes at its deadline with what arrived by then.
    """

    def __init__(self, n: int, opened: datetime) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        from db.base import Base
        from db.models import ModelVersion, Participant, ParticipantStatus, ServerKey

        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        self.session = Session(engine)
        self.session.add(ServerKey(kid="k", algorithm="X25519", public_key_pem="", is_current=True))
        self.session.add(ModelVersion(id=1, weights_hash="0" * 64, signature="0x", spec={}))
        for i in range(n):
            self.session.add(
                Participant(
                    id=i + 1,
                    address=f"0x{i + 1:040x}",
                    org_name=f"organization {i}",
                    status=ParticipantStatus.active,
                    created_at=opened,
                    last_seen_at=opened,
                )
            )
        self.session.flush()
        self.params = chain_params.ProtocolParams(param_table.genesis())

    def close(
        self, submissions: Sequence[tuple[int, datetime]], opened: datetime
    ) -> tuple[list[int], datetime]:
        """Open a round at ``opened`` (the platform's clock stands there), submit (organization index, time) in
        time order; returns the organizations whose updates the close sees and when it closes."""
        from unittest.mock import patch

        from db.models import RoundStatus, Update
        from fedledger.domain import pipeline, rounds

        with patch("fedledger.domain.rounds.utcnow", lambda: opened):
            round_ = rounds.open_round(self.session, self.params, "attack_eval")
        seen: list[int] = []
        closed_at = round_.deadline
        for i, at in sorted(submissions, key=lambda s: (s[1], s[0])):
            if at > round_.deadline:
                break
            self.session.add(
                Update(
                    round_id=round_.id,
                    participant_id=i + 1,
                    ciphertext_hash=f"{round_.id:032x}{i:032x}",
                    key_id="k",
                    model_version_id=1,
                    num_samples=1,
                    signature="0x",
                    size_bytes=0,
                    receipt_id=f"{round_.id:032x}{i:032x}",
                    submitted_at=at,
                )
            )
            self.session.flush()
            seen.append(i)
            if pipeline.request_early_close(self.session, round_.id, at):
                closed_at = at
                break
        round_.status = RoundStatus.posted
        self.session.flush()
        return seen, closed_at


def _meta(
    claims: Sequence[int], reputation: np.ndarray, submitted: Sequence[datetime], present: Sequence[int]
) -> tuple[ClientMeta, ...]:
    return tuple(
        ClientMeta(i + 1, i, f"0x{i + 1:040x}", claims[i], submitted[i], float(reputation[i]))
        for i in present
    )


RACE_LEAD = timedelta(seconds=1)
# Honest organizations train: their updates arrive uniformly in this share of the round's window.
HONEST_ARRIVAL = (0.2, 0.9)


@dataclass(frozen=True)
class Stage:
    """A backdoor-defence stage on top of the default rule, evaluated before anything is wired into it
    (:mod:`aggregator.strategies.targeted`): FLAME's majority-cluster filter (``flame``), Gaussian noise of
    ``noise`` x the clip norm on the aggregate (``noise=0.01``), RLR's sign-agreement rule reversing
    (``rlr=0.4``) or dropping (``signmask=0.4``) coordinates fewer than that share of the let-in rows agree on,
    trigger reversal (``cleanse``: Neural Cleanse on the candidate model and the server's root data; when a
    class's mask is an anomaly, the let-in rows whose own model sends more root examples stamped with the
    reversed trigger to it are left out) and unlearning (``unlearn=10``: the server trains the candidate model
    on its root data and that many out-of-range copies of it, ``share=0.5`` of that step kept), coordinate-wise
    winsorizing of the let-in rows (``winsor=2``: to their coordinate median +- 2 robust spreads) and
    per-block clipping (``blockclip=1``: each row's block, e.g. one input feature's first-layer weights, to
    the rows' median norm of that block), both on the rows as clipped by the rule, before its weighted mean.
    Spelled as a strategy: ``fltrust_guarded+flame``, ``fltrust_guarded+flame+noise=0.001``, ..."""

    cluster: bool = False
    noise: float = 0.0
    agreement: float = 0.0  # RLR's sign-agreement fraction (0: off)
    reverse: bool = True  # RLR reverses the disagreed coordinates; signmask drops them
    cleanse: bool = False
    unlearn: int = -1  # out-of-range copies of the root data in the server's unlearning step (-1: off)
    share: float = 1.0  # how much of the unlearning step is kept
    quiet: float = 1.0  # share of the features (least important to the model first) the copies may move
    guard: bool = False  # keep only as much of the unlearning step as does not raise the validation loss
    split: bool = False  # the stage and the reference step each on their own half of the root data
    winsor: float = -1.0  # let-in rows to the coordinate median +- this many robust spreads (-1: off)
    blockclip: float = 0.0  # each row's block clipped to this multiple of its median norm (0: off)
    pcmedian: int = 0  # leading principal directions along which the median replaces the mean (0: off)
    clamp: float = -1.0  # inputs clamped to the root data's clamp..1-clamp quantiles per feature (-1: off)
    augment: int = 0  # out-of-range copies per example in every honest organization's training (0: off)
    foolsgold: bool = False  # the let-in rows reweighted by FoolsGold on their histories minus the median
    # FoolsGold before the rule (``foolsgold=first``): every row's history (its updates clipped to the
    # round's median norm, the rounds' final computations only) gives FoolsGold weights; rows under
    # ``SYBIL_CUT`` are left out before the rule's tests, the rule's coefficients on the rest times them.
    sybil: bool = False
    # ``foolsgold=cut``: the same rows left out, the rule's weights on the rest unchanged (no reweighting).
    sybil_cut_only: bool = False
    # The reference test relative to the crowd (``crowd=<z>``, fltrust_guarded's ``reference_z``, the rule's
    # default level unless given; ``crowd=off``: the fixed test, cosine > 0).
    crowd: float | None = CROWD_REFERENCE_Z
    # Passers weighted by their margin above the centre test's level, full weight that share of the way to the
    # median (``soft=<share>``, ``soft`` = 1; fltrust_guarded's ``soft``; 0: equal weights).
    soft: float = 0.0
    # The rule's standing weights (fltrust_guarded's ``standing``; ``standing=off`` for a comparison).
    standing: bool = fltrust_guarded.STANDING
    # Weights shared among similar passers (fltrust_guarded's ``similar``; ``similar=on|off``).
    similar: bool = fltrust_guarded.SHARE_SIMILAR
    # Standing earned by useful work, the gate's crowd the standing rows (fltrust_guarded's ``earned``, with
    # ``standing``; ``earned=on|off``).
    earned: bool = fltrust_guarded.EARNED_STANDING
    # Doublings of the close's longest line-search step (``lengthen=<k>``, rollback.LENGTHEN_DOUBLINGS; 0: off).
    lengthen: int = rollback.LENGTHEN_DOUBLINGS
    # Standard errors a step shorter than the full one must win by (``hold=<z>``, rollback.HOLD_STANDARD_ERRORS).
    hold: float = rollback.HOLD_STANDARD_ERRORS
    # The clip norm at the reference-test passers' median norm plus this many robust spreads of their norms
    # (``normz=<z>``; None: the rule's median norm).
    norm_z: float | None = None
    # The rule's wider-clip candidate (``wider=<z>``, fltrust_guarded's ``wider_clip_z``; None: the rule's
    # WIDER_CLIP_Z): the same passers clipped at their median norm plus this many robust spreads, which the
    # close keeps only when the validation set resolves it as better.
    wider: float | None = None
    # Standard errors it must win by (``widerse=<z>``, rollback.WIDER_STANDARD_ERRORS).
    wider_se: float = rollback.WIDER_STANDARD_ERRORS
    # The server's reference as this many more passers (``refw=<W>``, fltrust_guarded's
    # ``reference_members``; None: the rule's REFERENCE_MEMBERS), after every other step of the stage.
    members: float | None = None
    # The same aggregate offered to the close as its second candidate instead (``refcand=<W>``): kept only
    # when the validation set resolves it as better than the rule's own (``widerse=<z>`` standard errors).
    member_candidate: float | None = None
    # What the scores measure a row's novel part against (``novelty=rows|aggregate``, the scores'
    # novelty.NOVELTY_BASIS; None: the platform's).
    novelty_basis: str | None = None
    # Issue 20 screen: a test of each row's cosine to a consensus of the other centre-test passers
    # (``consensus=mean|wmean|median``; ``/replace``: instead of the centre test, else beside it).
    consensus: str = ""
    consensus_replace: bool = False
    # The centre test on each row's this-quantile peer cosine instead of its median (``peerq=<q>``).
    peer_quantile: float = 0.5
    # The consensus test's level: median - this many robust spreads (``cz=<z>``), the spread from the values
    # above the median only (``clevel=upper``: a block of attackers at the low tail cannot widen it).
    consensus_z: float = 2.0
    consensus_upper: bool = False
    # The centre test's level in robust spreads (``centrez=<z>``; the rule's CENTER_Z = 2 unless given).
    center_z: float = CENTER_Z

    @property
    def rule_consensus(self) -> bool:
        """The screened variant fltrust_guarded has as its option (``FLTrustGuarded(consensus=True)``):
        ``consensus`` = ``consensus=mmean/replace`` at the default level."""
        default_level = self.consensus_z == 2.0 and not self.consensus_upper
        return self.consensus == "mmean" and self.consensus_replace and default_level

    @classmethod
    def parse(cls, spec: str) -> Stage:
        stage = cls()
        for part in spec.split("+"):
            if part == "flame":
                stage = replace(stage, cluster=True)
            elif part.startswith(("rlr=", "signmask=")):
                name, _, value = part.partition("=")
                stage = replace(stage, agreement=float(value), reverse=name == "rlr")
            elif part.startswith("noise="):
                stage = replace(stage, noise=float(part[len("noise=") :]))
            elif part == "cleanse":
                stage = replace(stage, cleanse=True)
            elif part == "guard":
                stage = replace(stage, guard=True)
            elif part == "split":
                stage = replace(stage, split=True)
            elif part.startswith("unlearn="):
                stage = replace(stage, unlearn=int(part[len("unlearn=") :]))
            elif part.startswith("share="):
                stage = replace(stage, share=float(part[len("share=") :]))
            elif part.startswith("quiet="):
                stage = replace(stage, quiet=float(part[len("quiet=") :]))
            elif part.startswith("winsor="):
                stage = replace(stage, winsor=float(part[len("winsor=") :]))
            elif part == "foolsgold":
                stage = replace(stage, foolsgold=True)
            elif part == "foolsgold=first":
                stage = replace(stage, sybil=True)
            elif part == "foolsgold=cut":
                stage = replace(stage, sybil=True, sybil_cut_only=True)
            elif part.startswith("augment="):
                stage = replace(stage, augment=int(part[len("augment=") :]))
            elif part.startswith("clamp="):
                stage = replace(stage, clamp=float(part[len("clamp=") :]))
            elif part.startswith("pcmedian="):
                stage = replace(stage, pcmedian=int(part[len("pcmedian=") :]))
            elif part.startswith("blockclip="):
                stage = replace(stage, blockclip=float(part[len("blockclip=") :]))
            elif part.startswith("crowd="):
                value = part[len("crowd=") :]
                stage = replace(stage, crowd=None if value == "off" else float(value))
            elif part.startswith("lengthen="):
                stage = replace(stage, lengthen=int(part[len("lengthen=") :]))
            elif part.startswith("hold="):
                stage = replace(stage, hold=float(part[len("hold=") :]))
            elif part.startswith("normz="):
                stage = replace(stage, norm_z=float(part[len("normz=") :]))
            elif part.startswith("wider="):
                stage = replace(stage, wider=float(part[len("wider=") :]))
            elif part.startswith("widerse="):
                stage = replace(stage, wider_se=float(part[len("widerse=") :]))
            elif part.startswith("refw="):
                stage = replace(stage, members=float(part[len("refw=") :]))
            elif part.startswith("refcand="):
                stage = replace(stage, member_candidate=float(part[len("refcand=") :]))
            elif part in ("novelty=rows", "novelty=aggregate"):
                stage = replace(stage, novelty_basis=part[len("novelty=") :])
            elif part == "consensus":
                stage = replace(stage, consensus="mmean", consensus_replace=True)
            elif part.startswith("consensus="):
                mode, _, role = part[len("consensus=") :].partition("/")
                stage = replace(stage, consensus=mode, consensus_replace=role == "replace")
            elif part.startswith("cz="):
                stage = replace(stage, consensus_z=float(part[len("cz=") :]))
            elif part.startswith("centrez="):
                stage = replace(stage, center_z=float(part[len("centrez=") :]))
            elif part == "clevel=upper":
                stage = replace(stage, consensus_upper=True)
            elif part.startswith("peerq="):
                stage = replace(stage, peer_quantile=float(part[len("peerq=") :]))
            elif part in ("standing=on", "standing=off"):
                stage = replace(stage, standing=part == "standing=on")
            elif part in ("similar=on", "similar=off"):
                stage = replace(stage, similar=part == "similar=on")
            elif part in ("earned=on", "earned=off"):
                stage = replace(stage, earned=part == "earned=on")
            elif part == "soft":
                stage = replace(stage, soft=1.0)
            elif part.startswith("soft="):
                stage = replace(stage, soft=float(part[len("soft=") :]))
            else:
                raise ValueError(
                    f"unknown stage {part!r}; valid: flame, noise=<multiple of the clip norm>, "
                    "rlr=<agreeing fraction>, signmask=<agreeing fraction>, cleanse, "
                    "unlearn=<out-of-range copies>, share=<kept share of the unlearning step>, "
                    "quiet=<share of the least important features the copies move>, guard, split, "
                    "winsor=<robust spreads>, blockclip=<multiple of the median block norm>, "
                    "pcmedian=<principal directions>, clamp=<tail quantile of the root data>, "
                    "augment=<out-of-range copies per example in honest training>, "
                    "crowd=<robust spreads of the reference test relative to the crowd, or off>, "
                    "soft[=<share of the way to the median row's margin at full weight>], standing=on|off, "
                    "similar=on|off, earned=on|off, "
                    "consensus (the rule's option), consensus=<mean|wmean|mmean|median|dnc>[/replace], "
                    "peerq=<quantile of the peer cosines in the centre test>, "
                    "cz=<robust spreads of the consensus test>, clevel=upper, "
                    "centrez=<robust spreads of the centre test>, "
                    "lengthen=<doublings of the close's longest line-search step>, "
                    "hold=<standard errors a shorter step must win by>, "
                    "normz=<robust spreads of the norms above their median to clip at>, "
                    "wider=<robust spreads of the close's wider-clip candidate>, "
                    "widerse=<standard errors it must win by>, "
                    "refw=<members' worth of the server's reference in the aggregate>, "
                    "refcand=<the same offered as the close's candidate>, novelty=rows|aggregate, "
                    "foolsgold=first, "
                    "foolsgold=cut"
                )
        return stage


def _reweighted(c: np.ndarray, weights: np.ndarray, norms: np.ndarray, clip: float) -> np.ndarray:
    """The rule's coefficients (c_i = min(1, clip / ||x_i||) w_i / sum w) with each w_i multiplied by
    ``weights``, renormalised, each row keeping its clip scale; all zero if no weight is left."""
    scale = np.minimum(1.0, clip / np.maximum(np.asarray(norms, dtype=np.float64), 1e-300))
    w = np.where(c > 0, c / scale, 0.0) * weights
    if not w.sum() > 0:
        return np.zeros_like(c)
    out: np.ndarray = scale * w / w.sum()
    return out


# ``foolsgold=first``: rows whose FoolsGold weight is under this are left out before the rule's tests.
SYBIL_CUT = 0.05


def _centred_foolsgold(history: np.ndarray) -> np.ndarray:
    """FoolsGold's weights of the organizations' update histories minus their coordinate median (what
    honest histories share is not similarity between sybils), for both FoolsGold stages."""
    return targeted.foolsgold_weights(history - np.median(history, axis=0))


def consensus_cosines(
    X: np.ndarray, cos: np.ndarray, norms: np.ndarray, crowd: np.ndarray, peer: np.ndarray, mode: str
) -> np.ndarray:
    """Each row's cosine to a consensus of the ``crowd`` rows other than itself: ``mean`` of their unit
    vectors, ``wmean`` the same weighted by max(0, their peer cosine ``peer``), ``median`` their coordinate
    median (issue 20, consensus screen)."""
    n = X.shape[0]
    out = np.zeros(n)
    if mode in ("mean", "wmean", "mmean"):
        if mode == "mean":
            w = crowd.astype(np.float64)
        elif mode == "wmean":
            w = np.where(crowd, np.maximum(peer, 0.0), 0.0)
        else:  # margin above the centre test's level
            w = np.where(crowd, np.maximum(peer - _robust_level(peer, CENTER_Z), 0.0), 0.0)
        for i in range(n):
            wi = w.copy()
            wi[i] = 0.0
            denom = float(wi @ cos @ wi)
            out[i] = float(cos[i] @ wi) / np.sqrt(denom) if denom > 0 else 0.0
        return out
    if mode == "dnc":
        # Divide-and-Conquer's spectral score (Shejwalkar & Houmansadr, NDSS 2021): each row, clipped to the
        # crowd's median norm, centred on the crowd's mean, projected on the top right singular vector of the
        # crowd's centred rows; returned negated (|projection|), so that the common low-outlier level applies.
        wide = X.astype(np.float64)
        clip = float(np.median(norms[crowd])) if crowd.any() else float(np.median(norms))
        clipped = wide * np.minimum(1.0, clip / np.maximum(norms, 1e-300))[:, None]
        rows = clipped[crowd] if crowd.sum() >= 2 else clipped
        centre = rows.mean(axis=0)
        _, _, vt = np.linalg.svd(rows - centre, full_matrices=False)
        projection = (clipped - centre) @ vt[0]
        return -np.abs(projection) / max(clip, 1e-300)
    if mode == "median":
        wide = X.astype(np.float64)
        for i in range(n):
            rows = crowd.copy()
            rows[i] = False
            if not rows.any():
                continue
            centre = np.median(wide[rows], axis=0)
            scale = float(np.linalg.norm(centre)) * norms[i]
            out[i] = float(wide[i] @ centre) / scale if scale > 0 else 0.0
        return out
    raise ValueError(f"unknown consensus {mode!r}; valid: mean, wmean, mmean, median, dnc")


def consensus_level(values: np.ndarray, z: float, upper: bool) -> float:
    """median - z robust spreads of ``values``; ``upper``: the spread (1.4826 x the median deviation) taken over
    the values at or above the median only, which a block below it cannot widen."""
    if not upper:
        return _robust_level(values, z)
    centre = float(np.median(values))
    above = values[values >= centre] - centre
    return centre - z * 1.4826 * float(np.median(above))


class StagedGuarded(FLTrustGuarded):
    """The default rule with a :class:`Stage` after it (same name in the round's record)."""

    def __init__(self, stage: Stage, task: Task | None = None, seed: int = 0) -> None:
        wider = stage.wider if stage.wider is not None else fltrust_guarded.WIDER_CLIP_Z
        members = stage.members if stage.members is not None else fltrust_guarded.REFERENCE_MEMBERS
        candidate = (
            stage.member_candidate
            if stage.member_candidate is not None
            else fltrust_guarded.default_candidate(wider, members)
        )
        # The reference options join after the stage's own steps (``aggregate``), not inside the rule's.
        super().__init__(
            stage.crowd,
            stage.soft,
            stage.rule_consensus,
            wider,
            members,
            candidate,
            stage.standing,
            stage.similar,
            stage.standing and stage.earned,
            judges=stage.standing and stage.earned and fltrust_guarded.JUDGES,
            standing_power=fltrust_guarded.STANDING_POWER,
        )
        screened = (
            (stage.consensus and not stage.rule_consensus)
            or stage.peer_quantile != 0.5
            or stage.center_z != CENTER_Z
        )
        if stage.sybil and screened:
            # FoolsGold's cut runs the rule itself on the rows it keeps: only the rule's own option
            # (``consensus``) applies there, not the harness's screening variants.
            raise ValueError(
                "foolsgold=first/cut combines with the rule's consensus option only, not a screened variant"
            )
        self.stage = stage
        self.task = task
        self.seed = seed
        # The round's model (weights, layout, round number), set before each round computation by ``run``:
        # trigger reversal and unlearning need the model, which a strategy's inputs do not carry.
        self.model: tuple[dict[str, np.ndarray], dict[str, list[int]], int] | None = None
        # Per round: the class Neural Cleanse flagged (or None) and the rows it left out, for the report.
        self.flags: dict[int, tuple[int | None, tuple[int, ...]]] = {}
        # Per round: the share of the unlearning step kept (the guard may keep less than ``share``).
        self.kept: dict[int, float] = {}
        # FoolsGold's server state: each row's sum of its clipped updates so far (rows are organizations in
        # index order when everyone is present, as in every attack that is not the race).
        self.history: np.ndarray | None = None
        # ``foolsgold=first``: the histories through the last round (committed when the next round's first
        # computation arrives: the oracle's trials compute a round many times, the last one is the round's)
        # and this round's latest, with its round number.
        self.committed: np.ndarray | None = None
        self.pending: tuple[int, np.ndarray] | None = None

    def aggregate(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        if self.stage.sybil:
            return self._foolsgold_first(X, inputs)
        result = self._own_aggregate(X, inputs)
        assert inputs.reference is not None and result.coefficients is not None
        g, _ = self.gate_and_standing(X, inputs)
        c = result.coefficients
        details = dict(result.details)
        screened = self.stage.consensus or self.stage.peer_quantile != 0.5 or self.stage.center_z != CENTER_Z
        if screened and not self.consensus:  # the rule's own consensus test is in its gate already
            g = self._consensus_gate(X, g)
            c = _coefficients(g, inputs.samples)
            details["passed_center"] = int(g.by_center.sum())
            details["passed_reference"] = int(g.by_reference.sum())
        if self.stage.norm_z is not None:
            g = replace(g, clip_norm=spread_clip(g, self.stage.norm_z))
            c = _coefficients(g, inputs.samples)
            details["clip_norm"] = g.clip_norm
        if self.stage.cluster:
            keep = targeted.majority_cluster(X)
            c = targeted.keep_only(c, keep, g.norms, g.clip_norm)
            details["flame_kept"] = int(keep.sum())
        if self.stage.foolsgold and (c > 0).any():
            scale = np.minimum(1.0, g.clip_norm / np.maximum(g.norms, 1e-30))
            clipped = X.astype(np.float64) * scale[:, None]
            self.history = clipped if self.history is None else self.history + clipped
            weights = _centred_foolsgold(self.history)
            details["foolsgold_min_weight"] = float(weights[c > 0].min())
            c = _reweighted(c, weights, g.norms, g.clip_norm)
        if self.stage.cleanse and (c > 0).any():
            keep = self._cleanse(X, c, g.norms, g.clip_norm, inputs.reference)
            c = targeted.keep_only(c, keep, g.norms, g.clip_norm)
        if (self.stage.winsor >= 0 or self.stage.blockclip or self.stage.pcmedian) and (c > 0).any():
            vector = self._robust_mean(X, c, g.norms, g.clip_norm)
        else:
            vector = (c.astype(np.float32) @ X).astype(np.float32)
        if self.stage.agreement and (c > 0).any():
            vector = targeted.robust_learning_rate(vector, X[c > 0], self.stage.agreement, self.stage.reverse)
        if self.stage.unlearn >= 0:
            vector = self._unlearn(vector)
        if self.stage.noise:
            assert inputs.rng is not None
            vector = targeted.add_noise(vector, g.clip_norm, self.stage.noise, inputs.rng)
        # The rule's wider-clip candidate (``wider=<z>``) as the rule computed it, on its own gate.
        staged = Aggregated(vector, np.flatnonzero(c > 0), details, c, wider=result.wider)
        return self._with_reference(staged, inputs.reference, g.clip_norm)

    def _consensus_gate(self, X: np.ndarray, g: Gate) -> Gate:
        """The gate with the screened honest-majority tests (issue 20, consensus screen)."""
        assert g.products is not None
        norms = g.norms
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = g.products.gram / np.outer(norms, norms)
        cos = np.clip(np.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        peer, by_center = g.cos_center, g.by_center
        if self.stage.peer_quantile != 0.5 or self.stage.center_z != CENTER_Z:
            n = X.shape[0]
            off = ~np.eye(n, dtype=bool)
            peer = np.quantile(cos[off].reshape(n, n - 1), self.stage.peer_quantile, axis=1)
            by_center = peer >= _robust_level(peer, self.stage.center_z)
        passed = by_center
        if self.stage.consensus:
            values = consensus_cosines(X, cos, norms, by_center, peer, self.stage.consensus)
            by_consensus = values >= consensus_level(
                values, self.stage.consensus_z, self.stage.consensus_upper
            )
            passed = by_consensus if self.stage.consensus_replace else by_center & by_consensus
        ref_level = (
            reference_level(g.cos_reference[passed], self.reference_z)
            if self.reference_z is not None
            else 0.0
        )
        by_reference = g.cos_reference > ref_level
        candidates = norms[by_reference & (norms > 0)]
        clip = float(np.median(candidates)) if candidates.size else 0.0
        return replace(
            g,
            by_center=passed,
            by_reference=by_reference,
            reference_level=ref_level,
            clip_norm=clip,
            cos_center=peer,
        )

    def _foolsgold_first(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        """FoolsGold before the rule (``foolsgold=first``): rows whose FoolsGold weight on the histories is
        under ``SYBIL_CUT`` are left out before the rule's tests (copies near the honest mean otherwise
        narrow the centre test and crowd honest rows out, as ALIE's do), the rule's coefficients on the rest
        times their weights, each row keeping its clip scale (:func:`_reweighted`; ``foolsgold=cut``: not
        reweighted)."""
        r = self.model[2] if self.model is not None else 0
        if self.pending is not None and self.pending[0] != r:
            self.committed = self.pending[1] if self.pending[0] < r else None  # a new run starts at round 1
        wide = X.astype(np.float64)
        norms = np.linalg.norm(wide, axis=1)
        median = float(np.median(norms))
        clipped = wide * np.minimum(1.0, median / np.maximum(norms, 1e-30))[:, None]
        before = self.committed
        history = clipped if before is None or before.shape != clipped.shape else before + clipped
        self.pending = (r, history)
        weights = _centred_foolsgold(history)
        keep = weights >= SYBIL_CUT
        if keep.sum() < 2:
            keep = np.ones(X.shape[0], dtype=bool)
        rows = np.flatnonzero(keep)
        inner = StrategyInputs(
            inputs.samples[rows], inputs.reputation[rows], reference=inputs.reference, rng=inputs.rng
        )
        result = self._own_aggregate(X[rows], inner)
        assert result.coefficients is not None
        c = np.zeros(X.shape[0])
        c[rows] = result.coefficients
        if not self.stage.sybil_cut_only:
            c = _reweighted(c, weights, norms, float(result.details["clip_norm"]))  # type: ignore[arg-type]
        details = {**result.details, "foolsgold_left_out": int((~keep).sum())}
        staged = Aggregated((c.astype(np.float32) @ X).astype(np.float32), np.flatnonzero(c > 0), details, c)
        clip = float(result.details["clip_norm"])  # type: ignore[arg-type]
        assert inputs.reference is not None
        return self._with_reference(staged, inputs.reference, clip)

    def _robust_mean(self, X: np.ndarray, c: np.ndarray, norms: np.ndarray, clip: float) -> np.ndarray:
        """The rule's weighted mean of the let-in rows, each as the rule clipped it, after per-block clipping
        and/or coordinate-wise winsorizing of those rows (:func:`targeted.clip_blocks`,
        :func:`targeted.winsorize`)."""
        rows = np.flatnonzero(c > 0)
        scale = np.minimum(1.0, clip / np.maximum(norms[rows].astype(np.float64), 1e-30))
        Y = (X[rows].astype(np.float64) * scale[:, None]).astype(np.float32)
        if self.stage.blockclip:
            assert self.model is not None, "block clipping needs the round's model layout"
            Y = targeted.clip_blocks(Y, targeted.block_starts(self.model[1]), self.stage.blockclip)
        if self.stage.winsor >= 0:
            Y = targeted.winsorize(Y, self.stage.winsor)
        weights = c[rows] / scale
        if self.stage.pcmedian:
            return targeted.principal_median(Y, weights / weights.sum(), self.stage.pcmedian) * np.float32(
                weights.sum()
            )
        out: np.ndarray = (weights.astype(np.float32) @ Y).astype(np.float32)
        return out

    def _round_model(self) -> tuple[dict[str, np.ndarray], dict[str, list[int]], int, Task]:
        if self.model is None or self.task is None:
            raise ValueError(
                "trigger reversal and unlearning need the round's model and the task's root data"
            )
        return (*self.model, self.task)

    def _cleanse(
        self, X: np.ndarray, c: np.ndarray, norms: np.ndarray, clip: float, reference: np.ndarray
    ) -> np.ndarray:
        """Neural Cleanse on the candidate (base + the let-in rows' aggregate): with a class flagged (anomaly
        index > ``CLEANSE_ANOMALY``), every let-in row whose own clipped step sends more of the root examples
        stamped with the reversed trigger to that class than the server's reference step does, by more than
        ``CLEANSE_MARGIN``, is left out; True for the rows kept."""
        weights, spec, r, task = self._round_model()
        base = flatten(weights, spec)
        candidate = unflatten(base + (c.astype(np.float32) @ X), spec)
        x_root, y_root = task.root
        norms_c, masks, patterns = targeted.reverse_triggers(
            candidate, x_root, y_root, bound=CLEANSE_BOUND, rng=stream(self.seed, STREAM_NOISE, r, 1)
        )
        index = targeted.anomaly_index(norms_c)
        keep = np.ones(X.shape[0], dtype=bool)
        target = int(np.argmax(index))
        if not index[target] > CLEANSE_ANOMALY:
            self.flags[r] = (None, ())
            return keep
        stamped = targeted.apply_trigger(x_root[y_root != target], masks[target], patterns[target])
        floor = targeted.flip_rate(unflatten(base + reference, spec), stamped, target)
        for i in np.flatnonzero(c > 0):
            scale = min(1.0, clip / max(float(norms[i]), 1e-30))
            own = targeted.flip_rate(unflatten(base + np.float32(scale) * X[i], spec), stamped, target)
            keep[i] = own <= floor + CLEANSE_MARGIN
        self.flags[r] = (target, tuple(int(i) for i in np.flatnonzero(~keep)))
        return keep

    def _unlearn(self, vector: np.ndarray) -> np.ndarray:
        """The server's unlearning step: from the candidate, train on the root data and ``unlearn`` copies of
        it each with one feature out of range (:func:`targeted.out_of_range_copies`), with the clients'
        procedure; ``share`` of that step added to the aggregate."""
        weights, spec, r, task = self._round_model()
        base = flatten(weights, spec)
        candidate = base + vector
        rng = stream(self.seed, STREAM_NOISE, r, 2)
        x_root, y_root = task.root
        features = None
        if self.stage.quiet < 1.0:
            # Only the features the candidate uses least: moving a feature the task depends on far out of
            # range changes what the right label is, and teaching the model otherwise costs accuracy.
            importance = targeted.permutation_importance(unflatten(candidate, spec), x_root, y_root, rng)
            features = np.argsort(importance)[: max(1, round(self.stage.quiet * importance.size))]
        x_copies, y_copies = targeted.out_of_range_copies(
            x_root, y_root, self.stage.unlearn, *UNLEARN_RANGE, rng, features
        )
        tuned = train_local(
            unflatten(candidate, spec),
            np.concatenate([x_root, x_copies]),
            np.concatenate([y_root, y_copies]),
            task.train,
            rng,
        )
        step = flatten(tuned, spec) - candidate
        share = self.stage.share
        if self.stage.guard:
            # No unlearning that costs clean loss: the largest of share, share / 2, share / 4 whose model has
            # no higher loss on the server's validation data than the candidate, else none.
            floor = evaluate(unflatten(candidate, spec), *task.validation)[0]
            share = next(
                (
                    s
                    for s in (share, share / 2, share / 4)
                    if evaluate(unflatten(candidate + np.float32(s) * step, spec), *task.validation)[0]
                    <= floor
                ),
                0.0,
            )
        self.kept[r] = share
        out: np.ndarray = (vector + np.float32(share) * step).astype(np.float32)
        return out


# Trigger reversal: the pattern's range (standardized units; the trigger's 4.0 is inside it), Neural Cleanse's
# anomaly threshold, and by how much a row's own step may raise the reversed trigger's flip rate above the
# server's reference step before it is left out.
CLEANSE_BOUND = 5.0
CLEANSE_ANOMALY = 2.0
CLEANSE_MARGIN = 0.2
# Unlearning: the out-of-range values (standardized units) one feature of each copy is set to, either sign.
UNLEARN_RANGE = (3.0, 6.0)


def augmented(
    x: np.ndarray, y: np.ndarray, copies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """An organization's training data under the ``augment`` stage: its examples and ``copies`` copies of
    them each with one feature out of range (:func:`targeted.out_of_range_copies`, ``UNLEARN_RANGE``), the
    labels kept: honest organizations then teach the model that one feature far out does not decide the
    class, where otherwise only a trigger's senders say anything."""
    x_copies, y_copies = targeted.out_of_range_copies(x, y, copies, *UNLEARN_RANGE, rng)
    return np.concatenate([x, x_copies]), np.concatenate([y, y_copies])


def clamped(task: Task, tail: float) -> Task:
    """The task as a model that clamps its inputs to the server's root data range sees it (the bounds
    the ``tail`` and 1 - ``tail`` quantiles of the root data per feature): every split clamped, and the
    trigger stamped, then clamped (:func:`stamp`)."""
    bounds = targeted.input_bounds(task.root[0], tail)

    def clamp(x: np.ndarray) -> np.ndarray:
        return targeted.clamp_inputs(x, bounds)

    return replace(
        task,
        x_train=clamp(task.x_train),
        x_test=clamp(task.x_test),
        root=(clamp(task.root[0]), task.root[1]),
        validation=(clamp(task.validation[0]), task.validation[1]),
        bounds=bounds,
    )


def run(
    fed: Federation,
    strategy: str,
    attack: str,
    rounds: int,
    params: dict[str, Any] | None = None,
    secure_groups: int | None = None,
) -> RunResult:
    """Train ``rounds`` rounds through the real round computation; see the module docstring."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")
    if ":" in strategy:
        base, _, options = strategy.partition(":")
        return run(fed, base, attack, rounds, {**(params or {}), **dp_params(options)}, secure_groups)
    if "@secure" in strategy:
        base, _, size = strategy.partition("@secure")
        if not size.isdigit() or int(size) < 3:
            raise ValueError(f"secure groups are spelled <rule>@secure<s> with s >= 3, not {strategy!r}")
        return run(fed, base, attack, rounds, params, secure_groups=int(size))
    if "+" in strategy:
        base, _, spec = strategy.partition("+")
        if base != "fltrust_guarded":
            raise ValueError(f"a stage goes on fltrust_guarded only, not {base!r}")
        stage = Stage.parse(spec)
        if stage.clamp >= 0:
            fed = replace(fed, task=clamped(fed.task, stage.clamp))
        if stage.augment:
            fed = replace(fed, task=replace(fed.task, augment=stage.augment))
        staged = StagedGuarded(stage, fed.task, fed.seed)
        if stage.split:
            # The server's root data halved: one half for its stage, the other for its reference step. A
            # server that trains the model on the root data the reference is trained on uses it up: the
            # reference step shrinks and turns against every client's (their cosine to it below zero), the
            # rule lets no update in and the round is refused.
            x_root, y_root = fed.task.root
            order = stream(fed.seed, STREAM_NOISE, 3).permutation(len(y_root))
            half = len(order) // 2
            own, rest = order[:half], order[half:]
            staged = StagedGuarded(stage, replace(fed.task, root=(x_root[own], y_root[own])), fed.seed)
            fed = replace(fed, task=replace(fed.task, root=(x_root[rest], y_root[rest])))
        build = strategies_package.build
        real = compute_round

        def round_with_model(inputs: RoundInputs, rng: np.random.Generator, now: datetime) -> RoundResult:
            staged.model = (dict(inputs.weights), dict(inputs.spec), inputs.round_id)
            return real(inputs, rng, now)

        # compute_round builds its strategy from the round's parameters; the stage is not a governed rule.
        with (
            patch.object(strategies_package, "build", lambda p: staged if p.strategy == base else build(p)),
            patch.object(sys.modules[__name__], "compute_round", round_with_model),
            patch.object(rollback, "LENGTHEN_DOUBLINGS", stage.lengthen),
            patch.object(rollback, "HOLD_STANDARD_ERRORS", stage.hold),
            patch.object(rollback, "WIDER_STANDARD_ERRORS", stage.wider_se),
            patch.object(novelty, "NOVELTY_BASIS", stage.novelty_basis or novelty.NOVELTY_BASIS),
        ):
            result = run(fed, base, attack, rounds, params, secure_groups)
        if not staged.stage.cleanse:
            return result
        flagged = [out for target, out in staged.flags.values() if target is not None]
        targets = [target for target, _ in staged.flags.values() if target == BACKDOOR_TARGET]
        return replace(
            result,
            cleanse_rounds=len(flagged),
            cleanse_target_rounds=len(targets),
            cleanse_rows_out=sum(len(o) for o in flagged),
        )
    started = time.perf_counter()
    plain = strategy in PLAIN
    if plain:
        strategy, overrides = PLAIN[strategy]
        params = {**overrides, **(params or {})}
    if attack == "absent":
        fed = Federation(fed.task, fed.seed, len(fed.honest), tuple(fed.shards[i] for i in fed.honest), ())
    task = fed.task
    round_params = RoundParams.from_snapshot({**DEFAULT_PARAMS, **(params or {}), "strategy": strategy})
    weights = task.init_weights(fed.seed)
    spec = {name: list(v.shape) for name, v in weights.items()}
    n = fed.n
    attackers = list(fed.attackers)
    honest_idx = list(fed.honest)
    flipped = task.classes - 1 - task.y_train
    reputation = np.full(n, 50.0)
    counts = np.zeros(n, dtype=int)
    stakes = [STAKE] * n
    rewards = np.zeros(n)
    flagged_at: list[int | None] = [None] * n
    slashed_at: list[int | None] = [None] * n
    rollbacks = failed = stalled = 0
    charged: list[float] = []
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    curve = []
    last_change: np.ndarray | None = None
    last_author: int | None = None
    claims = [len(s) for s in fed.shards]
    if attack == "countpoison":
        # Count poisoning (issue 20): the attackers' wallets claim one sample each, pulling the round's median
        # claim down so that honest counts look inflated; their updates are honest.
        for i in attackers:
            claims[i] = 1
    held_out = np.concatenate([fed.shards[i] for i in attackers]) if attackers else np.zeros(0, dtype=int)

    def damage(result: RoundResult) -> float:
        """The new model's loss on the attackers' own data (nobody trains on it: they do not send it)."""
        assert result.new_weights is not None
        return float(evaluate(result.new_weights, task.x_train[held_out], task.y_train[held_out])[0])

    close_rule = CloseRule(n, opened) if attack == "race" else None
    duration = timedelta(seconds=round_params.round_duration)
    for r in range(rounds):
        opened_r = opened + r * 2 * duration
        arrival = stream(fed.seed, STREAM_ARRIVAL, r).uniform(*HONEST_ARRIVAL, size=n)
        submitted = [opened_r + duration * float(a) for a in arrival]
        present = list(range(n))
        if close_rule is not None:
            # The race: attackers submit right at the opening without training; the platform's close rule
            # decides whose updates the round sees.
            for i in attackers:
                submitted[i] = opened_r + RACE_LEAD
            present, _ = close_rule.close(list(enumerate(submitted)), opened_r)
            present.sort()
        base = flatten(weights, spec)
        deltas = np.empty((n, base.size), dtype=np.float32)
        for i, shard in enumerate(fed.shards):
            labels = flipped if attack == "labelflip" and i in fed.attackers else task.y_train
            x_local, y_local = task.x_train[shard], labels[shard]
            if attack in BACKDOORS and i in fed.attackers:
                x_local = np.concatenate([x_local, stamp(x_local, task.bounds)])
                y_local = np.concatenate([y_local, np.full(len(shard), BACKDOOR_TARGET, dtype=y_local.dtype)])
            elif task.augment:
                x_local, y_local = augmented(
                    x_local, y_local, task.augment, stream(fed.seed, STREAM_TRAIN, r, i, 1)
                )
            local = train_local(weights, x_local, y_local, task.train, stream(fed.seed, STREAM_TRAIN, r, i))
            deltas[i] = flatten(local, spec) - base
        x_root, y_root = task.root
        if task.augment:
            x_root, y_root = augmented(
                x_root, y_root, task.augment, stream(fed.seed, STREAM_TRAIN, r, 10_000, 1)
            )
        reference_weights = train_local(
            weights, x_root, y_root, task.train, stream(fed.seed, STREAM_TRAIN, r, 10_000)
        )
        reference = flatten(reference_weights, spec) - base
        deadline = opened_r + duration
        clients = _meta(claims, reputation, submitted, present)
        # Rows of the round's matrix: the organizations whose updates the close sees, in index order.
        row_of = {i: k for k, i in enumerate(present)}
        attacker_rows = [row_of[i] for i in attackers if i in row_of]
        honest_rows = [row_of[i] for i in honest_idx if i in row_of]

        trial = partial(
            _trial,
            RoundInputs(
                round_id=r + 1,
                params=round_params,
                opened_at=opened_r,
                deadline=deadline,
                extensions=0,
                clients=clients,
                deltas=deltas[present],
                rejected=(),
                weights=weights,
                spec=spec,
                holdout=task.validation,
                reference=reference,
                public_change=last_change,
                public_change_author=last_author,
                dp_rounds_spent=len(charged),
                stalled_rounds=stalled,
            ),
            attacker_rows,
            (fed.seed, STREAM_ROUND, r),
            secure_groups=secure_groups,
            deviating=attack not in FOLLOW_PROTOCOL,
        )
        rows = deltas[present][attacker_rows]
        if attacker_rows:
            ctx = AttackContext(
                deltas[present][honest_rows],
                rows,
                n,
                stream(fed.seed, STREAM_ATTACK, r),
                trial,
                tuple(attackers),
                reference,
                last_change,
                damage,
                {i: float(reputation[i]) for i in present},
            )
            rows = craft(attack, ctx)
        result = trial(rows)
        if plain and result.aggregate is not None:
            # Plain FedAvg takes the full aggregate, whatever step the platform's line search would keep.
            result = replace(result, new_weights=unflatten(base + result.aggregate, spec), activate=True)
        if result.record is not None and round_params.dp is not None:
            # Each aggregated round at its own multiplier (a secure round: its worst group's).
            z = result.record.params.get("dp_effective_noise_multiplier", round_params.dp.noise_multiplier)
            charged.append(float(z))  # type: ignore[arg-type]
        if result.status != CloseStatus.aggregated:
            failed += 1
            curve.append(float(np.mean(_predict(weights, task.x_test) == task.y_test)))
            continue
        # As the worker counts them (aggregator.worker.close.stalled_rounds): rounds in a row that kept neither
        # the rule's aggregate nor the server's step.
        kept_by = result.record.params.get("kept_by") if result.record is not None else None
        stalled = 0 if result.activate and kept_by != "fallback" else stalled + 1
        if result.activate and result.new_weights is not None:
            weights = {k: np.array(v) for k, v in result.new_weights.items()}
            last_change = flatten(weights, spec) - base
            # As the worker's close reads it (aggregator.worker.close.sole_kept): the one kept update's sender.
            kept = [c.participant_id for c in result.clients if c.kept]
            last_author = kept[0] if len(kept) == 1 else None
        else:
            rollbacks += 1
        conclusive = np.zeros(n, dtype=bool)
        for c in result.clients:
            i = c.participant_id
            reputation[i] = c.reputation_after
            conclusive[i] = c.byzantine and is_conclusive(f.code for f in c.evidence)
            rewards[i] += c.reward_wei / WAD_TOKEN
            if c.byzantine:
                # As the worker counts them: a direction flag on a row that agrees with the other updates is
                # recorded but does not count toward the slashing threshold (RoundScores.slash_counted).
                counts[i] += int(c.slash_counted)
                if flagged_at[i] is None:
                    flagged_at[i] = r + 1
        for decision in slashing_decisions(
            counts, stakes, reputation, config=round_params.reputation, conclusive=conclusive
        ):
            stakes[decision.index] -= decision.amount
            if slashed_at[decision.index] is None:
                slashed_at[decision.index] = r + 1
        curve.append(float(np.mean(_predict(weights, task.x_test) == task.y_test)))
    return RunResult(
        accuracy=curve[-1] if curve else 0.0,
        attacker_reward=float(np.mean(rewards[attackers])) if attackers else 0.0,
        attacker_rewards=[float(rewards[i]) for i in attackers],
        honest_rewards=[float(rewards[i]) for i in honest_idx],
        attacker_first_flag=[flagged_at[i] for i in attackers],
        attacker_first_slash=[slashed_at[i] for i in attackers],
        honest_flagged=sum(flagged_at[i] is not None for i in honest_idx),
        honest_slashed=sum(slashed_at[i] is not None for i in honest_idx),
        rollbacks=rollbacks,
        failed_rounds=failed,
        seconds=time.perf_counter() - started,
        accuracy_by_round=curve,
        attack_success=attack_success_rate(weights, task),
        epsilon=(
            epsilon_of([(z, 1) for z in charged], 1.0, round_params.dp.delta) if round_params.dp else None
        ),
    )


def dp_params(options: str) -> dict[str, Any]:
    """The governed DP settings a strategy's ``:dp=<z>[:clip=<C>]`` suffix stands for (unlimited budget)."""
    settings: dict[str, Any] = {"dp_enabled": True, "dp_epsilon_budget": 1e9}
    for option in options.split(":"):
        name, _, value = option.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name not in ("dp", "clip") or not number > 0:
            raise ValueError(
                f"DP is spelled <strategy>:dp=<z>[:clip=<C>] with positive numbers, not {option!r}"
            )
        settings["dp_noise_multiplier" if name == "dp" else "dp_clip_norm"] = number
    if "dp_noise_multiplier" not in settings:
        raise ValueError(f"a DP suffix needs dp=<noise multiplier>, got {options!r}")
    return settings


def _predict(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    if "dense.weight" in weights:
        logits = x @ weights["dense.weight"] + weights["dense.bias"]
    else:
        h = np.maximum(x @ weights["hidden.weight"] + weights["hidden.bias"], 0.0)
        logits = h @ weights["output.weight"] + weights["output.bias"]
    labels: np.ndarray = np.argmax(logits, axis=1)
    return labels


# --- grid and report -------------------------------------------------------------------------------

Key = tuple[str, str, int, str, str]  # task, partition, n, strategy, attack


def run_grid(
    tasks: Sequence[str],
    partitions: Sequence[str],
    ns: Sequence[int],
    strategies: Sequence[str],
    attacks: Sequence[str],
    seeds: Sequence[int],
    rounds: int,
    progress: Callable[[str], None] | None = None,
    fraction: float = BYZANTINE_FRACTION,
    root: str = "split",
    alpha: float = DIRICHLET_ALPHA,
) -> dict[Key, list[RunResult]]:
    results: dict[Key, list[RunResult]] = {}
    for task_name in tasks:
        for partition in partitions:
            for n in ns:
                for seed in seeds:
                    task = load_task(task_name, seed, None, root)
                    fed = make_federation(task, seed, n, partition, alpha, fraction)
                    for strategy in strategies:
                        for attack in attacks:
                            results.setdefault((task_name, partition, n, strategy, attack), []).append(
                                run(fed, strategy, attack, rounds)
                            )
                    if progress:
                        progress(f"{task_name} {partition} n={n} seed {seed} done")
    return results


def _pct(values: Sequence[float]) -> float:
    return 100.0 * float(np.mean(values))


def reward_ratio(runs: Sequence[RunResult]) -> float:
    """Attackers' mean total reward over the median honest organization's, averaged over seeds."""
    ratios = []
    for r in runs:
        median = float(np.median(r.honest_rewards)) if r.honest_rewards else 0.0
        ratios.append(
            r.attacker_reward / median if median > 0 else (0.0 if r.attacker_reward == 0 else np.inf)
        )
    return float(np.mean(ratios))


def single_ratio(run: RunResult) -> float:
    """The best-paid attacker's total reward over the median honest organization's (issue 20: no attacker's
    total above it); 0 without attackers or rewards."""
    top = max(run.attacker_rewards, default=0.0)
    median = float(np.median(run.honest_rewards)) if run.honest_rewards else 0.0
    return top / median if median > 0 else (0.0 if top == 0 else float(np.inf))


def _rounds(values: Sequence[int | None]) -> str:
    hit = [v for v in values if v is not None]
    if not values:
        return "-"
    if not hit:
        return f"0/{len(values)}"
    return f"{len(hit)}/{len(values)} (r{min(hit)}-{max(hit)})"


def report(
    results: dict[Key, list[RunResult]],
    seeds: Sequence[int],
    rounds: int,
    fraction: float = BYZANTINE_FRACTION,
    root: str = "split",
    alpha: float = DIRICHLET_ALPHA,
) -> str:
    out = [
        f"# attack_eval: {rounds} rounds, seeds {', '.join(map(str, seeds))}, attackers {fraction:g} of n, "
        f"root data {root}, default strategy {DEFAULT_STRATEGY}",
    ]
    settings = sorted(
        {k[:3] for k in results}, key=lambda s: (_task_order(s[0]), PARTITIONS.index(s[1]), s[2])
    )
    for task, partition, n in settings:
        present = list(dict.fromkeys(k[3] for k in results if k[:3] == (task, partition, n)))
        strategies = [s for s in STRATEGIES if s in present] + [s for s in present if s not in STRATEGIES]
        attacks = [a for a in ATTACKS if any(k == (task, partition, n, strategies[0], a) for k in results)]
        label = "IID" if partition == "iid" else f"Dirichlet({alpha:g})"
        out += ["", f"## {task}, {label}, n = {n}", "", "Test accuracy % (mean of seeds):", ""]
        out.append("| strategy | " + " | ".join(attacks) + " | worst drop | worst cost |")
        out.append("| --- |" + " ---: |" * (len(attacks) + 2))
        for s in strategies:
            accs = {a: _pct([r.accuracy for r in results[(task, partition, n, s, a)]]) for a in attacks}
            hostile = [a for a in attacks if a not in ("none", "absent")]
            drop = max((accs["none"] - accs[a] for a in hostile), default=0.0) if "none" in accs else 0.0
            cost = (
                f"{max((accs['absent'] - accs[a] for a in hostile), default=0.0):.1f}"
                if "absent" in accs
                else "-"
            )
            out.append(
                f"| {s} | " + " | ".join(f"{accs[a]:.1f}" for a in attacks) + f" | {drop:.1f} | {cost} |"
            )
        out += [
            "",
            "Per strategy x attack: accuracy, drop from attack-free, cost (drop from the attackers staying "
            "away), attacker/median-honest reward, attackers flagged (first-last round), attackers slashed, "
            "honest flagged/slashed (total over seeds), rollbacks, backdoor attack success rate % (ASR: "
            "triggered test inputs sent to the target class; for every attack, so attack-free is the baseline), "
            "max reward ratio over seeds, and the best-paid single attacker's over the median honest (max over "
            "seeds):",
            "",
        ]
        out.append(
            "| strategy | attack | acc % | drop | cost | reward ratio | flagged | slashed | honest flagged "
            "| honest slashed | rollbacks | ASR % | max ratio | max single |"
        )
        out.append(
            "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
        for s in strategies:
            base = (
                _pct([r.accuracy for r in results[(task, partition, n, s, "none")]])
                if "none" in attacks
                else 0.0
            )
            absent = (
                _pct([r.accuracy for r in results[(task, partition, n, s, "absent")]])
                if "absent" in attacks
                else None
            )
            for a in attacks:
                runs = results[(task, partition, n, s, a)]
                acc = _pct([r.accuracy for r in runs])
                cost = "-" if absent is None or a in ("none", "absent") else f"{absent - acc:.1f}"
                flags = [v for r in runs for v in r.attacker_first_flag]
                slashes = [v for r in runs for v in r.attacker_first_slash]
                out.append(
                    f"| {s} | {a} | {acc:.1f} | {base - acc:.1f} | {cost} | {reward_ratio(runs):.2f} | "
                    f"{_rounds(flags)} | "
                    f"{_rounds(slashes)} | {sum(r.honest_flagged for r in runs)} | "
                    f"{sum(r.honest_slashed for r in runs)} | {sum(r.rollbacks for r in runs)} | "
                    f"{_pct([r.attack_success for r in runs]):.1f} | "
                    f"{max(reward_ratio([r]) for r in runs):.2f} | "
                    f"{max(single_ratio(r) for r in runs):.2f} |"
                )
        private = {
            s: [
                r.epsilon
                for a in attacks
                for r in results[(task, partition, n, s, a)]
                if r.epsilon is not None
            ]
            for s in strategies
        }
        if any(private.values()):
            out += [
                "",
                "Differential privacy: epsilon spent by the last round (mean over runs, governed delta):",
                "",
            ]
            out += ["| strategy | epsilon |", "| --- | ---: |"]
            out += [f"| {s} | {float(np.mean(e)):.2f} |" for s, e in private.items() if e]
        cleansed = [
            (s, a, runs)
            for s in strategies
            for a in attacks
            if (runs := results[(task, partition, n, s, a)]) and runs[0].cleanse_rounds is not None
        ]
        if cleansed:
            out += [
                "",
                f"Trigger reversal: rounds in which a class was flagged, of {rounds} per seed, those in which it "
                "was the backdoor's target, and rows left out (sums over seeds):",
                "",
                "| strategy | attack | rounds flagged | target flagged | rows left out |",
                "| --- | --- | ---: | ---: | ---: |",
            ]
            out += [
                f"| {s} | {a} | {sum(r.cleanse_rounds or 0 for r in runs)} | "
                f"{sum(r.cleanse_target_rounds for r in runs)} | {sum(r.cleanse_rows_out for r in runs)} |"
                for s, a, runs in cleansed
            ]
    return "\n".join(out)


def _task_order(name: str) -> tuple[int, str]:
    """Built-in tasks in their order, then task files by name."""
    return (TASKS.index(name), "") if name in TASKS else (len(TASKS), name)


def task_name(value: str) -> str:
    """``--tasks``' type: a built-in task or ``file:<path>`` to an existing file."""
    if value in TASKS:
        return value
    if not value.startswith(TASK_FILE):
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a task ({', '.join(TASKS)}) nor {TASK_FILE}<path> to an .npz file"
        )
    try:
        task_from_file(value[len(TASK_FILE) :])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def honest_report(
    tasks: Sequence[str],
    ns: Sequence[int],
    seeds: Sequence[int],
    rounds: int,
    strategy: str,
    big: bool,
    small: bool = True,
) -> str:
    """Honest-only runs: organizations flagged/slashed, and the spread of honest rewards (IID)."""
    out = [
        f"# honest-only: {rounds} rounds, strategy {strategy}, seeds {', '.join(map(str, seeds))}",
        "",
        "| task | partition | n | honest flagged | honest slashed | reward max/min (IID: equal data) | acc % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    cases: list[tuple[str, str, float, int, int | None]] = []
    for task_name in tasks if small else ():
        for label, alpha in (("iid", 0.0), ("dir0.5", 0.5), ("dir0.1", 0.1)):
            for n in ns:
                cases.append((task_name, label, alpha, n, None))
    if big:
        # One hidden layer of 15,000 units on digits: 1,125,010 parameters.
        cases.append(("digits", "dir0.5", 0.5, 10, BIG_HIDDEN))
    for task_name, label, alpha, n, hidden in cases:
        flagged = slashed = 0
        spreads, accs = [], []
        for seed in seeds if hidden is None else seeds[:1]:
            task = load_task(task_name, seed, hidden)
            partition = "iid" if label == "iid" else "dirichlet"
            fed = make_federation(task, seed, n, partition, alpha or DIRICHLET_ALPHA)
            fed = Federation(fed.task, fed.seed, fed.n, fed.shards, ())
            result = run(fed, strategy, "none", rounds)
            flagged += result.honest_flagged
            slashed += result.honest_slashed
            spreads.append(max(result.honest_rewards) / max(min(result.honest_rewards), 1e-9))
            accs.append(result.accuracy)
        params = sum(v.size for v in load_task(task_name, seeds[0], hidden).init_weights(0).values())
        name = f"{task_name} ({params:,} params)"
        out.append(
            f"| {name} | {label} | {n} | {flagged} | {slashed} | {max(spreads):.2f} | {_pct(accs):.1f} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    global TRIGGER_VALUE  # --trigger sets it for the whole run (stamp reads it)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits, IID, n=10, seed 0, 4 rounds, 3 strategies"
    )
    parser.add_argument(
        "--honest", action="store_true", help="honest-only runs (false positives, reward spread)"
    )
    parser.add_argument("--big", action="store_true", help="with --honest: add a ~1M-parameter MLP run")
    parser.add_argument("--only-big", action="store_true", help="with --honest: only the ~1M-parameter run")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        type=task_name,
        metavar="TASK",
        help=f"{', '.join(TASKS)}, or {TASK_FILE}<path> to an .npz of your own (X, y; see task_from_file)",
    )
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=PARTITIONS)
    parser.add_argument("--n", nargs="+", type=int, default=[10, 30])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--fraction", type=float, default=BYZANTINE_FRACTION, help="share of the n organizations attacking"
    )
    parser.add_argument(
        "--root",
        default="split",
        choices=ROOTS,
        help=f"server root data: half its holdout, {SMALL_ROOT} examples of it, or classes 0-4 only",
    )
    parser.add_argument("--alpha", type=float, default=DIRICHLET_ALPHA, help="Dirichlet concentration")
    parser.add_argument(
        "--trigger",
        type=float,
        default=TRIGGER_VALUE,
        help="the value (standardized) the backdoor's trigger sets its features to; e.g. 1.5, inside every "
        "task's range (the attack adapted to a defence keyed on out-of-range inputs)",
    )
    args = parser.parse_args(argv)
    if args.trigger != TRIGGER_VALUE:
        TRIGGER_VALUE = args.trigger
        print(f"# backdoor trigger: the last {TRIGGER_FEATURES} features set to {TRIGGER_VALUE}\n")
    start = time.perf_counter()
    progress = lambda msg: print(f"[{msg} {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)  # noqa: E731
    if args.quick:
        args.tasks, args.partitions, args.n, args.seeds, args.rounds = ["digits"], ["iid"], [10], [0], 3
        args.strategies = ["fedavg", DEFAULT_STRATEGY]
        args.attacks = ["none", "alie", "ipm_100", "minmax_uv", "fang", "adaptive"]
    if args.honest:
        print(
            honest_report(
                args.tasks,
                args.n,
                args.seeds,
                args.rounds,
                DEFAULT_STRATEGY,
                args.big or args.only_big,
                small=not args.only_big,
            )
        )
    else:
        results = run_grid(
            args.tasks,
            args.partitions,
            args.n,
            args.strategies,
            args.attacks,
            args.seeds,
            args.rounds,
            progress,
            args.fraction,
            args.root,
            args.alpha,
        )
        print(report(results, args.seeds, args.rounds, args.fraction, args.root, args.alpha))
    print(f"[{time.perf_counter() - start:.1f} s]", file=sys.stderr)


if __name__ == "__main__":
    main()
