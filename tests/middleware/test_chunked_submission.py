"""Chunked envelopes through the API: accepted with a signature over their head, refused with a clear reason
when the signature covers other bytes, a chunk was altered, or the coordinates are not the model's."""

from __future__ import annotations

import hashlib

import numpy as np

from fedledger.crypto.chunked import coordinate_order, layout_hash, parse_head, seal_chunked
from fedledger.crypto.eip712 import sign_update
from fedledger.devkeys import dev_private_key
from fedledger.payload import flatten
from tests.middleware.conftest import ORGS, World, address_of, post_update


def chunked_update(
    world: World, index: int, *, transpose: bool = False, sign_whole: bool = False
) -> tuple[bytes, str, np.ndarray]:
    """A chunked envelope of a random delta of the model's tensors (2-D ones transposed if asked), as the SDK
    builds it."""
    spec = world.client.get("/v1/models/current").json()["spec"]
    shapes = coordinate_order({n: tuple(reversed(s)) if transpose else s for n, s in spec.items()})
    rng = np.random.default_rng(index)
    vector = flatten({n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}, shapes)
    key = world.client.get("/v1/keys/current").json()
    envelope = seal_chunked(
        vector,
        key["public_key_pem"].encode(),
        round_id=world.round["id"],
        model_version=world.round["model_version"],
        participant=address_of(index),
        num_samples=100,
        layout=layout_hash(shapes),
        chunk_coords=16,
    )
    signed = hashlib.sha256(envelope).digest() if sign_whole else parse_head(envelope).payload_hash
    signature = sign_update(
        dev_private_key(index),
        chain_id=world.deployments.chain_id,
        verifying_contract=world.deployments.addresses["ContributionLedger"],
        round_id=world.round["id"],
        model_version=world.round["model_version"],
        payload_hash=signed,
        num_samples=100,
    )
    return envelope, signature, vector


def test_a_chunked_update_is_accepted_and_replayed(world: World) -> None:
    envelope, signature, _ = chunked_update(world, ORGS[0])
    first = post_update(world, ORGS[0], envelope, signature)
    assert first.status_code == 202, first.text
    # The receipt names the stored bytes (the blob key), whatever the signature covers.
    assert first.json()["payload_hash"] == "0x" + hashlib.sha256(envelope).hexdigest()
    again = post_update(world, ORGS[0], envelope, signature)
    assert again.status_code == 202 and again.json()["receipt_id"] == first.json()["receipt_id"]


def test_a_signature_over_the_whole_envelope_is_not_the_chunked_form(world: World) -> None:
    envelope, signature, _ = chunked_update(world, ORGS[0], sign_whole=True)
    response = post_update(world, ORGS[0], envelope, signature)
    assert response.status_code == 401 and response.json()["error"] == "bad_signature", response.text


def test_an_altered_chunk_is_refused(world: World) -> None:
    envelope, signature, _ = chunked_update(world, ORGS[0])
    offset, _ = parse_head(envelope).chunk_span(2)
    altered = bytearray(envelope)
    altered[offset] ^= 0xFF
    response = post_update(world, ORGS[0], bytes(altered), signature)
    assert response.status_code == 422 and response.json()["error"] == "undecryptable", response.text
    assert "chunk 2" in response.json()["detail"]


def test_tensors_of_other_shapes_are_refused_even_with_as_many_coordinates(world: World) -> None:
    envelope, signature, _ = chunked_update(world, ORGS[0], transpose=True)
    response = post_update(world, ORGS[0], envelope, signature)
    assert response.status_code == 422 and response.json()["error"] == "shape_mismatch", response.text
    assert "flattened by tensor name" in response.json()["detail"]
