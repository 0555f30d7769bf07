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
