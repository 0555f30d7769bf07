"""Defences against targeted poisoning (backdoors), as pure steps that go after the default rule.

- FLAME (Nguyen et al., USENIX Security 2022): a filter that clusters the updates' cosine distances (HDBSCAN,
  the majority cluster kept), clipping to the round's median norm, and Gaussian noise scaled to that norm on
  the aggregate, so that what a few coherent updates inject is outvoted, bounded and drowned. Norm bounding
  with weak DP noise (Sun et al. 2019) is the clipping and the noise without the filter.
- The robust learning rate (RLR, Ozdayi et al., AAAI 2021): per coordinate, unless enough of the rows agree
  on the sign of their change, the aggregate's step is reversed (or, milder, dropped): a backdoor lives in
  coordinates that only its few senders push, honest data having no reason to move them.
- Trigger reversal (Neural Cleanse, Wang et al., S&P 2019): on a model and the server's clean examples, the
  smallest input mask and pattern sending the examples to each class; a class reachable with a far smaller
  mask than the others (MAD anomaly index > 2) is backdoored, and the reversed trigger can score updates.
- Unlearning against out-of-range triggers: copies of the server's root data each with one feature set far
  outside the standardized range, labels kept, for the server to train the candidate model on (Neural
  Cleanse's unlearning, with generic triggers instead of reversed ones).
- Coordinate-wise robustness restricted to outliers: each let-in row's coordinates winsorized to the
  coordinate-wise median +- k robust spreads of the let-in rows (:func:`winsorize`), or each row's parameter
  blocks (a first-layer row is one input feature's weights) clipped to the rows' median block norm
  (:func:`clip_blocks`): a minority pushing weights the majority leaves at noise is an outlier there every
  round, however ordinary its update's norm and cosines are; or the aggregate's component along the rows'
  leading principal directions replaced by the median there (:func:`principal_median`).
- Clamped inputs: the model clamps every feature to the server's root data range (:func:`input_bounds`,
  :func:`clamp_inputs`), so a trigger beyond it is seen as a point of the range, where honest data has a say.

The default rule (:mod:`aggregator.strategies.fltrust_guarded`) already clips to the passers' median norm;
these functions act on its coefficients and aggregate, so ``scripts/attack_eval.py`` (strategies spelled
``fltrust_guarded+flame``, ``+noise=0.01``, ``+rlr=0.4``, ``+signmask=0.4``, ``+cleanse``, ``+unlearn=10``,
``+winsor=2``, ``+blockclip=1``, ``+pcmedian=3``, ``+clamp=0``)
measures what each buys before anything is wired into a rule. None is in the default: see docs/benchmarks.md (issue 20, targeted
poisoning; trigger reversal; coordinate-wise robustness and clamped inputs) for what each costs and where it
fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def winsorize(Y: np.ndarray, k: float) -> np.ndarray:
    """Each coordinate of the rows ``Y`` (m x d) clipped to [median - k s, median + k s], the median and the
    robust spread s = 1.4826 MAD taken over the rows per coordinate; ``k`` = 0 replaces every value by the
    coordinate's median. While fewer than half the rows push a coordinate the rest leave at noise, the median
    and the spread are the majority's and what the minority adds there is capped at k spreads a round; where
    the majority moves together (the task's learning) the interval moves with it. Float32, a new array."""
    if not k >= 0:
        raise InvalidParameter(f"the winsorizing width must be >= 0 robust spreads, got {k}")
    Y = as_update_matrix(Y).astype(np.float64)
    if Y.shape[0] < 3:
        return Y.astype(np.float32)
    median = np.median(Y, axis=0)
    spread = 1.4826 * np.median(np.abs(Y - median), axis=0)
    out: np.ndarray = np.clip(Y, median - k * spread, median + k * spread).astype(np.float32)
    return out


def block_starts(shapes: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Where each parameter block of a flattened model starts (:func:`fedledger.payload.flatten` order):
    each row of a 2-D tensor (for a first layer, one input feature's outgoing weights; for the output layer,
    one hidden unit's) is a block, a vector is one block."""
    starts: list[int] = []
    offset = 0
    for shape in shapes.values():
        dims = [int(s) for s in shape]
        if len(dims) == 2:
            starts.extend(offset + r * dims[1] for r in range(dims[0]))
        elif int(np.prod(dims)) > 0:
            starts.append(offset)
        offset += int(np.prod(dims))
    return np.asarray(starts, dtype=np.int64)


def clip_blocks(Y: np.ndarray, starts: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Each row's block (coordinates ``starts[b]`` to ``starts[b + 1]``) scaled down to at most ``factor`` x
    the median of that block's norm over the rows (m x d in, float32 out). A whole-update clip bounds what a
    row moves in total; a row that spends its norm on the few weights of one input feature (a trigger's) is
    not an outlier in total, but is in that feature's block."""
    if not factor > 0:
        raise InvalidParameter(f"the block clip must be a positive multiple of the median, got {factor}")
    Y = as_update_matrix(Y).astype(np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= Y.shape[1]:
        raise InvalidParameter("block starts must begin at 0, increase and lie inside the update")
    norms = np.sqrt(np.add.reduceat(Y * Y, starts, axis=1))  # (m, blocks)
    bound = factor * np.median(norms, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(norms > bound, bound / norms, 1.0)
    sizes = np.diff(np.append(starts, Y.shape[1]))
    out: np.ndarray = (Y * np.repeat(scale, sizes, axis=1)).astype(np.float32)
    return out


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The lower weighted median: the smallest value whose cumulative weight reaches half the total."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if values.ndim != 1 or values.shape != weights.shape or values.size == 0 or not weights.sum() > 0:
        raise InvalidParameter("a weighted median needs one positive-total weight per value")
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def principal_median(Y: np.ndarray, weights: np.ndarray, directions: int) -> np.ndarray:
    """The weighted mean of the rows ``Y`` (m x d, ``weights`` summing to one), with its component along each
    of the ``directions`` leading principal directions of the rows' deviations from it replaced by the
    weighted median of the rows' components there.

    Coordinate-wise robustness in the basis where the rows disagree most: a minority that pushes one
    direction together (a backdoor's, shared by its senders and by no honest row) makes it a leading
    direction of the deviations, and along it the median is the majority's, while the mean moves by the
    minority's share of the push. Everywhere else the aggregate is the mean. Float32 (d,)."""
    if directions < 0:
        raise InvalidParameter(f"the number of principal directions must be >= 0, got {directions}")
    Y = as_update_matrix(Y).astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (Y.shape[0],) or np.any(w < 0) or not w.sum() > 0:
        raise InvalidParameter("principal_median needs one non-negative weight per row, not all zero")
    w = w / w.sum()
    mean: np.ndarray = w @ Y
    k = min(directions, Y.shape[0] - 1)
    if k < 1:
        return mean.astype(np.float32)
    deviations = Y - mean
    _, singular, Vt = np.linalg.svd(deviations, full_matrices=False)
    out: np.ndarray = mean.copy()
    for v, sigma in zip(Vt[:k], singular[:k], strict=True):
        if not sigma > 0:
            break
        # The mean's component along v is w @ (deviations @ v) = 0: the shift is the median itself.
        out += weighted_median(deviations @ v, w) * v
    return out.astype(np.float32)


def input_bounds(X: np.ndarray, tail: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the ``tail`` and 1 - ``tail`` quantiles of the examples ``X`` (the server's root data;
    ``tail`` = 0: their minimum and maximum): the range a model that clamps its inputs to it sees."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0 or not 0 <= tail < 0.5:
        raise InvalidParameter(
            f"input bounds need examples (m > 0, F) and 0 <= tail < 0.5, got {X.shape}, {tail}"
        )
    return np.quantile(X, tail, axis=0), np.quantile(X, 1.0 - tail, axis=0)


def clamp_inputs(X: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Every feature of ``X`` clamped to its bounds (float32): a ReLU network extrapolates linearly, so a
    trigger far outside the data's range reaches a region no honest example constrains; clamped, it is a
    point of the range, where the honest organizations' data has a say."""
    out: np.ndarray = np.clip(np.asarray(X, dtype=np.float32), bounds[0], bounds[1]).astype(np.float32)
    return out


def foolsgold_weights(H: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """FoolsGold's weights (Fung et al., RAID 2020) from each organization's history ``H`` (n x d, e.g. the
    sum of its updates so far, here minus the coordinate median of the histories): cosine similarity between
    histories, each row's largest similarity pardoned by the ratio of the rows' own largest, weight
    1 - largest similarity, scaled so the top weight is just under one, then the logit
    kappa (ln(w / (1 - w)) + 0.5) clipped to [0, 1]. Rows that keep pushing one direction together (sybils)
    get weights near zero; a lone row keeps about one. Float64 (n,); all ones for fewer than two rows."""
    H = as_update_matrix(H).astype(np.float64)
    n = H.shape[0]
    if n < 2:
        return np.ones(n)
    cs = 1.0 - cosine_distances(H)
    np.fill_diagonal(cs, -np.inf)
    top = np.maximum(cs.max(axis=1), 0.0)
    np.fill_diagonal(cs, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pardon = np.where(top[None, :] > top[:, None], top[:, None] / np.maximum(top[None, :], 1e-30), 1.0)
    cs = cs * pardon
    np.fill_diagonal(cs, -np.inf)
    w = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    if not w.max() > 0:
        return np.zeros(n)
    w = 0.99 * w / w.max()
    with np.errstate(divide="ignore"):
        logit = kappa * (np.log(w / (1.0 - w)) + 0.5)
    out: np.ndarray = np.clip(np.where(w > 0, logit, 0.0), 0.0, 1.0)
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


# --- trigger reversal (Neural Cleanse, Wang et al., S&P 2019) -------------------------------------------


def _input_gradient(
    weights: Mapping[str, np.ndarray], X: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For inputs ``X`` (C, m, F), batch c aimed at class ``targets[c]``: the per-example cross-entropy's
    gradient with respect to the inputs (C, m, F, divided by m) and the predicted classes (C, m)."""
    if "dense.weight" in weights:
        W, b = weights["dense.weight"], weights["dense.bias"]
        z = X @ W + b
    else:
        W1, b1, W2, b2 = (
            weights[k] for k in ("hidden.weight", "hidden.bias", "output.weight", "output.bias")
        )
        pre = X @ W1 + b1
        z = np.maximum(pre, 0.0) @ W2 + b2
    z = z - z.max(axis=2, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=2, keepdims=True)
    predicted = p.argmax(axis=2)
    g = p
    g[np.arange(len(targets)), :, targets] -= 1.0
    g /= X.shape[1]
    # Back through the model to its inputs: the weights' transpose (softmax) or through the ReLU (MLP).
    gx: np.ndarray = g @ W.T if "dense.weight" in weights else ((g @ W2.T) * (pre > 0)) @ W1.T
    return gx, predicted


def reverse_triggers(
    weights: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    bound: float,
    steps: int = 60,
    lr: float = 0.1,
    l1: float = 0.01,
    success: float = 0.9,
    max_examples: int = 128,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neural Cleanse's reverse engineering, per class, on clean examples: the smallest input mask ``m``
    (in [0, 1] per feature) and pattern ``p`` (in [-``bound``, ``bound``]) such that ``(1 - m) x + m p``
    sends at least ``success`` of the examples not of class c to c. Adam on cross-entropy + ``l1`` x |m|_1,
    the penalty raised while the target is met and lowered while it is not (the paper's schedule).

    Returns (mask L1 norms (C,), masks (C, F), patterns (C, F)); a class whose target is never met has the
    norm F (every feature), its last mask and pattern. A backdoored class is reachable with a far smaller
    mask than the others: see :func:`anomaly_index`.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) == 0 or len(y) != len(X):
        raise InvalidParameter(
            f"trigger reversal needs clean examples (m, F) with m > 0 labels, got {X.shape} and {y.shape}"
        )
    if not bound > 0 or steps < 1 or not 0 < success <= 1 or max_examples < 1:
        raise InvalidParameter(
            "trigger reversal needs bound > 0, steps >= 1, 0 < success <= 1 and max_examples >= 1, got "
            f"{bound}, {steps}, {success}, {max_examples}"
        )
    if rng is not None and len(y) > max_examples:
        pick = rng.choice(len(y), max_examples, replace=False)
        X, y = X[pick], y[pick]
    else:
        X, y = X[:max_examples], y[:max_examples]
    model = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    classes = int((model["dense.bias"] if "dense.bias" in model else model["output.bias"]).shape[0])
    features = X.shape[1]
    targets = np.arange(classes)
    others = (y[None, :] != targets[:, None]).astype(np.float64)  # (C, m): examples counted per class
    a = np.full((classes, features), -3.0)  # mask logits: start nearly empty
    b = np.zeros((classes, features))  # pattern, through tanh
    state = [np.zeros_like(a), np.zeros_like(a), np.zeros_like(b), np.zeros_like(b)]
    penalty = np.full(classes, l1)
    best_norm = np.full(classes, float(features))
    best_mask = np.zeros((classes, features))
    best_pattern = np.zeros((classes, features))
    beta1, beta2 = 0.9, 0.999
    for t in range(1, steps + 1):
        m = 1.0 / (1.0 + np.exp(-a))
        p = bound * np.tanh(b)
        Xs = (1.0 - m[:, None, :]) * X[None, :, :] + m[:, None, :] * p[:, None, :]
        gx, predicted = _input_gradient(model, Xs, targets)
        gx *= others[:, :, None] * (len(y) / np.maximum(others.sum(axis=1), 1.0))[:, None, None]
        rate = ((predicted == targets[:, None]) * others).sum(axis=1) / np.maximum(others.sum(axis=1), 1.0)
        norm = m.sum(axis=1)
        better = (rate >= success) & (norm < best_norm)
        best_norm = np.where(better, norm, best_norm)
        best_mask[better], best_pattern[better] = m[better], p[better]
        penalty = np.where(rate >= success, penalty * 1.2, penalty / 1.2)
        grad_m = (gx * (p[:, None, :] - X[None, :, :])).sum(axis=1) + penalty[:, None]
        grad_a = grad_m * m * (1.0 - m)
        grad_b = (gx * m[:, None, :]).sum(axis=1) * bound * (1.0 - np.tanh(b) ** 2)
        for k, (param, grad) in enumerate(((a, grad_a), (b, grad_b))):
            first, second = state[2 * k], state[2 * k + 1]
            first *= beta1
            first += (1 - beta1) * grad
            second *= beta2
            second += (1 - beta2) * grad * grad
            param -= lr * (first / (1 - beta1**t)) / (np.sqrt(second / (1 - beta2**t)) + 1e-8)
    return best_norm, best_mask, best_pattern


def anomaly_index(norms: np.ndarray) -> np.ndarray:
    """Neural Cleanse's anomaly index of each class: how many consistency-scaled MADs (1.4826 x the median
    absolute deviation) its mask norm lies below the median norm; positive below, negative above (only a
    small mask is a backdoor). 0 everywhere when the norms do not vary."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 1 or norms.size == 0:
        raise InvalidParameter(f"the anomaly index needs one mask norm per class, got shape {norms.shape}")
    median = float(np.median(norms))
    mad = 1.4826 * float(np.median(np.abs(norms - median)))
    if not mad > 0:
        return np.zeros_like(norms)
    out: np.ndarray = (median - norms) / mad
    return out


def apply_trigger(X: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``(1 - mask) x + mask pattern`` for every row of ``X`` (float32)."""
    out: np.ndarray = ((1.0 - mask) * np.asarray(X, dtype=np.float64) + mask * pattern).astype(np.float32)
    return out


def flip_rate(weights: Mapping[str, np.ndarray], X: np.ndarray, target: int) -> float:
    """Share of the rows of ``X`` the model sends to class ``target`` (0 for no rows)."""
    if len(X) == 0:
        return 0.0
    from fedledger.models import logits

    with np.errstate(all="ignore"):
        z = logits(weights, np.asarray(X, dtype=np.float32))
    return float(np.mean(z.argmax(axis=1) == target))


def out_of_range_copies(
    X: np.ndarray,
    y: np.ndarray,
    copies: int,
    low: float,
    high: float,
    rng: np.random.Generator,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unlearning data against out-of-range triggers: ``copies`` copies of the (standardized) examples, each
    with one feature drawn at random (from ``features``, default all) set to +-U(``low``, ``high``), keeping
    their labels. Training on them teaches the model that one feature far outside the data's range does not
    decide the class, which is what a trigger of a few such features relies on. Returns (copies x m, F)
    float32 rows and their labels."""
    if copies < 0 or not 0 <= low <= high:
        raise InvalidParameter(
            f"out-of-range copies need copies >= 0 and 0 <= low <= high, got {copies}, {low}, {high}"
        )
    X = np.asarray(X, dtype=np.float32)
    pool = np.arange(X.shape[1]) if features is None else np.asarray(features, dtype=np.int64)
    if pool.size == 0 or pool.min() < 0 or pool.max() >= X.shape[1]:
        raise InvalidParameter(f"the features to move must be column indices of X, got {pool.tolist()}")
    out = np.tile(X, (copies, 1))
    rows = np.arange(out.shape[0])
    columns = rng.choice(pool, size=out.shape[0])
    out[rows, columns] = rng.choice([-1.0, 1.0], size=out.shape[0]) * rng.uniform(
        low, high, size=out.shape[0]
    )
    return out, np.tile(np.asarray(y), copies)


def permutation_importance(
    weights: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Per feature, how much the model's mean cross-entropy on (``X``, ``y``) rises when that feature is
    shuffled across the examples (F,): near zero for a feature the model does not use to tell the classes."""
    from fedledger.models import evaluate

    X = np.asarray(X, dtype=np.float32)
    loss, _ = evaluate(weights, X, y)
    rises = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        shuffled = X.copy()
        shuffled[:, j] = X[rng.permutation(len(X)), j]
        rises[j] = evaluate(weights, shuffled, y)[0] - loss
    return rises
