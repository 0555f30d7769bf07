"""round_close.compute without a database: every envelope is opened exactly once, a header that does not
match its submission is rejected, the snapshot is typed once and a bad one fails the round with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from aggregator.round.compute import CloseStatus, RoundResult
from aggregator.worker import close as round_close
from aggregator.worker.close_inputs import Inputs
from db.models import ModelVersion, Participant, Round, Update
from fedledger.crypto.chunked import coordinate_order, layout_hash, seal_chunked
from fedledger.crypto.envelope import open_envelope, seal
from fedledger.crypto.keys import ServerKeyPair, generate_server_key
from fedledger.domain.blobstore import FilesystemBlobStore
from fedledger.payload import encode_update, flatten
from tests.aggregator.roundkit import DEADLINE, NOW, OPENED, Federation, snapshot


def inputs_with_envelopes(
    tmp_path: Path, params: dict[str, object], *, chunked: bool = False, key: ServerKeyPair | None = None
) -> tuple[Inputs, FilesystemBlobStore]:
    fed = Federation()
    key = key or generate_server_key()
    blobs = FilesystemBlobStore(tmp_path)
    deltas = fed.honest(4)
    addresses = [Account.create().address for _ in range(4)]
    participants = {i + 1: Participant(id=i + 1, address=a, reputation=50.0) for i, a in enumerate(addresses)}
    updates = []
    tensors_shapes = {name: t.shape for name, t in fed.weights.items()}
    for i, row in enumerate(deltas):
        tensors = {}
        offset = 0
        for name, t in fed.weights.items():
            tensors[name] = row[offset : offset + t.size].reshape(t.shape)
            offset += t.size
        # The last envelope names another participant than the one it was recorded for.
        named = addresses[0] if i == 3 else addresses[i]
        if chunked:
            envelope = seal_chunked(
                flatten(tensors, coordinate_order(tensors_shapes)),
                key.public_pem,
                round_id=9,
                model_version=1,
                participant=named,
                num_samples=100,
                layout=layout_hash(tensors_shapes),
                chunk_coords=7,
            )
        else:
            envelope = seal(
                encode_update(tensors),
                key.public_pem,
                round_id=9,
                model_version=1,
                participant=named,
                num_samples=100,
            )
        updates.append(
            Update(
                id=10 + i,
                round_id=9,
                participant_id=i + 1,
                ciphertext_hash=blobs.put(envelope),
                num_samples=100,
                submitted_at=OPENED,
            )
        )
    round_ = Round(id=9, opened_at=OPENED, deadline=DEADLINE, extensions=0, quorum=1, params=params)
    model = ModelVersion(id=1, spec={name: list(t.shape) for name, t in fed.weights.items()})
    inputs = Inputs(round_, updates, participants, fed.weights, model, {key.key_id: key.private_pem}, 0)
    return inputs, blobs


def test_each_envelope_is_opened_once_and_a_mismatched_header_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []

    def counting(envelope: bytes, keys: dict[str, bytes]):  # type: ignore[no-untyped-def]
        opened.append(len(envelope))
        return open_envelope(envelope, keys)

    monkeypatch.setattr(round_close, "open_envelope", counting)
    inputs, blobs = inputs_with_envelopes(tmp_path, snapshot(strategy="fedavg"))
    fed = Federation()
    result = round_close.compute(inputs, blobs, fed.holdout, np.random.default_rng(0), NOW)

    assert len(opened) == 4
    assert result.status == CloseStatus.aggregated
    assert [uid for uid, _ in result.rejected] == [13]
    assert "envelope header does not match the recorded submission" in result.rejected[0][1]
    assert {c.update_id for c in result.clients if c.kept} == {10, 11, 12}
    assert result.record is not None and "decrypt_ms" in result.record.durations_ms


def test_an_invalid_parameter_snapshot_fails_the_round_with_the_parameter_named(tmp_path: Path) -> None:
    inputs, blobs = inputs_with_envelopes(tmp_path, snapshot(sample_weight_cap=0.5))
    result = round_close.compute(inputs, blobs, Federation().holdout, np.random.default_rng(0), NOW)
    assert result.status == CloseStatus.failed
    assert "'sample_weight_cap' is 0.5" in str(result.reason)
    assert [uid for uid, _ in result.rejected] == [13]


def test_a_close_of_chunked_envelopes_equals_the_close_of_whole_ones(tmp_path: Path) -> None:
    key = generate_server_key()
    results = []
    for chunked in (False, True):
        inputs, blobs = inputs_with_envelopes(
            tmp_path / str(chunked), snapshot(strategy="fltrust"), chunked=chunked, key=key
        )
        results.append(
            round_close.compute(inputs, blobs, Federation().holdout, np.random.default_rng(0), NOW)
        )
    whole, chunked_result = results
    assert whole.status == chunked_result.status == CloseStatus.aggregated
    assert whole.new_weights is not None and chunked_result.new_weights is not None
    for name, array in whole.new_weights.items():
        assert np.array_equal(array, chunked_result.new_weights[name]), name

    # Each run draws its own organization addresses: everything else of the outcomes is the same.
    def scores(result: RoundResult) -> list[tuple[object, ...]]:
        return [
            (
                c.update_id,
                c.quality,
                c.honesty,
                c.fitness,
                c.kept,
                c.byzantine,
                c.reward_wei,
                c.reputation_after,
            )
            for c in result.clients
        ]

    assert scores(whole) == scores(chunked_result)
    assert [uid for uid, _ in chunked_result.rejected] == [13]
