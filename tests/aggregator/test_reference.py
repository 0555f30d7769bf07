"""The server's reference update: trained on the root part of the holdout, deterministic per round."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.round.server_update import reference_update, server_data
from fedledger.datasets import digits_split
from fedledger.models import evaluate, init_mlp, init_softmax, train_mlp


@pytest.fixture(scope="module")
def holdout() -> tuple[np.ndarray, np.ndarray]:
    _, _, X, y = digits_split()
    return X, y


def test_root_and_validation_are_disjoint_halves(holdout: tuple[np.ndarray, np.ndarray]) -> None:
    (Xr, yr), (Xv, yv) = server_data(holdout)
    assert len(yr) + len(yv) == len(holdout[1]) and abs(len(yr) - len(yv)) <= 10
    assert not {r.tobytes() for r in Xr} & {v.tobytes() for v in Xv}
    (Xr2, _), _ = server_data(holdout)
    np.testing.assert_array_equal(Xr, Xr2)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_reference_improves_the_root_loss_and_is_reproducible(
    holdout: tuple[np.ndarray, np.ndarray], family: str
) -> None:
    root, validation = server_data(holdout)
    weights = init_softmax(64, 10) if family == "softmax" else init_mlp(64, 16, 10, np.random.default_rng(0))
    order = sorted(weights)  # any tensor order the model's spec gives
    delta = reference_update(weights, order, root, round_id=7)
    assert delta is not None and delta.dtype == np.float32
    offset, moved = 0, {}
    for name in order:
        size = weights[name].size
        moved[name] = weights[name] + delta[offset : offset + size].reshape(weights[name].shape)
        offset += size
    assert evaluate(moved, *root)[0] < evaluate(weights, *root)[0]
    assert evaluate(moved, *validation)[0] < evaluate(weights, *validation)[0]
    np.testing.assert_array_equal(reference_update(weights, order, root, 7), delta)
    assert not np.array_equal(reference_update(weights, order, root, 8), delta)


def test_unknown_family_has_no_reference_and_empty_root_is_refused(
    holdout: tuple[np.ndarray, np.ndarray],
) -> None:
    root, _ = server_data(holdout)
    assert reference_update({"conv.weight": np.zeros(3, np.float32)}, ["conv.weight"], root, 1) is None
    with pytest.raises(InvalidParameter, match="root data is empty"):
        reference_update(init_softmax(64, 10), ["dense.weight", "dense.bias"], (root[0][:0], root[1][:0]), 1)


def test_train_mlp_learns() -> None:
    _, _, X, y = digits_split()
    w = init_mlp(64, 32, 10, np.random.default_rng(1))
    trained = train_mlp(w, X, y, epochs=20, lr=0.2, batch=16, rng=np.random.default_rng(0))
    assert evaluate(trained, X, y)[1] > 0.8 > evaluate(w, X, y)[1]
