"""One group end to end with real X25519, AES, Shamir and wallet signatures: sums, dropouts, forgeries."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger.secagg import agreement
from fedledger.secagg.errors import (
    ForgedShare,
    InvalidMessage,
    ProtocolViolation,
    SecAggError,
    TooManyDropouts,
)
from fedledger.secagg.prg import expand_mask
from fedledger.secagg.protocol import GroupMember, GroupTranscript, ShareBundle, UnmaskReveal
from fedledger.secagg.shamir import Share

from .groupkit import ADDRESSES, KEYS, context, quantized_sum, run_group, updates_for


def test_no_dropout_sum_is_exactly_the_quantized_sum() -> None:
    ctx = context(5, 3)
    run = run_group(ctx)
    result = run.transcript.unmask()
    assert result.dropped == ()
    np.testing.assert_array_equal(result.ring_sum, quantized_sum(ctx, run.updates, ctx.members))
    float_sum = np.sum([run.updates[m].astype(np.float64) for m in ctx.members], axis=0)
    assert np.max(np.abs(result.total - float_sum)) <= result.max_error
    assert result.num_samples == {m: 10 + ADDRESSES.index(m) for m in ctx.members}


@pytest.mark.parametrize("dropouts", [1, 2], ids=["one", "s-minus-t"])
def test_members_dropping_after_sharing_leave_the_survivors_sum(dropouts: int) -> None:
    ctx = context(5, 3)
    gone = ctx.members[1 : 1 + dropouts]
    run = run_group(ctx, silent_at_mask=gone)
    result = run.transcript.unmask()
    survivors = [m for m in ctx.members if m not in gone]
    assert list(result.survivors) == survivors
    assert set(result.dropped) == set(gone)
    np.testing.assert_array_equal(result.ring_sum, quantized_sum(ctx, run.updates, survivors))
    np.testing.assert_allclose(result.mean * len(survivors), result.total.astype(np.float32), rtol=1e-6)


def test_every_message_survives_its_json_wire_form() -> None:
    ctx = context(5, 3)
    run = run_group(ctx, silent_at_mask=ctx.members[2:3], over_the_wire=True)
    survivors = [m for m in ctx.members if m != ctx.members[2]]
    np.testing.assert_array_equal(
        run.transcript.unmask().ring_sum, quantized_sum(ctx, run.updates, survivors)
    )


def test_malformed_wire_messages_are_typed_errors_naming_the_field() -> None:
    from fedledger.secagg import wire

    ctx = context(3, 2)
    run = run_group(ctx)
    advert = wire.advert_json(next(iter(run.transcript.adverts.values())))
    with pytest.raises(InvalidMessage, match="exactly the fields"):
        wire.advert_from({**advert, "extra": 1})
    with pytest.raises(InvalidMessage, match="mask_key must be 32 bytes"):
        wire.advert_from({**advert, "mask_key": "0x00"})
    with pytest.raises(InvalidMessage, match="member must be a 0x address"):
        wire.advert_from({**advert, "member": "alice"})
    masked = wire.masked_json(next(iter(run.transcript.masked.values())))
    with pytest.raises(InvalidMessage, match="num_samples must be an integer"):
        wire.masked_from({**masked, "num_samples": "10"})
    with pytest.raises(InvalidMessage, match="256 bytes, got 3"):
        wire.vector_from(b"abc", 64)
    reveal = wire.reveal_json(next(iter(run.transcript.reveals.values())))
    with pytest.raises(InvalidMessage, match="seed_shares must map"):
        wire.reveal_from({**reveal, "seed_shares": {"x": [1, "0x00"]}})
    # A vector that is not the one signed is refused by the transcript.
    header = next(iter(run.transcript.masked.values()))
    forged = wire.masked_from(masked, np.zeros(ctx.dimension, np.uint32))
    fresh = GroupTranscript(ctx)
    fresh.adverts, fresh.bundles = run.transcript.adverts, run.transcript.bundles
    with pytest.raises(InvalidMessage, match="does not have the hash it signed"):
        fresh.add_masked(forged)
    assert header.vector is not None


def test_a_member_silent_from_the_start_is_simply_not_in_the_group_sum() -> None:
    ctx = context(4, 3)
    run = run_group(ctx, silent_at_keys=ctx.members[:1])
    result = run.transcript.unmask()
    np.testing.assert_array_equal(result.ring_sum, quantized_sum(ctx, run.updates, ctx.members[1:]))


def test_a_survivor_silent_at_unmasking_is_still_counted_from_the_others_shares() -> None:
    ctx = context(5, 3)
    run = run_group(ctx, silent_at_mask=ctx.members[:1], silent_at_unmask=ctx.members[1:2])
    result = run.transcript.unmask()
    np.testing.assert_array_equal(result.ring_sum, quantized_sum(ctx, run.updates, ctx.members[1:]))


def test_too_many_dropouts_is_a_typed_error_at_the_members_and_the_server() -> None:
    ctx = context(5, 3)
    with pytest.raises(TooManyDropouts, match="fewer than the threshold 3"):
        run_group(ctx, silent_at_mask=ctx.members[:3])
    run = run_group(ctx, silent_at_unmask=ctx.members[:3])
    with pytest.raises(TooManyDropouts, match="2 members revealed shares"):
        run.transcript.unmask()
    with pytest.raises(TooManyDropouts):
        run_group(ctx, silent_at_shares=ctx.members[:3])


def test_quantization_error_is_within_the_stated_bound_and_clipping_applies() -> None:
    ctx = context(3, 2, dimension=1000, clip=0.5)
    updates = updates_for(ctx, scale=1.0)
    run = run_group(ctx, updates=updates)
    result = run.transcript.unmask()
    clipped = np.sum([np.clip(updates[m], -0.5, 0.5).astype(np.float64) for m in ctx.members], axis=0)
    assert np.max(np.abs(result.total - clipped)) <= result.max_error
    assert result.max_error < 1e-8


def _first_three(ctx_size: int = 4) -> tuple[GroupTranscript, dict[str, GroupMember]]:
    ctx = context(ctx_size, 3)
    members = {m: GroupMember(ctx, address=m, wallet_key=KEYS[ADDRESSES.index(m)]) for m in ctx.members}
    transcript = GroupTranscript(ctx)
    for member in members.values():
        transcript.add_advert(member.advertise())
    for member in members.values():
        transcript.add_bundle(member.deal(list(transcript.adverts.values())))
    return transcript, members


def test_an_altered_share_box_is_a_forged_share_at_its_holder() -> None:
    transcript, members = _first_three()
    a, b = list(members)[:2]
    bundle = transcript.bundles[a.lower()]
    boxes = tuple(
        dataclasses.replace(box, sealed=box.sealed[:-1] + bytes([box.sealed[-1] ^ 1]))
        if box.holder == b
        else box
        for box in bundle.boxes
    )
    # The server cannot re-sign: an altered bundle fails the dealer's signature first...
    with pytest.raises(InvalidMessage, match="signed by"):
        members[b].mask(
            np.zeros(64, np.float32), 1, [dataclasses.replace(bundle, boxes=boxes), *_others(transcript, a)]
        )
    # ...and a box moved to another holder's slot (signature intact, bundle re-hashed) does not open.
    swapped = tuple(
        dataclasses.replace(box, sealed=bundle.box_for(list(members)[2]).sealed) if box.holder == b else box
        for box in bundle.boxes
    )
    forged = dataclasses.replace(bundle, boxes=swapped)
    with pytest.raises(ForgedShare, match="does not open"):
        members[b]._open(forged)


def test_a_box_that_opens_but_breaks_its_commitment_is_a_forged_share() -> None:
    # A dishonest dealer seals a share that differs from the one it committed to.
    transcript, members = _first_three()
    a, b = list(members)[:2]
    dealer = members[a]
    bundle = transcript.bundles[a.lower()]
    box = bundle.box_for(b)
    bad_plain = bytes([transcript.context.index_of(b)]) + bytes(64)
    resealed = agreement.seal_share(
        dealer._shared("channel", transcript.adverts[b.lower()].channel_key),
        bad_plain,
        dealer._box_context(a, b),
    )
    with pytest.raises(ForgedShare, match="signed commitment"):
        members[b]._open(
            ShareBundle(
                a,
                tuple(dataclasses.replace(x, sealed=resealed) if x is box else x for x in bundle.boxes),
                bundle.self_seed_commitment,
                "",
            )
        )


def test_a_forged_revealed_share_is_refused_by_the_server() -> None:
    ctx = context(4, 3)
    run = run_group(ctx, silent_at_mask=ctx.members[:1], silent_at_unmask=ctx.members[1:])
    liar = run.members[ctx.members[1]]
    honest = liar.unmask(list(run.transcript.masked.values()))
    owner = ctx.members[2]
    bad = dict(honest.seed_shares)
    bad[owner] = Share(bad[owner].index, bytes(32))
    from fedledger.secagg.messages import sign

    unsigned = UnmaskReveal(honest.member, honest.survivors, bad, honest.key_shares, "")
    signed = dataclasses.replace(
        unsigned,
        signature=sign(
            KEYS[ADDRESSES.index(honest.member)], ctx.domain, "SecAggUnmask", unsigned.message(ctx)
        ),
    )
    with pytest.raises(ForgedShare, match="does not match"):
        run.transcript.add_reveal(signed)
    # The same reveal signed by someone else is not the member's.
    with pytest.raises(InvalidMessage, match="signed by"):
        run.transcript.add_reveal(
            dataclasses.replace(honest, signature=_resign_as(ctx, honest, ADDRESSES[10]))
        )
    run.transcript.add_reveal(honest)


def test_a_member_answers_unmasking_once() -> None:
    ctx = context(5, 3)
    run = run_group(ctx, silent_at_unmask=ctx.members)
    member = run.members[ctx.members[0]]
    inputs = list(run.transcript.masked.values())
    member.unmask(inputs)
    member.unmask(inputs)  # the same question gets the same answer
    with pytest.raises(ProtocolViolation, match="twice with different survivors"):
        member.unmask(inputs[:4])


def test_thresholds_that_let_the_server_learn_both_secrets_are_refused() -> None:
    with pytest.raises(SecAggError, match="strict majority"):
        context(4, 2)
    with pytest.raises(SecAggError, match="at least 3"):
        context(2, 2)


def test_the_stored_transcript_does_not_unmask_any_single_member() -> None:
    """Everything the server stores, used as the server would: no survivor's update comes out."""
    ctx = context(5, 3, dimension=256)
    run = run_group(ctx, silent_at_mask=ctx.members[:1])
    t = run.transcript
    stored = _stored_bytes(t)
    result = t.unmask()
    for m in result.survivors:
        member = run.members[m]
        # No secret of any survivor (its keys, its self seed, its pairwise seeds, the shares of survivors'
        # mask keys it holds) is in what the server stores, raw or as hex.
        secrets = [
            agreement.private_bytes(member._mask),
            agreement.private_bytes(member._channel),
            member._self_seed,
        ]
        secrets += [
            agreement.pairwise_seed(member._shared("mask", a.mask_key), ctx.group_id)
            for a in t.adverts.values()
            if a.member != m
        ]
        # (A dropped member's mask-key shares are revealed by design; a survivor's never are.)
        secrets += [member._held[o.lower()][1].value for o in result.survivors]
        for secret in secrets:
            assert secret not in stored and secret.hex().encode() not in stored
        # No share of a survivor's mask key was revealed: it cannot be rebuilt (t needed, 0 held).
        assert all(m not in r.key_shares for r in t.reveals.values())
        # The self mask is removable by design; what remains is still hidden by the pairwise masks.
        seed = _rebuild_seed(t, m)
        candidate = t.masked[m.lower()].vector - expand_mask(seed, ctx.dimension, b"self")
        truth = ctx.quantizer.encode(run.updates[m])
        assert np.mean(candidate == truth) < 0.01
        guess = ctx.quantizer.decode_sum(candidate)
        assert abs(np.corrcoef(guess, run.updates[m])[0, 1]) < 0.3
    # The dropped member's mask key is rebuilt (by design) but its vector never reached the server.
    assert ctx.members[0].lower() not in t.masked


def _rebuild_seed(t: GroupTranscript, member: str) -> bytes:
    from fedledger.secagg.shamir import combine_shares

    return combine_shares([r.seed_shares[member] for r in t.reveals.values()], t.context.threshold)


def _stored_bytes(t: GroupTranscript) -> bytes:
    """Everything the server keeps of the group, as the API would store it: each message's JSON wire form
    (bytes as hex) and each masked vector's raw bytes."""
    from fedledger.secagg import wire

    docs = [wire.advert_json(a) for a in t.adverts.values()]
    docs += [wire.bundle_json(b) for b in t.bundles.values()]
    docs += [wire.masked_json(m) for m in t.masked.values()]
    docs += [wire.reveal_json(r) for r in t.reveals.values()]
    vectors = [bytes(wire.vector_bytes(m.vector)) for m in t.masked.values() if m.vector is not None]
    return b"".join(json.dumps(d).encode() for d in docs) + b"".join(vectors)


def _others(transcript: GroupTranscript, dealer: str) -> list[ShareBundle]:
    return [b for k, b in transcript.bundles.items() if k != dealer.lower()]


def _resign_as(ctx, reveal: UnmaskReveal, address: str) -> str:  # type: ignore[no-untyped-def]
    from fedledger.secagg.messages import sign

    return sign(KEYS[ADDRESSES.index(address)], ctx.domain, "SecAggUnmask", reveal.message(ctx))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(3, 6),
    data=st.data(),
)
def test_any_dropout_pattern_the_threshold_survives_unmasks_exactly(size: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(size // 2 + 1, size), label="threshold")
    ctx = context(size, threshold, dimension=32)
    order = data.draw(st.permutations(ctx.members), label="order")
    # How many fall silent before each step; the rest must stay at or above the threshold to unmask.
    spare = size - threshold
    cuts = [data.draw(st.integers(0, spare), label=f"silent before step {i}") for i in range(4)]
    silent: list[list[str]] = []
    start = 0
    for cut in cuts:
        take = min(cut, spare - sum(len(s) for s in silent))
        silent.append(list(order[start : start + take]))
        start += take
    run = run_group(
        ctx,
        silent_at_keys=silent[0],
        silent_at_shares=silent[1],
        silent_at_mask=silent[2],
        silent_at_unmask=silent[3],
    )
    result = run.transcript.unmask()
    survivors = [m for m in ctx.members if m not in silent[0] + silent[1] + silent[2]]
    assert list(result.survivors) == survivors
    np.testing.assert_array_equal(result.ring_sum, quantized_sum(ctx, run.updates, survivors))
