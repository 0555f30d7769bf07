"""The pure building blocks: group assignment, quantization, Shamir over 32-byte secrets, mask expansion."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from fedledger.secagg.errors import GroupAssignmentError, QuantizationError, SecAggError, TooManyDropouts
from fedledger.secagg.groups import assign_groups, group_seed
from fedledger.secagg.prg import expand_mask
from fedledger.secagg.quantize import Quantizer
from fedledger.secagg.shamir import Share, combine_shares, split_secret

from .groupkit import ADDRESSES

SEED = bytes(32)


@pytest.mark.parametrize("n", [3, 5, 12, 13, 17])
def test_groups_cover_every_member_once_with_sizes_s_to_2s_minus_1(n: int) -> None:
    groups = assign_groups(SEED, ADDRESSES[:n], 3)
    flat = [m for g in groups for m in g]
    assert sorted(flat) == sorted(ADDRESSES[:n])
    assert all(3 <= len(g) <= 5 for g in groups)
    assert len(groups) == n // 3


def test_groups_depend_on_the_seed_only_not_on_the_order_members_are_listed() -> None:
    members = list(ADDRESSES[:12])
    first = assign_groups(SEED, members, 3)
    assert assign_groups(SEED, list(reversed(members)), 3) == first
    assert assign_groups(SEED, [m.lower() for m in members], 3) == first
    assert assign_groups(group_seed(bytes([1] * 32), 5), members, 3) != first
    assert group_seed(bytes([1] * 32), 5) != group_seed(bytes([1] * 32), 6)


def test_a_member_cannot_favour_any_group_mate_the_pairing_is_uniform() -> None:
    # With 6 members in groups of 3, two given members share a group with probability 2/5.
    together = 0
    trials = 3000
    for i in range(trials):
        groups = assign_groups(i.to_bytes(32, "big"), ADDRESSES[:6], 3)
        together += any(ADDRESSES[0] in g and ADDRESSES[1] in g for g in groups)
    assert abs(together / trials - 0.4) < 0.04


def test_group_assignment_refuses_what_cannot_be_grouped() -> None:
    with pytest.raises(GroupAssignmentError, match="at least 3"):
        assign_groups(SEED, ADDRESSES[:6], 2)
    with pytest.raises(GroupAssignmentError, match="cannot fill one group"):
        assign_groups(SEED, ADDRESSES[:2], 3)
    with pytest.raises(GroupAssignmentError, match="listed twice"):
        assign_groups(SEED, [ADDRESSES[0], ADDRESSES[0].lower(), ADDRESSES[1]], 3)
    with pytest.raises(GroupAssignmentError, match="32 bytes"):
        assign_groups(b"short", ADDRESSES[:3], 3)
    with pytest.raises(GroupAssignmentError, match="not a 0x address"):
        assign_groups(SEED, ["0x1234", *ADDRESSES[:3]], 3)


def test_quantizer_sums_never_wrap_and_stay_within_the_stated_error() -> None:
    q = Quantizer(clip=2.0, max_summands=7)
    rng = np.random.default_rng(1)
    rows = [rng.uniform(-2, 2, 10_000).astype(np.float32) for _ in range(6)]
    rows.append(np.full(10_000, 2.0, np.float32))  # the extreme the scale is sized for
    ring = np.zeros(10_000, np.uint32)
    for row in rows:
        ring += q.encode(row)
    exact = np.sum([r.astype(np.float64) for r in rows], axis=0)
    assert np.max(np.abs(q.decode_sum(ring) - exact)) <= q.sum_error(7)
    worst = np.zeros(3, np.uint32)
    for _ in range(7):
        worst += q.encode(np.full(3, -2.0, np.float32))
    np.testing.assert_allclose(q.decode_sum(worst), -14.0, atol=q.sum_error(7))


def test_quantizer_clips_and_refuses_bad_input() -> None:
    q = Quantizer(clip=0.5, max_summands=3)
    np.testing.assert_allclose(
        q.decode_sum(q.encode(np.array([3.0, -9.0], np.float32))), [0.5, -0.5], atol=1e-8
    )
    with pytest.raises(QuantizationError, match="NaN or infinite"):
        q.encode(np.array([np.nan], np.float32))
    with pytest.raises(QuantizationError, match="flat float32"):
        q.encode(np.zeros((2, 2), np.float32))
    with pytest.raises(QuantizationError, match="finite positive"):
        Quantizer(clip=0.0, max_summands=3)
    with pytest.raises(QuantizationError, match="no fixed-point resolution"):
        Quantizer(clip=1e12, max_summands=3)


def test_shamir_any_threshold_of_the_shares_rebuild_the_32_byte_secret() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 3, 5)
    assert [s.index for s in shares] == [1, 2, 3, 4, 5]
    for subset in itertools.combinations(shares, 3):
        assert combine_shares(list(subset), 3) == secret
    assert combine_shares(shares, 3) == secret
    with pytest.raises(TooManyDropouts, match="2 shares cannot rebuild"):
        combine_shares(shares[:2], 3)
    # Two shares at the threshold's degree interpolate to something unrelated.
    assert combine_shares(shares[:2], 2) != secret
    with pytest.raises(SecAggError, match="same index"):
        combine_shares([shares[0], shares[0], shares[1]], 3)
    assert "value" not in repr(shares[0])


def test_shamir_refuses_bad_parameters() -> None:
    with pytest.raises(SecAggError, match="32 bytes"):
        split_secret(b"x" * 16, 2, 3)
    with pytest.raises(SecAggError, match="threshold"):
        split_secret(bytes(32), 4, 3)
    with pytest.raises(SecAggError, match="share index"):
        Share(0, bytes(32))


def test_masks_are_deterministic_per_seed_and_label_and_look_uniform() -> None:
    seed = os.urandom(32)
    a = expand_mask(seed, 100_000, b"self")
    np.testing.assert_array_equal(a, expand_mask(seed, 100_000, b"self"))
    np.testing.assert_array_equal(a[:10], expand_mask(seed, 10, b"self"))
    assert np.mean(a == expand_mask(seed, 100_000, b"pair")) < 1e-3
    assert a.dtype == np.uint32
    # Mean of uniform 32-bit words is 2^31 with a standard error of about 3.9e6 at this length.
    assert abs(float(a.astype(np.float64).mean()) - 2**31) < 3e7
    with pytest.raises(SecAggError, match="32 bytes"):
        expand_mask(b"short", 10, b"self")


def test_tiers_keep_members_below_the_minimum_out_of_eligible_groups() -> None:
    from fedledger.secagg.groups import assign_tiers

    groups, left_out = assign_tiers(SEED, ADDRESSES[:7], ADDRESSES[7:10], 3)
    low = set(ADDRESSES[7:10])
    assert all(set(g) <= low or not set(g) & low for g in groups)
    assert sorted(m for g in groups for m in g) == sorted(ADDRESSES[:10]) and left_out == ()
    groups, left_out = assign_tiers(SEED, ADDRESSES[:6], ADDRESSES[6:8], 3)
    assert set(left_out) == set(ADDRESSES[6:8]) and len(groups) == 2
    with pytest.raises(GroupAssignmentError, match="both reputation tiers"):
        assign_tiers(SEED, ADDRESSES[:3], ADDRESSES[2:5], 3)


def test_the_mask_keystream_is_aes_256_ctr() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = os.urandom(32)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedledger/secagg/prg/v1/self").derive(
        seed
    )
    ctr = Cipher(algorithms.AES256(key), modes.CTR(bytes(12) + (2).to_bytes(4, "big"))).encryptor()
    expected = np.frombuffer(ctr.update(bytes(4 * 1000)), dtype="<u4")
    np.testing.assert_array_equal(expand_mask(seed, 1000, b"self"), expected)


def test_quantizer_bound_holds_when_the_clip_is_not_a_float32() -> None:
    # float32(0.1) > 0.1: clipping must use the float64 bound or m extreme values wrap.
    q = Quantizer(clip=0.1, max_summands=5)
    ring = np.zeros(4, np.uint32)
    for _ in range(5):
        ring += q.encode(np.full(4, 0.1, np.float32))
    np.testing.assert_allclose(q.decode_sum(ring), 0.5, atol=q.sum_error(5) + 5e-9)
    assert (ring.view(np.int32) > 0).all()


@pytest.mark.parametrize("primary", ["SecAggKeys", "SecAggShares", "SecAggMasked", "SecAggUnmask"])
def test_hand_encoded_digests_and_signatures_match_eth_accounts_typed_data(primary: str) -> None:
    from fedledger.crypto.eip712 import recover_typed_data_signer, signature_digest
    from fedledger.secagg.messages import TYPES, digest, sign, typed_data

    from .groupkit import DOMAIN, KEYS

    message: dict[str, object] = {
        f["name"]: (os.urandom(32) if f["type"] == "bytes32" else 12345) for f in TYPES[primary]
    }
    assert digest(DOMAIN, primary, message) == signature_digest(typed_data(DOMAIN, primary, message))
    signature = sign(KEYS[0], DOMAIN, primary, message)
    assert recover_typed_data_signer(signature, typed_data(DOMAIN, primary, message)) == ADDRESSES[0]
