"""Free riders (issue 20): resending the last public model change without training is evidence, never
conclusive, and is not paid; honest updates, which carry their own data's gradient, are not caught."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.scoring.reputation import public_copy_evidence
from aggregator.scoring.round import score_round
from fedledger.evidence import Evidence, is_conclusive


def quadratic_loss(target: np.ndarray):  # type: ignore[no-untyped-def]
    def loss(delta: np.ndarray) -> float:
        return float(np.sum((delta - target) ** 2)) + 1.0

    return loss


def test_a_resent_public_change_is_evidence_and_an_honest_update_is_not() -> None:
    rng = np.random.default_rng(0)
    public = rng.standard_normal(100).astype(np.float32)
    # Honest updates share part of the last change's direction (momentum of the same task) but carry their
    # own gradient: cosine 0.3-0.9 to it, as measured in attack_eval.
    honest = np.vstack(
        [a * public + rng.standard_normal(100).astype(np.float32) for a in (0.3, 1.0, 2.0, 3.0)]
    ).astype(np.float32)
    riders = np.vstack([3.0 * public, -0.0 * public + 0.5 * public]).astype(np.float32)
    X = np.vstack([honest, riders])
    cos = (X @ public) / (np.linalg.norm(X, axis=1) * np.linalg.norm(public))
    assert cos[:4].max() < 0.99
    assert public_copy_evidence(X, public).tolist() == [False] * 4 + [True, True]
    # Before the first accepted round there is no public change: nothing is evidence.
    assert not public_copy_evidence(X, None).any()
    assert not public_copy_evidence(X, np.zeros(100, np.float32)).any()
    with pytest.raises(InvalidParameter, match="public change must be 100 finite values"):
        public_copy_evidence(X, public[:5])


def test_score_round_flags_the_free_rider_as_non_conclusive_evidence() -> None:
    rng = np.random.default_rng(1)
    target = rng.standard_normal(50)
    public = (0.2 * target + 0.05 * rng.standard_normal(50)).astype(np.float32)
    honest = (0.3 * target + 0.05 * rng.standard_normal((6, 50))).astype(np.float32)
    rider = (np.linalg.norm(honest[0]) * public / np.linalg.norm(public)).astype(np.float32)
    X = np.vstack([honest, rider[None, :]]).astype(np.float32)
    reference = (0.3 * target).astype(np.float32)
    coefficients = np.full(7, 1 / 7)
    args = (quadratic_loss(target), X, reference, coefficients, np.arange(7), np.zeros(7), 300.0)
    without = score_round(*args)
    assert not without.evidence.any()  # useful on the validation data: nothing else catches it
    s = score_round(*args, public_change=public)
    assert s.copied.tolist() == [False] * 6 + [True] and s.evidence.tolist() == [False] * 6 + [True]
    assert not is_conclusive([Evidence.public_copy])


def test_the_close_reads_the_public_change_from_the_model_versions() -> None:
    from aggregator.worker.close_inputs import Inputs, public_change
    from db.models import ModelVersion

    spec = {"w": [2, 2], "b": [2]}
    model = ModelVersion(id=2, parent_id=1, weights_hash="x", signature="0x", spec=spec)
    weights = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "b": np.ones(2, np.float32)}
    parent = {"w": np.zeros((2, 2), np.float32), "b": np.full(2, 0.5, np.float32)}

    def inputs(parent_weights: dict[str, np.ndarray] | None) -> Inputs:
        return Inputs(None, [], {}, weights, model, {}, 0, parent_weights)  # type: ignore[arg-type]

    # Laid out as the close lays out every update's coordinates: tensors by name ("b" before "w"), not in
    # the model version's listing order, so the change lines up with the updates it is compared with.
    np.testing.assert_array_equal(public_change(inputs(parent)), [0.5, 0.5, 0, 1, 2, 3])
    assert public_change(inputs(None)) is None  # the first model has no public change
    assert public_change(inputs({"w": np.zeros((3, 2), np.float32), "b": parent["b"]})) is None


def test_an_update_that_is_the_servers_reference_again_is_a_public_copy() -> None:
    """Issue 20: free riders who resend the server's own reference update (public under Kerckhoffs; what
    they fell back to when the last public change was zero) add nothing and are evidence, not paid;
    honest updates are not (measured at most 0.895 to the reference)."""
    rng = np.random.default_rng(2)
    target = rng.standard_normal(50)
    honest = (0.3 * target + 0.05 * rng.standard_normal((6, 50))).astype(np.float32)
    reference = (0.3 * target + 0.02 * rng.standard_normal(50)).astype(np.float32)
    rider = (2.0 * reference).astype(np.float32)
    X = np.vstack([honest, rider[None, :]]).astype(np.float32)
    s = score_round(quadratic_loss(target), X, reference, np.full(7, 1 / 7), np.arange(7), np.zeros(7), 300.0)
    assert s.copied.tolist() == [False] * 6 + [True] and s.evidence.tolist() == [False] * 6 + [True]
    assert s.copies_reference is not None and s.copies_reference.tolist() == [False] * 6 + [True]
    # Without a reference the coordinate median stands in, and a row near it is no copy of anything public.
    assert not score_round(
        quadratic_loss(target), X, None, np.full(7, 1 / 7), np.arange(7), np.zeros(7), 300.0
    ).copies_reference.any()
