"""The server's trusted reference update (FLTrust's g_0): trained each round on the root part of the holdout.

The holdout is split once (:func:`aggregator.scoring.contribution.split_holdout`, fixed seed) into root data for the
reference and validation data for scores and rollback, so the reference is never judged on its own data.
The reference is trained from the round's global model with plain mini-batch SGD of the built-in model
families (``fedledger.models.train``), seeded by the round id so an auditor can recompute it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import split_holdout
from fedledger.models import UnknownModelFamily, train

ROOT_FRACTION = 0.5
SPLIT_SEED = 20261129


@dataclass(frozen=True)
class ReferenceTraining:
    """The server's local training of the reference: like an organization's (see tests/worker/conftest.py
    and the SDK's trainers), so the reference's step has the size of an honest client's."""

    epochs: int = 3
    lr: float = 0.5
    batch: int = 32


def server_data(
    holdout: tuple[np.ndarray, np.ndarray],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(root, validation) parts of the server's holdout, always the same split."""
    X, y = holdout
    return split_holdout(np.asarray(X, dtype=np.float32), np.asarray(y), ROOT_FRACTION, SPLIT_SEED)


def reference_update(
    weights: Mapping[str, np.ndarray],
    order: Sequence[str],
    root: tuple[np.ndarray, np.ndarray],
    round_id: int,
    training: ReferenceTraining = ReferenceTraining(),  # noqa: B008 - frozen, immutable default
) -> np.ndarray | None:
    """The flat reference delta (trained weights minus ``weights``, tensors in ``order``), or None for a
    model family the server cannot train (then the round has no reference; FLTrust refuses such a round)."""
    X, y = root
    if len(y) == 0:
        raise InvalidParameter("the server's root data is empty: a reference update needs examples")
    try:
        trained = train(
            weights,
            np.asarray(X, dtype=np.float32),
            np.asarray(y, dtype=np.int64),
            epochs=training.epochs,
            lr=training.lr,
            batch=training.batch,
            rng=np.random.default_rng([round_id, 0xF1]),
        )
    except UnknownModelFamily:
        return None
    delta: np.ndarray = np.concatenate(
        [(trained[name] - np.asarray(weights[name], dtype=np.float32)).reshape(-1) for name in order]
    ).astype(np.float32)
    return delta
