"""Local tabular data: CSV loading with standardization, and partitions of sklearn's digits for simulations.

A :class:`Dataset` is ``x`` (float32, ``n × d``) and ``y`` (int64 class labels ``0..k-1``). Features are
standardized (zero mean, unit variance per column) by default. In a federation every organization should
scale features the same way: pass a shared :class:`Standardizer` (``Standardizer.load(path)``) instead of
fitting one on local data when the organizations have agreed on one.

Scaling must also match what the server evaluates on: its bundled task (``fedledger.datasets``) scales
digits pixels to [0, 1] and reads a holdout CSV's features as they are, so pass ``standardize=False``
(or the federation's shared standardizer) when the server's holdout is not standardized the same way.

``load_digits_dataset`` reads the 8×8 digits data bundled with scikit-learn (no download), and
``partition_iid`` / ``partition_dirichlet`` split a data set among simulated organizations: the Dirichlet
split draws each class's share per organization from ``Dir(alpha)``, so a small ``alpha`` gives each
organization few classes (strongly non-IID) and a large one approaches IID.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.errors import DataError


@dataclass(frozen=True)
class Standardizer:
    """Per-column ``(x - mean) / std`` (a zero ``std`` is treated as 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Column means and standard deviations of ``x`` (a constant column keeps a scale of 1)."""
        mean = x.mean(axis=0).astype(np.float32)
        std = x.std(axis=0).astype(np.float32)
        std[std < 1e-8] = 1.0
        return cls(mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``x`` standardized with these statistics, as float32."""
        if x.shape[1] != self.mean.shape[0]:
            raise DataError(f"the standardizer has {self.mean.shape[0]} columns, the data {x.shape[1]}")
        scaled: np.ndarray = ((x - self.mean) / self.std).astype(np.float32)
        return scaled

    def save(self, path: Path | str) -> None:
        """Write the statistics as JSON."""
        Path(path).write_text(json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist()}))

    @classmethod
    def load(cls, path: Path | str) -> Standardizer:
        """Read statistics written by :meth:`save`."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(np.asarray(raw["mean"], np.float32), np.asarray(raw["std"], np.float32))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the standardizer {path}: {exc}") from None


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, rows are samples) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] = ()
    standardizer: Standardizer | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise DataError(f"features must be n×d and labels n, got {self.x.shape} and {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (largest label + 1)."""
        return int(self.y.max()) + 1 if len(self.y) else 0

    def subset(self, index: np.ndarray | Sequence[int]) -> Dataset:
        """The rows at ``index``, as a new data set."""
        index = np.asarray(index, dtype=np.int64)
        return Dataset(self.x[index], self.y[index], self.feature_names, self.standardizer)

    def split(
        self, test_fraction: float = 0.2, seed: int | np.random.Generator = 0
    ) -> tuple[Dataset, Dataset]:
        """A shuffled (train, test) split, stratified by class."""
        if not 0.0 < test_fraction < 1.0:
            raise DataError("test_fraction must be in (0, 1)")
        rng = np.random.default_rng(seed)
        train_idx: list[np.ndarray] = []
        test_idx: list[np.ndarray] = []
        for label in np.unique(self.y):
            idx = rng.permutation(np.flatnonzero(self.y == label))
            n_test = int(round(len(idx) * test_fraction))
            test_idx.append(idx[:n_test])
            train_idx.append(idx[n_test:])
        return (
            self.subset(rng.permutation(np.concatenate(train_idx))),
            self.subset(rng.permutation(np.concatenate(test_idx))),
        )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_csv(
    path: Path | str,
    label_column: str | int | None = None,
    *,
    standardize: bool = True,
    standardizer: Standardizer | None = None,
    delimiter: str = ",",
) -> Dataset:
    """Read a CSV of numeric features and one integer label column.

    The label is the last column unless ``label_column`` names one (by header name, or by 0-based index).
    A first row with any non-numeric cell is the header. Empty or non-numeric feature cells, and labels
    that are not non-negative integers, raise :class:`DataError` naming the row.
    """
    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [
                row for row in csv.reader(handle, delimiter=delimiter) if row and any(c.strip() for c in row)
            ]
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise DataError(f"{path} is empty")
    header: list[str] | None = None
    first_line = 1
    if not all(_is_number(cell.strip()) for cell in rows[0]):
        header = [cell.strip() for cell in rows[0]]
        rows = rows[1:]
        first_line = 2
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    width = len(header) if header is not None else len(rows[0])
    if width < 2:
        raise DataError(f"{path} needs at least one feature column and a label column")
    if label_column is None:
        label_at = width - 1
    elif isinstance(label_column, str) and header is not None and label_column in header:
        label_at = header.index(label_column)
    elif isinstance(label_column, int) or label_column.isdigit():
        label_at = int(label_column)
        if not 0 <= label_at < width:
            raise DataError(f"label column index {label_at} is outside the {width} columns of {path}")
    elif header is None:
        raise DataError(
            f"{path} has no header row, so the label column cannot be named {label_column!r}; give its index"
        )
    else:
        raise DataError(f"{path} has no column {label_column!r}; columns: {', '.join(header)}")
    features = np.empty((len(rows), width - 1), dtype=np.float64)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        line = first_line + i
        if len(row) != width:
            raise DataError(f"{path}:{line}: {len(row)} cells, expected {width}")
        cells = [c.strip() for c in row]
        label = cells.pop(label_at)
        try:
            value = float(label)
        except ValueError:
            raise DataError(
                f"{path}:{line}: label {label!r} is not a number; labels are integer class ids"
            ) from None
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise DataError(f"{path}:{line}: label {label!r} is not a non-negative integer class id")
        labels[i] = int(value)
        try:
            features[i] = [float(c) for c in cells]
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise DataError(f"{path}:{line}: feature value {bad!r} is not a number") from None
    if not np.isfinite(features).all():
        line = first_line + int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise DataError(f"{path}:{line}: NaN or infinite feature value")
    names: tuple[str, ...] = ()
    if header is not None:
        names = tuple(name for j, name in enumerate(header) if j != label_at)
    x = features.astype(np.float32)
    scaler = standardizer
    if scaler is None and standardize:
        scaler = Standardizer.fit(x)
    if scaler is not None:
        x = scaler.transform(x)
    return Dataset(x, labels, names, scaler)


def save_csv(dataset: Dataset, path: Path | str, *, label_name: str = "label") -> None:
    """Write ``dataset`` as a CSV with a header, label last (what :func:`load_csv` reads back)."""
    names = list(dataset.feature_names) or [f"f{j}" for j in range(dataset.n_features)]
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, label_name])
        for row, label in zip(dataset.x, dataset.y, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), int(label)])


def load_digits_dataset(split: str = "train", *, preprocessing: str = "unit") -> Dataset:
    """scikit-learn's bundled 8×8 digits (64 features, 10 classes); nothing is downloaded.

    ``split``: ``"train"`` (the 80 % organizations share), ``"holdout"`` (the server's fixed 20 %), or
    ``"all"`` (1797 samples), exactly the split of :func:`fedledger.datasets.digits_split`, so simulated
    organizations never train on the server's holdout. ``preprocessing``: ``"unit"`` scales pixels to
    [0, 1] like the server's holdout (use it when the server evaluates the bundled task);
    ``"standardize"`` fits a :class:`Standardizer` on the chosen split.
    """
    from fedledger.datasets import digits_split

    x_train, y_train, x_holdout, y_holdout = digits_split()
    if split == "train":
        x, y = x_train, y_train
    elif split == "holdout":
        x, y = x_holdout, y_holdout
    elif split == "all":
        x, y = np.concatenate([x_train, x_holdout]), np.concatenate([y_train, y_holdout])
    else:
        raise DataError(f"split must be train, holdout or all, got {split!r}")
    x = np.asarray(x, dtype=np.float32)
    scaler = None
    if preprocessing == "standardize":
        scaler = Standardizer.fit(x)
        x = scaler.transform(x)
    elif preprocessing != "unit":
        raise DataError(f"preprocessing must be unit or standardize, got {preprocessing!r}")
    return Dataset(x, np.asarray(y, dtype=np.int64), tuple(f"pixel_{i}" for i in range(64)), scaler)


def partition_iid(dataset: Dataset, n_parts: int, seed: int | np.random.Generator = 0) -> list[Dataset]:
    """Shuffle and split into ``n_parts`` parts of (almost) equal size."""
    if not 1 <= n_parts <= len(dataset):
        raise DataError(f"cannot split {len(dataset)} samples into {n_parts} parts")
    rng = np.random.default_rng(seed)
    return [dataset.subset(np.sort(part)) for part in np.array_split(rng.permutation(len(dataset)), n_parts)]


def partition_dirichlet(
    dataset: Dataset,
    n_parts: int,
    alpha: float = 0.5,
    seed: int | np.random.Generator = 0,
    *,
    min_size: int = 10,
) -> list[Dataset]:
    """Non-IID split: for every class, its samples are divided among the parts in proportions drawn from
    ``Dirichlet(alpha)``. Draws are repeated (up to 100 times) until every part has ``min_size`` samples."""
    if alpha <= 0:
        raise DataError("alpha must be positive")
    if not n_parts >= 1 or n_parts * min_size > len(dataset):
        raise DataError(f"cannot split {len(dataset)} samples into {n_parts} parts of at least {min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(n_parts)]
        for label in np.unique(dataset.y):
            idx = rng.permutation(np.flatnonzero(dataset.y == label))
            shares = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [dataset.subset(np.sort(np.asarray(p, dtype=np.int64))) for p in parts]
    raise DataError(
        f"no Dirichlet(alpha={alpha}) split gave every part {min_size} samples; raise alpha or lower min_size"
    )


def _span(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}" if lo >= 0 else f"{lo:g} to {hi:g}"


def check_input_contract(dataset: Dataset, contract: Mapping[str, Any]) -> None:
    """Check ``dataset`` against a model's input contract (``input_contract`` in the model's metadata:
    feature count, value range, classes); :class:`DataError` says what is wrong and how to fix it."""
    features = int(contract["features"])
    kind = str(contract.get("feature_kind") or "features")
    if dataset.n_features != features:
        raise DataError(
            f"the data has {dataset.n_features} feature columns, the model expects {features} "
            f"({contract.get('preprocessing', 'see the model input contract')}), then the label column"
        )
    if len(dataset) == 0:
        raise DataError("the data set is empty")
    classes = int(contract["classes"])
    labels_lo, labels_hi = int(dataset.y.min()), int(dataset.y.max())
    if labels_lo < 0 or labels_hi >= classes:
        raise DataError(
            f"labels {labels_lo}..{labels_hi}, the model expects class ids 0..{classes - 1} "
            "in the label column"
        )
    expected = contract.get("value_range")
    if not expected:
        return
    low, high = float(expected[0]), float(expected[1])
    slack = float(contract.get("tolerance") or 0.0) + 1e-6 * max(1.0, high - low)
    lo, hi = float(dataset.x.min()), float(dataset.x.max())
    if lo >= low - slack and hi <= high + slack:
        return
    problem = f"values {_span(lo, hi)}, the model expects [{low:g}, {high:g}]"
    if dataset.standardizer is not None:
        hint = (
            "the features were standardized here; the model expects them as they are "
            "(--no-standardize, without --standardizer)"
        )
    elif lo >= 0 and low == 0 and hi > high:
        factor = hi / high
        scale = f"1/{factor:g}" if abs(factor - round(factor)) < 1e-9 else f"{high:g}/{hi:g}"
        hint = f"scale your {kind} by {scale}"
    elif lo < low:
        hint = f"the {kind} look centred or standardized; the model expects {contract.get('preprocessing')}"
    else:
        hint = f"scale your {kind} into [{low:g}, {high:g}] ({contract.get('preprocessing')})"
    raise DataError(f"{problem}: {hint}")
