"""The sharded close's computation against the single-worker close of the same round (shards run in-process
here; tests/worker/test_sharded_close.py runs them as Celery tasks on real workers).

"The same" is aggregator.round.sharding.TOLERANCE: new weights within rtol 1e-4 + atol 1e-6, scores within
0.1 point, rewards within 2e-3, the same decisions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from eth_account import Account

from aggregator.errors import InvalidParameter
from aggregator.round import compute, rollback
from aggregator.round.compute import CloseStatus, RoundResult
from aggregator.round.params import RoundParams
from aggregator.round.server_update import server_data
from aggregator.round.sharding import (
    COORDINATE_STRATEGIES,
    MAX_RESPONSE_BYTES,
    NOISE_BLOCK,
    SHARDABLE_STRATEGIES,
    TOLERANCE,
    WIDE_LAYER,
    EmbeddedBatch,
    Embedding,
    Layout,
    OutsideSpan,
    ShardStatistics,
    block_noise,
    noise_seed,
    partial_responses,
    plan_shards,
    row_weights,
    span_coefficients,
    why_not_shardable,
)
from aggregator.scoring import budget
from aggregator.strategies import fltrust_guarded
from aggregator.worker import close as round_close
from aggregator.worker import shards
from aggregator.worker.close_inputs import Inputs
from aggregator.worker.shards import (
    COMBINE,
    DERIVE,
    STATISTICS,
    Domain,
    blocks,
    compute_sharded,
    shard_combine,
    shard_derive,
    shard_statistics,
)
from aggregator.worker.temporaries import round_of
from db.models import ModelVersion, Participant, Round, Update
from fedledger.config import Settings
from fedledger.crypto.chunked import coordinate_order, layout_hash, parse_head, seal_chunked
from fedledger.crypto.eip712 import sign_update
from fedledger.crypto.envelope import seal
from fedledger.crypto.keys import ServerKeyPair, generate_server_key
from fedledger.domain.blobstore import FilesystemBlobStore
from fedledger.models import ValidationBatch, init_mlp
from fedledger.payload import encode_update, flatten
from tests.aggregator.roundkit import DEADLINE, NOW, OPENED, Federation, snapshot

DOMAIN = Domain(31337, "0x" + "22" * 20)


@pytest.fixture(scope="module")
def key() -> ServerKeyPair:
    return generate_server_key()


def build(
    tmp_path: Path,
    key: ServerKeyPair,
    params: dict[str, object],
    *,
    attackers: int = 1,
    tamper: bool = False,
    family: str = "softmax",
    hidden: int = 8,
    parent: bool = False,
    parent_scale: float = 0.5,
    parent_of_mean: bool = False,
    walk_back: float = 0.0,
    longer: float = 1.0,
) -> tuple[Inputs, FilesystemBlobStore, Federation]:
    """Six honest updates (half chunked, half whole) and ``attackers`` sign-flipped and scaled ones, of the
    softmax model or of an MLP (4 features, 8 hidden units, 3 classes: 67 coordinates, the first layer's 40
    first in name order, then the output layer's); ``walk_back``: one more, the first honest update that
    many times over (a boosted update, or an organization training back after a long step); ``longer``:
    the first three honest updates that many times as long."""
    fed = Federation(family=family, hidden=hidden)
    blobs = FilesystemBlobStore(tmp_path)
    deltas = fed.honest(6)
    deltas[:3] *= longer  # larger shards' longer updates (non-IID shard sizes)
    deltas = np.concatenate([deltas, -10 * deltas[:attackers]]) if attackers else deltas
    if walk_back:
        deltas = np.concatenate([deltas, walk_back * deltas[:1]])
    shapes = {name: t.shape for name, t in fed.weights.items()}
    order = coordinate_order(shapes)
    wallets = [Account.create() for _ in deltas]
    participants, updates = {}, []
    for i, (row, wallet) in enumerate(zip(deltas, wallets, strict=True)):
        tensors, offset = {}, 0
        for name, t in fed.weights.items():
            tensors[name] = row[offset : offset + t.size].reshape(t.shape)
            offset += t.size
        fields: dict[str, Any] = {
            "round_id": 9,
            "model_version": 1,
            "participant": wallet.address,
            "num_samples": 100,
        }
        if i % 2 == 0:
            envelope = seal_chunked(
                flatten(tensors, order), key.public_pem, layout=layout_hash(shapes), chunk_coords=13, **fields
            )
            signed = parse_head(envelope).payload_hash
            if tamper and i == 2:
                altered = bytearray(envelope)
                altered[parse_head(envelope).chunk_span(1)[0]] ^= 1
                envelope = bytes(altered)
        else:
            envelope = seal(encode_update(tensors), key.public_pem, **fields)
            signed = hashlib.sha256(envelope).digest()
        signature = sign_update(
            wallet.key.hex(),
            chain_id=DOMAIN.chain_id,
            verifying_contract=DOMAIN.verifying_contract,
            round_id=9,
            model_version=1,
            payload_hash=signed,
            num_samples=100,
        )
        participants[i + 1] = Participant(id=i + 1, address=wallet.address, reputation=50.0)
        updates.append(
            Update(
                id=10 + i,
                round_id=9,
                participant_id=i + 1,
                ciphertext_hash=blobs.put(envelope),
                num_samples=100,
                submitted_at=OPENED,
                signature=signature,
            )
        )
    round_ = Round(id=9, opened_at=OPENED, deadline=DEADLINE, extensions=0, quorum=1, params=params)
    model = ModelVersion(id=1, spec={name: list(t.shape) for name, t in fed.weights.items()})
    inputs = Inputs(round_, updates, participants, fed.weights, model, {key.key_id: key.private_pem}, 0)
    if parent:  # the active model's parent: the last public change is ``parent_scale`` x the second update
        # (or, ``parent_of_mean``, x the honest updates' mean: an aggregate none of them copies)
        change = deltas[:6].mean(axis=0) if parent_of_mean else deltas[1]
        tensors, offset = {}, 0
        for name, t in fed.weights.items():
            tensors[name] = t - parent_scale * change[offset : offset + t.size].reshape(t.shape)
            offset += t.size
        inputs = replace(inputs, parent_weights=tensors)
    return inputs, blobs, fed


def in_process(  # type: ignore[no-untyped-def]
    blobs: FilesystemBlobStore,
    key: ServerKeyPair,
    features: np.ndarray,
    seen: list[tuple[str, list[dict[str, Any]]]] | None = None,
):
    def run(task: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = {key.key_id: key.private_pem}
        if seen is not None:
            seen.append((task, payloads))
        if task == STATISTICS:
            return [shard_statistics(p, blobs, keys, DOMAIN, features) for p in payloads]
        if task == DERIVE:
            return [shard_derive(p, blobs, keys, DOMAIN, features) for p in payloads]
        assert task == COMBINE
        return [shard_combine(p, blobs, keys, DOMAIN, features) for p in payloads]

    return run


def both(
    tmp_path: Path,
    key: ServerKeyPair,
    strategy: str,
    shards: int,
    block_bytes: int = 1 << 28,
    params: dict[str, Any] | None = None,
    align: int = 1,
    seen: list[tuple[str, list[dict[str, Any]]]] | None = None,
    stalled: int = 0,
    **options: Any,
) -> tuple[RoundResult, RoundResult]:
    """The single-worker close and the sharded close of one round (``seen``: each pass the sharded close
    ran, with its shards' jobs; ``stalled``: the rounds in a row before it that kept neither the rule's
    aggregate nor the server's step)."""
    inputs, blobs, fed = build(tmp_path, key, snapshot(strategy=strategy, **(params or {})), **options)
    inputs = replace(inputs, stalled_rounds=stalled)
    single = round_close.compute(inputs, blobs, fed.holdout, np.random.default_rng(0), NOW)
    _, (features, _) = server_data(fed.holdout)
    size = sum(t.size for t in fed.weights.values())
    sharded = compute_sharded(
        inputs,
        blobs,
        fed.holdout,
        np.random.default_rng(0),
        NOW,
        plan_shards(size, len(inputs.updates), 0, shards, align),
        in_process(blobs, key, features, seen),
        block_bytes,
        align,
    )
    assert isinstance(sharded, RoundResult), sharded
    # However it ended, the close deleted its temporary blobs (rows, statistics, derived rows, parts).
    assert [b for b in blobs.stored() if round_of(blobs.head(b.digest, 16)) is not None] == []
    return single, sharded


def assert_same(single: RoundResult, sharded: RoundResult) -> None:
    assert single.status == sharded.status == CloseStatus.aggregated
    assert single.new_weights is not None and sharded.new_weights is not None
    for name, array in single.new_weights.items():
        np.testing.assert_allclose(
            sharded.new_weights[name], array, rtol=TOLERANCE["weights_rtol"], atol=TOLERANCE["weights_atol"]
        )
    assert single.activate == sharded.activate
    assert_scores_same(single, sharded)


def assert_scores_same(single: RoundResult, sharded: RoundResult) -> None:
    assert single.status == sharded.status == CloseStatus.aggregated
    assert single.rejected == sharded.rejected
    for a, b in zip(single.clients, sharded.clients, strict=True):
        assert (a.update_id, a.selected, a.kept, a.byzantine) == (
            b.update_id,
            b.selected,
            b.kept,
            b.byzantine,
        )
        for score in ("quality", "timeliness", "honesty", "fitness"):
            assert abs(getattr(a, score) - getattr(b, score)) <= TOLERANCE["score_points"], (a, b, score)
        assert abs(a.reward_wei - b.reward_wei) <= TOLERANCE["reward_rtol"] * max(a.reward_wei, 1)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("strategy", sorted(SHARDABLE_STRATEGIES))
def test_the_sharded_close_equals_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, strategy: str, family: str
) -> None:
    """Every shardable rule, on both built-in model families. The MLP's 67 coordinates in three shards cut
    once inside its first layer's weight (22) and once inside its output layer (45): the first shard's
    responses are partial, the second's and third's heads are."""
    single, sharded = both(tmp_path, key, strategy, shards=3, family=family)
    assert_same(single, sharded)
    assert sharded.record is not None and sharded.record.params["shards"] == 3
    # A coordinate-wise rule takes the one more pass that computes its row; a linear rule does not.
    assert (sharded.record.durations_ms["shard_derive_ms"] > 0) == (strategy in COORDINATE_STRATEGIES)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("centered_clip", {"bucket_size": 2, "centered_clip_iterations": 5}),
        ("centered_clip", {"centered_clip_tau": 0.05}),
        ("trimmed_mean", {"trim_fraction": 0.0}),
        ("bulyan", {"krum_f": 0}),
    ],
)
def test_coordinate_wise_rules_with_their_parameters_equal_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, strategy: str, params: dict[str, Any], family: str
) -> None:
    """Bucketing (the permutation drawn as compute_round draws it), a fixed radius, no trimming, Bulyan
    with f = 0; each in blocks of a few coordinates, so the second pass keeps several pieces per shard."""
    single, sharded = both(tmp_path, key, strategy, shards=2, block_bytes=300, params=params, family=family)
    assert_same(single, sharded)
    assert single.record is not None and sharded.record is not None
    assert sharded.record.params == {**single.record.params, "shards": 2}


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("strategy", ["fltrust_guarded", "fltrust", "median"])
def test_above_the_score_budget_both_closes_score_on_the_same_subsample(
    tmp_path: Path, key: ServerKeyPair, strategy: str, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is judged on the real model in both closes (the sharded one scores in E's k coordinates)
    and the subsample is seeded by the round: the same examples, so the same scores within the tolerance."""
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 12)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    single, sharded = both(tmp_path, key, strategy, shards=3, family=family)
    assert_same(single, sharded)
    assert single.record is not None and sharded.record is not None
    assert single.record.params["score_examples"] == sharded.record.params["score_examples"] == 12
    assert sharded.record.params["validation_examples"] == single.record.params["validation_examples"] > 12


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("fltrust_guarded", {}),
        ("median", {}),
        ("centered_clip", {}),
        (
            "fedavg",
            {
                "dp_enabled": True,
                "dp_clip_norm": 0.05,
                "dp_noise_multiplier": 0.5,
                "dp_epsilon_budget": 100.0,
            },
        ),
    ],
)
def test_the_sharded_close_runs_compute_round_once(
    tmp_path: Path, key: ServerKeyPair, strategy: str, params: dict[str, Any], family: str
) -> None:
    """compute_round (its scores: most of the coordinator's time, 59 s of a 1,000-organization MLP round) runs
    once, after the combine pass: the rule's aggregate, which the combine writes, is decided before it in
    E's space, and the new model is assembled from it by compute_round's decision."""
    calls: list[int] = []
    real = shards.compute_round

    def counting(*args: Any, **kwargs: Any) -> RoundResult:
        calls.append(1)
        return real(*args, **kwargs)

    seen: list[tuple[str, list[dict[str, Any]]]] = []
    with patch.object(shards, "compute_round", counting):
        single, sharded = both(tmp_path, key, strategy, shards=3, params=params, family=family, seen=seen)
    assert len(calls) == 1
    third = [DERIVE] if strategy in COORDINATE_STRATEGIES or params else []
    assert [task for task, _ in seen] == [STATISTICS, *third, COMBINE]
    assert_scores_same(single, sharded)
    if not params:  # DP: the sharded close's noise is its own draw (see the DP test)
        assert_same(single, sharded)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("subsampled", [False, True])
def test_a_stalled_rounds_second_candidate_in_shards_equals_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, family: str, subsampled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a stalled round, a refused aggregate gives way to the norm-bounded mean of the counted rows
    (compute._fallback): a combination of the rows the shards had not written. The coordinator asks one
    more combine pass for it (its coordinates, and above the score budget its responses on every example,
    which the decision evaluates) and runs compute_round again with it known: the single close's model.
    The round: FedAvg with two updates -10x honest ones (every step of the aggregate raises the loss) and
    a server whose own step overshoots (its reference 100x as long: the floor is refused too)."""
    if subsampled:
        monkeypatch.setattr(budget, "SCORE_EXAMPLES", 12)
        monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    for module in (round_close, shards):
        real = module.reference_update
        monkeypatch.setattr(
            module,
            "reference_update",
            lambda *args, real=real, **kwargs: 100.0 * real(*args, **kwargs),
        )
    calls: list[int] = []
    real_compute, real_advance = shards.compute_round, shards.advance

    def counting(*args: Any, **kwargs: Any) -> RoundResult:
        calls.append(1)
        return real_compute(*args, **kwargs)

    def as_celery_carries_it(*args: Any) -> Any:  # the state between passes travels as JSON
        *first, state, results = args
        return real_advance(*first, json.loads(json.dumps(state)), json.loads(json.dumps(results)))

    monkeypatch.setattr(shards, "advance", as_celery_carries_it)
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    with patch.object(shards, "compute_round", counting):
        single, sharded = both(
            tmp_path, key, "fedavg", shards=3, family=family, attackers=2, stalled=1, seen=seen
        )
    assert single.record is not None and sharded.record is not None
    assert single.record.params["kept_by"] == sharded.record.params["kept_by"] == "fallback"
    assert single.activate and sharded.activate
    assert_same(single, sharded)
    assert [task for task, _ in seen] == [STATISTICS, COMBINE, COMBINE]
    assert len(calls) == 2
    # Not stalled before: no second candidate, the round refused in both closes, compute_round once.
    calls.clear()
    with patch.object(shards, "compute_round", counting):
        single, sharded = both(tmp_path / "fresh", key, "fedavg", shards=3, family=family, attackers=2)
    assert single.record is not None and sharded.record is not None
    assert single.record.params["kept_by"] == sharded.record.params["kept_by"] == "none"
    assert not single.activate and not sharded.activate
    assert_same(single, sharded)
    assert len(calls) == 1


def guarded_option(
    tmp_path: Path,
    key: ServerKeyPair,
    monkeypatch: pytest.MonkeyPatch,
    option: tuple[str, float],
    family: str,
    subsampled: bool,
    attackers: int,
    seen: list[tuple[str, list[dict[str, Any]]]] | None = None,
) -> tuple[RoundResult, RoundResult]:
    """:func:`both` for the guarded rule with one of its options set (``option``: a module constant of
    fltrust_guarded and its value), above the score budget when ``subsampled``; three honest shards three
    times as long as the others, so that the rule's clips differ."""
    monkeypatch.setattr(fltrust_guarded, *option)
    if subsampled:
        monkeypatch.setattr(budget, "SCORE_EXAMPLES", 12)
        monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    return both(
        tmp_path, key, "fltrust_guarded", shards=3, family=family, attackers=attackers, longer=3, seen=seen
    )


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("subsampled", [False, True])
def test_the_guarded_rules_wider_clip_candidate_in_shards_equals_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, family: str, subsampled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wider clip's candidate (fltrust_guarded.WIDER_CLIP_Z, an option) is the rule's passers under
    another clip: the rule computes its coefficients in E's space as over the real rows, and the decision
    evaluates it on every example (above the score budget: one more combine pass) and keeps it or not as
    the single close does. Three honest shards three times as long as the others, so the clips differ."""
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    option = ("WIDER_CLIP_Z", 2.0)
    single, sharded = guarded_option(tmp_path, key, monkeypatch, option, family, subsampled, 0, seen)
    assert single.record is not None and sharded.record is not None
    assert single.record.params["wider_clip_norm"] > single.record.params["clip_norm"]
    assert single.record.params["kept_by"] == sharded.record.params["kept_by"]
    assert_same(single, sharded)
    # A pass for the candidate when its responses on every example are needed, or when it is kept.
    extra = subsampled or single.record.params["kept_by"] == "wider_clip"
    if family == "softmax":  # this round keeps it (the MLP's keeps the server's step): the assembly's path
        assert single.record.params["kept_by"] == "wider_clip"
    assert [task for task, _ in seen] == [STATISTICS, COMBINE] + [COMBINE] * extra


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_above_the_score_budget_the_shards_respond_on_the_score_examples_only(
    tmp_path: Path, key: ServerKeyPair, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows' responses are computed on the budget's seeded subsample only, known before the shards run
    (the round's id and its updates' ids and arrival times); every example's only for the aggregate and
    the reference in the combine pass (what the decision evaluates): still the single close's result."""
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 12)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    single, sharded = both(tmp_path, key, "fltrust_guarded", shards=3, family=family, seen=seen)
    assert_same(single, sharded)
    examples = int(server_data(Federation().holdout)[1][0].shape[0])
    seed = budget.round_seed(9, [(10 + i, OPENED) for i in range(7)])  # build's updates
    drawn = budget.score_sample(seed, examples, 12)
    assert drawn is not None
    (first, statistics), (last, combine) = seen
    assert (first, last) == (STATISTICS, COMBINE)
    assert all(job["examples"] == drawn.tolist() for job in statistics + combine)
    assert all(job["responses"] for job in combine)
    # Below the budget every example, and no responses in the combine pass.
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 32)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 2e9)
    seen.clear()
    single, sharded = both(tmp_path / "all", key, "fltrust_guarded", shards=3, family=family, seen=seen)
    assert_same(single, sharded)
    assert all(
        job["examples"] is None and not job.get("responses", False) for _, jobs in seen for job in jobs
    )


def test_an_update_rejected_above_the_score_budget_reruns_the_statistics_on_its_subsample(
    tmp_path: Path, key: ServerKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subsample is seeded by the valid updates: one that fails to open in a shard changes it, and the
    statistics pass runs again on the subsample the single close scores on."""
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 12)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    single, sharded = both(tmp_path, key, "median", shards=3, tamper=True, seen=seen)
    assert [uid for uid, _ in sharded.rejected] == [uid for uid, _ in single.rejected] == [12]
    assert_same(single, sharded)
    assert [task for task, _ in seen] == [STATISTICS, STATISTICS, DERIVE, COMBINE]
    examples = int(server_data(Federation().holdout)[1][0].shape[0])
    valid = [(10 + i, OPENED) for i in range(7) if 10 + i != 12]
    drawn = budget.score_sample(budget.round_seed(9, valid), examples, 12)
    assert drawn is not None
    assert (
        seen[0][1][0]["examples"] != drawn.tolist() == seen[1][1][0]["examples"] == seen[3][1][0]["examples"]
    )


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_a_public_change_and_a_rejected_update_in_shards_equal_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, family: str
) -> None:
    """The last public change (the active model minus its parent) is one more row of Y, and an update
    altered in one shard drops its row from the sums (its responses and head too), on either family."""
    single, sharded = both(
        tmp_path, key, "fltrust_guarded", shards=3, tamper=True, family=family, parent=True
    )
    assert [uid for uid, _ in sharded.rejected] == [uid for uid, _ in single.rejected] == [12]
    assert_same(single, sharded)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_after_a_long_public_change_both_closes_judge_a_boosted_update_alike(
    tmp_path: Path, key: ServerKeyPair, family: str
) -> None:
    """An update 100x an honest one (about 28x the server's reference norm here) after a short last change
    (half the honest mean) and after a long one (32x it: a lengthened line-search step, issue 20): the
    sharded close, whose public change is an embedded row, judges it as the single close does, and the
    norm evidence (20x the larger of the round's median and the reference's norm) flags it after either.
    The last change does not move the evidence (a floor by it, tried in 82baa0b and in this session's
    step-bounded form, docs/benchmarks.md, is not on main)."""
    options: dict[str, Any] = {"family": family, "attackers": 0, "walk_back": 100.0, "parent_of_mean": True}
    for name, scale in (("short", 0.5), ("long", 32.0)):
        single, sharded = both(
            tmp_path / name, key, "fltrust_guarded", shards=3, parent=True, parent_scale=scale, **options
        )
        assert_same(single, sharded)
        assert single.clients[-1].byzantine, name


def test_an_update_altered_in_one_shard_is_rejected_as_the_single_close_rejects_it(
    tmp_path: Path, key: ServerKeyPair
) -> None:
    single, sharded = both(tmp_path, key, "fltrust", shards=4, tamper=True)
    assert [uid for uid, _ in sharded.rejected] == [uid for uid, _ in single.rejected] == [12]
    assert "ChunkTampered" in dict(sharded.rejected)[12]
    assert_same(single, sharded)


def refusal(tmp_path: Path, key: ServerKeyPair, weights: dict[str, np.ndarray]) -> str:
    """Why compute_sharded leaves the round of the model ``weights`` to one worker (it runs no pass)."""
    inputs, blobs, fed = build(tmp_path, key, snapshot(strategy="median"))
    model = ModelVersion(id=1, spec={name: list(t.shape) for name, t in weights.items()})
    reason = compute_sharded(
        replace(inputs, weights=weights, model=model),
        blobs,
        fed.holdout,
        np.random.default_rng(0),
        NOW,
        [(0, 5), (5, 10)],
        None,  # type: ignore[arg-type]
    )
    assert isinstance(reason, str)
    return reason


def test_rounds_the_shards_cannot_compute_exactly_are_left_to_one_worker(
    tmp_path: Path, key: ServerKeyPair
) -> None:
    """A model of other tensors: its responses are not known to be linear in its parameters."""
    other = {"conv.weight": np.zeros((3, 3), np.float32), "conv.bias": np.zeros(3, np.float32)}
    reason = refusal(tmp_path, key, other)
    assert "linear in their parameters" in reason and "conv.weight" in reason


def test_an_mlp_whose_summed_responses_exceed_the_coordinators_bound_is_left_to_one_worker(
    tmp_path: Path, key: ServerKeyPair
) -> None:
    """The coordinator sums rows x validation examples x hidden units float64 responses: an MLP wide enough
    to take them past MAX_RESPONSE_BYTES is refused with the size, the bound and what to change."""
    _, (features, _) = server_data(Federation().holdout)
    rows = 7 + 4  # build's seven updates; the reference, the public change and two derived rows at most
    wide = MAX_RESPONSE_BYTES // (8 * rows * features.shape[0]) + 1
    reason = refusal(tmp_path / "wide", key, init_mlp(4, wide, 3, np.random.default_rng(0)))
    assert f"{rows} rows x {features.shape[0]} validation examples x {wide} units" in reason
    assert "over the coordinator's 512 MiB" in reason and "narrower first layer" in reason
    # One hidden unit fewer fits the bound.
    fits = init_mlp(4, wide - 1, 3, np.random.default_rng(0))
    spec = {name: t.shape for name, t in fits.items()}
    params = RoundParams.from_snapshot(snapshot(strategy="median"))
    assert why_not_shardable(params, spec, rows, features.shape[0]) is None
    assert Layout.of(spec).response_bytes(rows, features.shape[0]) <= MAX_RESPONSE_BYTES
    # The bound is the setting's default, and a deployment's own bound is the one applied.
    assert Settings.model_fields["close_max_response_bytes"].default == MAX_RESPONSE_BYTES
    inputs, blobs, fed = build(tmp_path / "small", key, snapshot(strategy="median"), family="mlp")
    need = 8 * rows * features.shape[0] * 8  # build's MLP: 8 hidden units
    reason = compute_sharded(
        inputs,
        blobs,
        fed.holdout,
        np.random.default_rng(0),
        NOW,
        [(0, 40), (40, 67)],
        None,  # type: ignore[arg-type]
        max_response_bytes=need - 1,
    )
    assert isinstance(reason, str) and "FEDLEDGER_CLOSE_MAX_RESPONSE_BYTES" in reason


def test_the_layout_puts_each_familys_first_layer_first_in_name_order() -> None:
    """Softmax: dense.bias (3) then dense.weight (4 x 3), no head. MLP: hidden.bias (8), hidden.weight
    (4 x 8), then the head: output.bias (3), output.weight (8 x 3)."""
    softmax = Federation().spec
    mlp = Federation(family="mlp").spec
    assert Layout.of(softmax) == Layout("softmax", 3, 15, 15)
    assert Layout.of(mlp) == Layout("mlp", 8, 40, 67) and Layout.of(mlp).head == 27
    # A shard's partial responses and heads add up to the whole row's, wherever the ranges cut.
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((3, 67)).astype(np.float32)
    X = rng.standard_normal((5, 4)).astype(np.float32)
    whole, head = partial_responses(mlp, X, 0, rows)
    cuts = [0, 3, 8, 21, 40, 41, 50, 67]
    parts = [partial_responses(mlp, X, a, rows[:, a:b]) for a, b in pairwise(cuts)]
    np.testing.assert_allclose(sum(p[0] for p in parts), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(sum(p[1] for p in parts), head)
    np.testing.assert_array_equal(head, rows[:, 40:])
    # The whole row's response is the first layer's: X @ dW + db (hidden.weight row-major after the bias).
    expected = X.astype(np.float64) @ rows[:, 8:40].reshape(3, 4, 8).astype(np.float64) + rows[:, None, :8]
    np.testing.assert_allclose(whole, expected, rtol=1e-12, atol=1e-12)


def test_a_wide_first_layer_sums_its_blocks_in_place_to_the_whole_rows_responses() -> None:
    """70 hidden units (>= WIDE_LAYER: one product per row, added in place, as a shard sums its blocks) against
    the whole rows' X @ dW + db, cut inside the bias, inside a feature row, at a row's edge and in the head."""
    spec = Federation(family="mlp", hidden=70).spec
    layout = Layout.of(spec)
    assert layout.width == 70 >= WIDE_LAYER and layout.linear == 350 and layout.head == 3 + 70 * 3
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((4, layout.size)).astype(np.float32)
    X = rng.standard_normal((6, 4)).astype(np.float32)
    total = ShardStatistics.zeros(spec, 4, 6)
    for a, b in pairwise([0, 30, 70, 105, 140, 351, 400, layout.size]):
        total.add(spec, X, a, rows[:, a:b])
    W = rows[:, 70:350].reshape(4, 4, 70).astype(np.float64)
    np.testing.assert_allclose(
        total.scores, X.astype(np.float64) @ W + rows[:, None, :70], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(total.heads, rows[:, 350:])
    np.testing.assert_allclose(total.gram, rows.astype(np.float64) @ rows.T.astype(np.float64), rtol=1e-12)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_the_embedded_batch_scores_e_space_deltas_as_the_batch_scores_the_real_ones(family: str) -> None:
    """EmbeddedBatch (what compute_round's scores use in a sharded close): the responses, heads and losses
    of a change of E's space are those ValidationBatch gives the real change it stands for, Y^T w(e)."""
    fed = Federation(family=family, hidden=70)
    spec = coordinate_order(fed.spec)
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((5, Layout.of(spec).size)).astype(np.float32) * np.float32(0.1)
    Y[4] = Y[0] + Y[1]  # rank deficient, as two equal rows or a zero public change make it
    _, (X, y) = server_data(fed.holdout)
    weights = {name: fed.weights[name] for name in spec}
    responses, heads = partial_responses(spec, X, 0, Y)
    embedding = Embedding.of(Y.astype(np.float64) @ Y.T.astype(np.float64))
    assert embedding.dimension == 4
    batch = EmbeddedBatch(weights, X, y, spec, responses, heads, embedding.to_weights)
    real = ValidationBatch(weights, X, y, spec)
    assert batch.size == 4 and real.size == Y.shape[1]
    changes = np.vstack([embedding.rows, 0.3 * embedding.rows[0] - 0.7 * embedding.rows[2]])
    actual = np.array([row_weights(embedding, e) for e in changes]) @ Y.astype(np.float64)
    np.testing.assert_allclose(actual[:5], Y, rtol=1e-5, atol=1e-6)  # E's rows stand for Y's
    got_r, got_h = batch.responses(changes), batch.heads(changes)
    want_r, want_h = real.responses(actual.astype(np.float32)), real.heads(actual.astype(np.float32))
    np.testing.assert_allclose(got_r, want_r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-4, atol=1e-6)
    for i in range(changes.shape[0]):
        np.testing.assert_allclose(
            batch.losses(got_r[i], got_h[i]), real.losses(want_r[i], want_h[i]), rtol=1e-4, atol=1e-6
        )
    chosen = np.array([0, 3, 5, 7])
    sub = batch.subset(chosen)
    np.testing.assert_allclose(sub.responses(changes), got_r[:, chosen], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sub.y, y[chosen])
    # Above the score budget: the rows' responses on the chosen examples only, and on every example those of
    # the known changes (an aggregate and the reference), and of their combinations only.
    known = changes[[5, 3]]
    partial = EmbeddedBatch(
        weights, X, y, spec, responses[:, chosen], heads, embedding.to_weights, chosen, known, got_r[[5, 3]]
    )
    np.testing.assert_array_equal(partial.subset(chosen).responses(changes), sub.responses(changes))
    np.testing.assert_allclose(partial.heads(changes), got_h, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        partial.responses(np.vstack([0.5 * known[0], 2 * known[1], known[0] - known[1], 0 * known[0]])),
        np.stack([0.5 * got_r[5], 2 * got_r[3], got_r[5] - got_r[3], 0 * got_r[5]]),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(OutsideSpan, match="outside the directions the shards computed") as outside:
        partial.responses(changes[[0]])
    # It carries the change, for the coordinator's extra combine pass.
    np.testing.assert_array_equal(outside.value.change, changes[0])
    with pytest.raises(InvalidParameter, match="other validation examples"):
        partial.subset(np.array([0, 3, 5]))
    np.testing.assert_allclose(span_coefficients(-3 * known[1], known), [0.0, -3.0], atol=1e-12)


@pytest.mark.parametrize("strategy", ["fltrust_guarded", "median", "centered_clip"])
def test_a_wide_mlp_in_shards_and_small_blocks_equals_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, strategy: str
) -> None:
    """The MLP with 70 hidden units (563 coordinates), three shards read in blocks of a few feature rows: the
    per-row products summed in place over the blocks give the single close's result."""
    single, sharded = both(tmp_path, key, strategy, shards=3, block_bytes=4000, family="mlp", hidden=70)
    assert_same(single, sharded)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("strategy", ["fedavg", "median", "bulyan", "centered_clip"])
def test_a_dp_close_in_shards_is_the_single_close_with_its_own_seeded_noise(
    tmp_path: Path, key: ServerKeyPair, strategy: str, family: str
) -> None:
    """Same clipping, aggregate, scores and decisions as the single close; the noise is the seeded
    block_noise of the round's generator (the same for any split), not the single close's draw."""
    dp = {"dp_enabled": True, "dp_clip_norm": 0.05, "dp_noise_multiplier": 0.5, "dp_epsilon_budget": 100.0}
    # Rows clipped to 0.05 descend far less than the server's own step: both closes keep that step (the line
    # search's descent floor), the same model whatever the noise.
    floor_single, floor_sharded = both(
        tmp_path / "floor", key, strategy, shards=3, block_bytes=300, params=dp, family=family
    )
    assert floor_single.record is not None and floor_sharded.record is not None
    assert "at the server's own step" in floor_single.record.decision
    assert floor_sharded.record.decision == floor_single.record.decision
    assert_same(floor_single, floor_sharded)
    # The noise itself, seen in the kept change only when the aggregate's step is kept: the floor held off.
    with patch.object(compute, "FLOOR_STANDARD_ERRORS", 1e9):
        single, sharded = both(tmp_path, key, strategy, shards=3, block_bytes=300, params=dp, family=family)
    assert single.record is not None and sharded.record is not None and sharded.aggregate is not None
    assert single.aggregate is not None and single.new_weights is not None
    assert sharded.record.dp_noise_std == pytest.approx(single.record.dp_noise_std)
    assert sharded.record.epsilon_spent == pytest.approx(single.record.epsilon_spent)
    assert_scores_same(single, sharded)
    # The single close's noise, redrawn as compute_round draws it: the rule's generator is spawned first.
    rng = np.random.default_rng(0)
    rng.spawn(1)
    size = single.aggregate.size
    std = single.record.dp_noise_std
    assert std is not None
    drawn = rng.normal(0.0, std, size=size).astype(np.float32)
    clean = single.aggregate - drawn  # the clipped rule's aggregate, before noise
    noise = block_noise(noise_seed(np.random.default_rng(0)), std, 0, size)
    expected = clean + noise
    step = float(sharded.aggregate @ expected) / float(expected @ expected)  # the kept multiple
    assert step > 0
    np.testing.assert_allclose(sharded.aggregate, step * expected, rtol=1e-4, atol=1e-6)


def test_the_dp_noise_is_the_same_for_any_split_of_the_coordinates() -> None:
    seed, size = 12345, 3 * NOISE_BLOCK + 17
    whole = block_noise(seed, 0.5, 0, size)
    cuts = [0, 5, NOISE_BLOCK - 1, NOISE_BLOCK + 3, 2 * NOISE_BLOCK + 100, size]
    assert np.array_equal(whole, np.concatenate([block_noise(seed, 0.5, a, b) for a, b in pairwise(cuts)]))
    assert abs(float(whole.std()) - 0.5) < 0.01 and abs(float(whole.mean())) < 0.01
    assert not np.array_equal(whole, block_noise(seed + 1, 0.5, 0, size))


@pytest.mark.parametrize("strategy", ["fltrust_guarded", "bulyan"])
def test_shards_and_blocks_at_whole_chunks_give_the_same_close(
    tmp_path: Path, key: ServerKeyPair, strategy: str
) -> None:
    """Ranges and blocks cut at the envelopes' chunk edges (13 coordinates here) so that no chunk is read
    twice; a block narrower than a chunk grows to one."""
    single, sharded = both(tmp_path, key, strategy, shards=2, block_bytes=100, align=13)
    assert_same(single, sharded)
    job = {"start": 5, "stop": 40, "updates": [{}] * 6, "extra": ["r"], "block_bytes": 100, "align": 13}
    assert [(b["start"], b["stop"]) for b in blocks(job)] == [(5, 13), (13, 26), (26, 39), (39, 40)]
    job["block_bytes"] = 4 * 7 * 30  # 30 coordinates of 7 rows: two chunks
    assert [(b["start"], b["stop"]) for b in blocks(job)] == [(5, 26), (26, 40)]


def test_the_plan_covers_every_coordinate_once() -> None:
    assert plan_shards(15, 7, 0, 2, 13) == [(0, 13), (13, 15)]
    assert plan_shards(100, 3, 0, 4, 64) == [(0, 64), (64, 100)]  # fewer chunks than shards
    assert plan_shards(10, 3, 0, 3, 16) == [(0, 10)]
    assert plan_shards(10, 3, 0, 0) == [(0, 10)]
    assert plan_shards(10, 3, 0, 3) == [(0, 3), (3, 7), (7, 10)]
    # 100 coordinates x 5 updates x 4 bytes = 2000 bytes; at most 600 per worker: 4 shards.
    ranges = plan_shards(100, 5, 600, 0)
    assert len(ranges) == 4 and ranges[0][0] == 0 and ranges[-1][1] == 100
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert plan_shards(2, 3, 0, 8) == [(0, 1), (1, 2)]


def test_a_shard_read_in_small_blocks_gives_the_same_close(tmp_path: Path, key: ServerKeyPair) -> None:
    """A shard bounds its memory by reading its range a block at a time (here 5 coordinates of 9 rows)."""
    single, sharded = both(tmp_path, key, "fltrust", shards=2, block_bytes=200)
    assert_same(single, sharded)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("subsampled", [False, True])
def test_the_reference_as_a_member_of_the_aggregate_in_shards_equals_the_single_worker_close(
    tmp_path: Path, key: ServerKeyPair, family: str, subsampled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded rule's reference member (fltrust_guarded.REFERENCE_MEMBERS, an option) is E's reference
    row in the aggregate: the rule adds it in E's space as over the real rows, the scores hold it in every
    candidate there too, and the combine pass writes it back through the reference's row weight. No extra
    pass: the aggregate is a combination of Y's rows like any other."""
    seen: list[tuple[str, list[dict[str, Any]]]] = []
    option = ("REFERENCE_MEMBERS", 1.0)
    single, sharded = guarded_option(tmp_path, key, monkeypatch, option, family, subsampled, 2, seen)
    assert single.record is not None and sharded.record is not None
    share = single.record.params["reference_share"]
    assert isinstance(share, float) and 0.0 < share < 0.5
    assert sharded.record.params["reference_share"] == pytest.approx(share)
    assert single.record.params["kept_by"] == sharded.record.params["kept_by"]
    assert_same(single, sharded)
    assert [task for task, _ in seen] == [STATISTICS, COMBINE]


@pytest.mark.parametrize("family", ["softmax", "mlp"])
@pytest.mark.parametrize("subsampled", [False, True])
@pytest.mark.parametrize("kept", [False, True])
def test_the_reference_member_as_the_closes_candidate_in_shards_equals_the_single_worker_close(
    tmp_path: Path,
    key: ServerKeyPair,
    family: str,
    subsampled: bool,
    kept: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference member offered as the close's second candidate (fltrust_guarded.REFERENCE_CANDIDATE,
    an option): a combination of the rule's aggregate and the reference, both of which the combine pass
    computes on every example, so the decision keeps it or not in shards as the single close does. ``kept``:
    with no margin to win by (any descending candidate is kept), the path that writes it back."""
    if kept:
        monkeypatch.setattr(rollback, "WIDER_STANDARD_ERRORS", -1e9)
    option = ("REFERENCE_CANDIDATE", 1.0)
    single, sharded = guarded_option(tmp_path, key, monkeypatch, option, family, subsampled, 2)
    assert single.record is not None and sharded.record is not None
    assert single.record.params["reference_candidate_share"] == pytest.approx(
        sharded.record.params["reference_candidate_share"]
    )
    assert single.record.params["kept_by"] == sharded.record.params["kept_by"]
    assert (single.record.params["kept_by"] == "reference_member") is kept
    assert_same(single, sharded)
