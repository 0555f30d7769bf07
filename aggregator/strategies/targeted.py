"""Defences against targeted poisoning (backdoors), as pure steps that go after the default rule.

- FLAME (Nguyen et al., USENIX Security 2022): a filter that clusters the updates' cosine distances (HDBSCAN,
  the majority cluster kept), clipping to the round's median norm, and Gaussian noise scaled to that norm on
  the aggregate, so that what a few coherent updates inject is outvoted, bounded and drowned. Norm bounding
  with weak DP noise (Sun et al. 2019) is the clipping and the noise without the filter.
- The robust learning rate (RLR, Ozdayi et al., AAAI 2021): per coordinate, unless enough of the rows agree
  on the sign of their change, the aggregate's step is reversed (or, milder, dropped): a backdoor lives in
  coordinates that only its few senders push, honest data having no reason to move them.

The default rule (:mod:`aggregator.strategies.fltrust_guarded`) already clips to the passers' median norm;
these functions act on its coefficients and aggregate, so ``scripts/attack_eval.py`` (strategies spelled
``fltrust_guarded+flame``, ``+noise=0.01``, ``+rlr=0.4``, ``+signmask=0.4``) measures what each buys
before anything is wired into a rule. None is in the default: see docs/benchmarks.md (issue 20, targeted
poisoning) for what each costs and where it fails.
"""

from __future__ import annotations

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.validation import as_update_matrix


def cosine_distances(X: np.ndarray) -> np.ndarray:
    """1 - cosine between every pair of rows (n x n, float64, zero diagonal; a zero row is at distance 1)."""
    X = as_update_matrix(X).astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        U = np.where(norms[:, None] > 0, X / norms[:, None], 0.0)
    distance: np.ndarray = np.clip(1.0 - U @ U.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    return distance


def majority_cluster(X: np.ndarray) -> np.ndarray:
    """FLAME's filter: HDBSCAN on cosine distances with ``min_cluster_size`` = n // 2 + 1 (so only a majority
    can form a cluster), ``min_samples`` = 1 and a single cluster allowed; True for the rows of the largest
    cluster. When HDBSCAN finds no cluster every row is kept: no majority agrees, so nothing is evidence."""
    from sklearn.cluster import HDBSCAN

    n = as_update_matrix(X).shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    labels = (
        HDBSCAN(
            min_cluster_size=n // 2 + 1,
            min_samples=1,
            metric="precomputed",
            allow_single_cluster=True,
            copy=True,
        )
        .fit(cosine_distances(X))
        .labels_
    )
    found = labels[labels >= 0]
    if found.size == 0:
        return np.ones(n, dtype=bool)
    kept: np.ndarray = labels == np.bincount(found).argmax()
    return kept


def keep_only(coefficients: np.ndarray, keep: np.ndarray, norms: np.ndarray, clip_norm: float) -> np.ndarray:
    """A clipped, normalised weighting (c_i = min(1, clip / ||x_i||) w_i / sum w) restricted to ``keep``: the
    kept rows' weights renormalised to sum to one, each keeping its clip scale; all zero if none is kept."""
    c = np.asarray(coefficients, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.minimum(1.0, clip_norm / np.maximum(np.asarray(norms, dtype=np.float64), 1e-300))
        weight = np.where(c > 0, c / scale, 0.0)
    weight = np.where(keep, weight, 0.0)
    if not weight.sum() > 0:
        return np.zeros_like(c)
    out: np.ndarray = scale * weight / weight.sum()
    return out


def sign_agreement(X: np.ndarray) -> np.ndarray:
    """Per coordinate, |number of rows moving it up - number moving it down| (0..n)."""
    X = as_update_matrix(X)
    agreement: np.ndarray = np.abs(np.sign(X).sum(axis=0, dtype=np.int64))
    return agreement


def robust_learning_rate(
    aggregate: np.ndarray, X: np.ndarray, fraction: float, reverse: bool = True
) -> np.ndarray:
    """RLR: the aggregate where at least ``fraction`` of the rows of ``X`` (the rows the rule let in) agree
    on the coordinate's sign, and elsewhere its opposite (``reverse``, the paper's rule) or zero (a step not
    taken: milder on data where honest organizations disagree). Float32, a new array."""
    if not 0 < fraction <= 1:
        raise InvalidParameter(f"the agreement fraction must be in (0, 1], got {fraction}")
    X = as_update_matrix(X)
    threshold = int(np.ceil(fraction * X.shape[0]))
    agreed = sign_agreement(X) >= threshold
    other = -aggregate if reverse else np.zeros_like(aggregate)
    out: np.ndarray = np.where(agreed, aggregate, other).astype(np.float32)
    return out


def add_noise(aggregate: np.ndarray, clip_norm: float, level: float, rng: np.random.Generator) -> np.ndarray:
    """FLAME's noise: N(0, (``level`` x ``clip_norm``)^2) on every coordinate of the aggregate (the paper's
    lambda is 0.001 for its image and text tasks); a new float32 array."""
    if not level >= 0:
        raise InvalidParameter(f"the noise level must be >= 0 (a multiple of the clip norm), got {level}")
    noisy: np.ndarray = (aggregate + rng.normal(0.0, level * clip_norm, size=aggregate.shape)).astype(
        np.float32
    )
    return noisy
