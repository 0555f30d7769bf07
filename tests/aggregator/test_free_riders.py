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


def test_the_sole_author_of_the_last_change_may_send_its_direction_again() -> None:
    """Issue 20 item 4 (traced at 50 % ALIE, digits Dirichlet(0.5)): the rule kept one honest organization
    alone for rounds, so the public change was its own update, and its next update (the same class pull)
    had cosine 0.9975 to it; four such public-copy flags slashed it. The row marked as the change's author
    is not a public copy; a rider copying the same change still is, and so is a copy of the reference."""
    rng = np.random.default_rng(3)
    target = rng.standard_normal(50)
    public = (0.2 * target + 0.05 * rng.standard_normal(50)).astype(np.float32)
    honest = (0.3 * target + 0.05 * rng.standard_normal((5, 50))).astype(np.float32)
    author = (1.5 * public).astype(np.float32)
    rider = (np.linalg.norm(honest[0]) * public / np.linalg.norm(public)).astype(np.float32)
    X = np.vstack([honest, author[None, :], rider[None, :]]).astype(np.float32)
    reference = (0.3 * target).astype(np.float32)
    args = (quadratic_loss(target), X, reference, np.full(7, 1 / 7), np.arange(7), np.zeros(7), 300.0)
    assert score_round(*args, public_change=public).copied.tolist() == [False] * 5 + [True, True]
    marked = np.array([False] * 5 + [True, False])
    s = score_round(*args, public_change=public, authored_change=marked)
    assert s.copied.tolist() == [False] * 6 + [True]
    # The exemption is from the public change only: the author resending the server's reference is a copy.
    X_ref = np.vstack([honest, (2.0 * reference)[None, :], rider[None, :]]).astype(np.float32)
    args_ref = (quadratic_loss(target), X_ref, reference) + args[3:]
    s = score_round(*args_ref, public_change=public, authored_change=marked)
    assert s.copied.tolist() == [False] * 5 + [True, True]
    with pytest.raises(InvalidParameter, match="one flag per row"):
        score_round(*args, public_change=public, authored_change=marked[:3])


def test_compute_round_exempts_the_participant_the_inputs_name_as_the_changes_author() -> None:
    from dataclasses import replace

    from aggregator.round.compute import compute_round
    from tests.aggregator.roundkit import NOW, Federation

    fed = Federation()
    X = fed.honest(6)
    # The last change was participant 1's update alone (roundkit numbers participants from 1).
    inputs = replace(fed.inputs(X), public_change=(0.5 * X[0]).astype(np.float32))

    def copied(result) -> dict[int, bool]:  # type: ignore[no-untyped-def]
        return {
            c.participant_id: any(f.code is Evidence.public_copy for f in c.evidence) for c in result.clients
        }

    before = copied(compute_round(inputs, np.random.default_rng(0), NOW))
    assert before[1] and not any(before[p] for p in range(2, 7))
    after = copied(compute_round(replace(inputs, public_change_author=1), np.random.default_rng(0), NOW))
    assert not any(after.values())
    # Another participant named as the author exempts only itself.
    other = copied(compute_round(replace(inputs, public_change_author=2), np.random.default_rng(0), NOW))
    assert other[1]


def test_the_close_passes_the_changes_author_with_the_change_only() -> None:
    from aggregator.round.params import RoundParams
    from aggregator.worker.close_inputs import Inputs
    from db.models import ModelVersion, Round
    from tests.aggregator.roundkit import DEADLINE, OPENED, snapshot

    model = ModelVersion(id=2, parent_id=1, weights_hash="x", signature="0x", spec={"w": [2]})
    round_ = Round(id=5, opened_at=OPENED, deadline=DEADLINE, extensions=0)
    loaded = Inputs(round_, [], {}, {"w": np.zeros(2, np.float32)}, model, {}, 0, public_change_author=3)
    params = RoundParams.from_snapshot(snapshot())
    deltas = np.zeros((0, 2), np.float32)
    change = np.ones(2, np.float32)
    assert (
        loaded.round_inputs(params, deltas=deltas, holdout=None, public_change=change).public_change_author
        == 3
    )
    assert loaded.round_inputs(params, deltas=deltas, holdout=None).public_change_author is None
