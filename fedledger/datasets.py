"""The platform's bundled task: scikit-learn's digits (8x8 images, 10 classes; shipped with sklearn, no
download). The server keeps a fixed, stratified 20 % as its holdout; organizations share the rest."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 20261123


@lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_holdout, y_holdout): pixels scaled to [0, 1], float32 features, int labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    X_train, X_holdout, y_train, y_holdout = train_test_split(
        X, y, test_size=HOLDOUT_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return X_train, y_train, X_holdout, y_holdout


def load_holdout(source: str) -> tuple[np.ndarray, np.ndarray]:
    """The server's holdout set: ``digits`` (bundled) or a CSV path whose last column is the integer label."""
    if source == "digits":
        _, _, X, y = digits_split()
        return X, y
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"holdout data {source!r} is neither 'digits' nor an existing CSV file")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


@lru_cache(maxsize=4)
def holdout_size(source: str) -> int:
    """How many labelled examples the server's holdout ``source`` has (read once per process)."""
    _, y = load_holdout(source)
    return len(y)


@lru_cache(maxsize=4)
def input_contract(source: str) -> dict[str, object]:
    """What an organization's data must look like for models evaluated on ``source``: the holdout the
    server scores updates on. Data shaped otherwise trains a model the holdout judges badly, and the
    update is excluded; the client checks its data against this before training.

    ``value_range`` with ``tolerance`` bounds every feature value; ``standardize`` says whether features are
    standardized per column (they are not for either source: the holdout is used as it is)."""
    if source == "digits":
        return {
            "task": "digits",
            "features": 64,
            "feature_kind": "pixels",
            "value_range": [0.0, 1.0],
            "tolerance": 0.0,
            "standardize": False,
            "classes": 10,
            "label_column": "last",
            "preprocessing": (
                "8x8 grayscale digit images flattened row by row to 64 columns, each raw pixel (0-16, as in "
                "scikit-learn's load_digits) divided by 16; not standardized"
            ),
        }
    X, y = load_holdout(source)
    lo, hi = float(X.min()), float(X.max())
    return {
        "task": "csv",
        "features": int(X.shape[1]),
        "feature_kind": "features",
        "value_range": [lo, hi],
        # The holdout's extremes are one sample's: local data may reach a little beyond them.
        "tolerance": 0.25 * (hi - lo),
        "standardize": False,
        "classes": int(y.max()) + 1,
        "label_column": "last",
        "preprocessing": "the features as in the server's holdout CSV, used as they are",
    }
