"""A chunked update larger than ``max_update_bytes`` is accepted: the API checks it a chunk at a time (every
chunk authenticated against the signed table and decrypted, never the whole plaintext at once), so only the
unchunked form is bound by that limit; the chunked form has its own, ``max_chunked_update_bytes``."""

from __future__ import annotations

import pytest

from fedledger.config import Settings
from fedledger.crypto.chunked import ChunkOpener, parse_head
from tests.middleware.conftest import ORGS, World, login, make_update, post_update
from tests.middleware.test_chunked_submission import chunked_update

WHOLE_LIMIT = 256  # below any envelope of the test model (68 float32 coordinates: 272 bytes of plaintext)
CHUNKED_LIMIT = 4096


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"max_update_bytes": WHOLE_LIMIT, "max_chunked_update_bytes": CHUNKED_LIMIT}
    )


def test_a_chunked_update_above_the_whole_envelope_limit_is_accepted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelope, signature, _ = chunked_update(world, ORGS[0])
    assert WHOLE_LIMIT < len(envelope) <= CHUNKED_LIMIT
    # The same update unchunked is refused by the whole-envelope limit, with the way out in the reason.
    whole, whole_signature = make_update(world, ORGS[1])
    refused = post_update(world, ORGS[1], whole, whole_signature)
    assert refused.status_code == 413 and refused.json()["error"] == "too_large", refused.text
    assert "seal a larger one in chunks" in refused.json()["detail"]

    # The API opens one chunk at a time: no read spans more than one sealed chunk.
    head = parse_head(envelope)
    spans = {head.chunk_span(k)[1] for k in range(head.header.num_chunks)}
    reads: list[int] = []
    check = ChunkOpener.check

    def counted(self: ChunkOpener, read):  # type: ignore[no-untyped-def]
        def recorded(offset: int, size: int) -> bytes:
            reads.append(size)
            return read(offset, size)

        return check(self, recorded)

    monkeypatch.setattr(ChunkOpener, "check", counted)
    accepted = post_update(world, ORGS[0], envelope, signature)
    assert accepted.status_code == 202, accepted.text
    assert len(reads) == head.header.num_chunks and set(reads) <= spans


def test_a_chunked_update_above_its_own_limit_is_refused(world: World) -> None:
    headers = {**login(world.client, ORGS[0]), "X-Update-Signature": "0x00"}
    url = f"/v1/rounds/{world.round['id']}/updates"
    body = b"FLE2" + bytes(CHUNKED_LIMIT)
    response = world.client.post(url, content=body, headers=headers)
    assert response.status_code == 413 and response.json()["error"] == "too_large", response.text
    # Streamed without a length (chunked transfer): refused once the bytes pass the limit.
    streamed = world.client.post(url, content=iter([body[:100], body[100:]]), headers=headers)
    assert streamed.status_code == 413 and "chunked update" in streamed.json()["detail"], streamed.text
