"""One group's secure aggregation: a member's four steps and the server's transcript and unmasking.

Steps (SecAgg+ inside a group of k members, threshold t > k/2):

1. **Keys.** Each member signs two fresh X25519 public keys (:class:`KeyAdvert`). U1 = the members whose
   adverts arrived.
2. **Shares.** Each member of U1 draws a self-mask seed b, splits b and its mask private key t-of-|U1|, and
   seals each group-mate's two shares in a box only that group-mate opens; it signs the boxes with a
   commitment to every share and to b (:class:`ShareBundle`). U2 = the dealers whose bundles arrived.
3. **Masked input.** Each member of U2 quantizes its update into Z_{2^32} and adds its self mask PRG(b)
   and, for every other member j of U2, +PRG(s_ij) if it sorts before j, else -PRG(s_ij); it signs the
   vector's hash, its sample claim and U2 (:class:`MaskedInput`). U3 = the members whose vectors arrived.
4. **Unmask.** Shown the signed masked inputs of U3, each member of U3 reveals its shares of b_i for every
   i in U3 and of the mask key of every i in U2 \\ U3, never both for one member (:class:`UnmaskReveal`).

The server then rebuilds each survivor's b and each dropped member's mask key from t shares that match
their dealers' commitments, and removes every mask: what is left is the sum of U3's quantized updates.

What the server never holds: a survivor's mask private key (no member reveals a share of it) nor any
share box's key, so a single masked vector stays hidden behind its pairwise masks. Because t > k/2, a
server that shows some members i as a survivor and others i as dropped cannot collect t shares of both
of i's secrets from honest members. Every check raises a typed error (:mod:`.errors`) naming the member.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, TypeVar

import numpy as np

from fedledger.crypto.addresses import checksummed, is_valid_address
from fedledger.secagg import agreement
from fedledger.secagg.errors import (
    ForgedShare,
    InvalidMessage,
    ProtocolViolation,
    SecAggError,
    TooManyDropouts,
)
from fedledger.secagg.messages import Domain, check_signer, sign
from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.prg import expand_mask
from fedledger.secagg.quantize import Quantizer
from fedledger.secagg.shamir import Share, combine_shares, split_secret

SEED = "seed"
KEY = "key"
_SELF_LABEL = b"self"
_PAIR_LABEL = b"pair"


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:].lower())


def _sha(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


@dataclass(frozen=True)
class GroupContext:
    """What every member and the server agree on before step 1: the domain, round, group and sizes."""

    domain: Domain
    round_id: int
    seed: bytes
    members: tuple[str, ...]
    threshold: int
    dimension: int
    clip: float

    def __post_init__(self) -> None:
        if any(not is_valid_address(m) for m in self.members):
            raise SecAggError("every group member must be a 0x address")
        ordered = tuple(sorted((checksummed(m) for m in self.members), key=str.lower))
        if len(set(ordered)) != len(ordered):
            raise SecAggError("a group lists a member twice")
        object.__setattr__(self, "members", ordered)
        k = len(ordered)
        if k < 3:
            raise SecAggError(f"a group needs at least 3 members, got {k}")
        if not (k // 2 < self.threshold <= k):
            raise SecAggError(
                f"threshold must be a strict majority of the group and at most its size ({k // 2 + 1}..{k}), "
                f"got {self.threshold}: a smaller one lets the server learn both secrets of one member"
            )
        if self.dimension < 1:
            raise SecAggError(f"dimension must be >= 1, got {self.dimension}")
        if len(self.seed) != 32:
            raise SecAggError(f"the assignment seed is 32 bytes, got {len(self.seed)}")

    @cached_property
    def group_id(self) -> bytes:
        """32 bytes naming this round's group: round, seed, threshold, dimension, clip and members."""
        return _sha(
            b"fedledger/secagg/group/v1",
            self.round_id.to_bytes(32, "big"),
            self.seed,
            self.threshold.to_bytes(2, "big"),
            self.dimension.to_bytes(8, "big"),
            repr(float(self.clip)).encode(),
            *(_address_bytes(m) for m in self.members),
        )

    @cached_property
    def quantizer(self) -> Quantizer:
        """The fixed-point encoding sized for a sum over the whole group."""
        return Quantizer(clip=self.clip, max_summands=len(self.members))

    def index_of(self, member: str) -> int:
        """A member's 1-based position, which is also the x-coordinate of the shares it holds."""
        key = member.lower()
        for position, m in enumerate(self.members):
            if m.lower() == key:
                return position + 1
        raise InvalidMessage(f"{member} is not a member of this group")

    def member(self, address: str) -> str:
        """The checksummed form of a member's address (:class:`InvalidMessage` for a stranger)."""
        return self.members[self.index_of(address) - 1]

    def _base(self) -> dict[str, object]:
        return {"roundId": self.round_id, "groupId": self.group_id}


def members_hash(members: Iterable[str]) -> bytes:
    """SHA-256 over a member set (order-free): what ``peersHash`` and ``survivorsHash`` sign."""
    return _sha(b"members", *(_address_bytes(m) for m in sorted(m.lower() for m in members)))


def share_commitment(context: GroupContext, dealer: str, holder: str, kind: str, share: Share) -> bytes:
    """A dealer's commitment to the share it gave ``holder``; shares below the threshold are uniformly
    random 32-byte strings, so the hash reveals nothing the server could use."""
    return _sha(
        b"fedledger/secagg/share/v1",
        context.group_id,
        _address_bytes(dealer),
        _address_bytes(holder),
        kind.encode(),
        bytes([share.index]),
        share.value,
    )


def seed_commitment(context: GroupContext, dealer: str, seed: bytes) -> bytes:
    """A dealer's commitment to its self-mask seed, checked after the seed is rebuilt."""
    return _sha(b"fedledger/secagg/self-seed/v1", context.group_id, _address_bytes(dealer), seed)


def payload_hash(vector: np.ndarray) -> bytes:
    """SHA-256 of a masked vector as little-endian uint32 words (what ``SecAggMasked.payloadHash`` signs)."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<u4").data.cast("B")).digest()


# --- messages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAdvert:
    """Step 1: a member's channel and mask public keys, signed."""

    member: str
    channel_key: bytes
    mask_key: bytes
    signature: str

    def message(self, context: GroupContext) -> dict[str, object]:
        """The ``SecAggKeys`` fields this advert signs."""
        return {**context._base(), "channelKey": self.channel_key, "maskKey": self.mask_key}

    def verify(self, context: GroupContext) -> None:
        """:class:`InvalidMessage` unless a group member signed these keys for this round and group."""
        context.index_of(self.member)
        for name, key in (("channel", self.channel_key), ("mask", self.mask_key)):
            if len(key) != agreement.KEY_BYTES:
                raise InvalidMessage(f"{self.member}'s {name} key must be 32 bytes, got {len(key)}")
        check_signer(self.signature, self.member, context.domain, "SecAggKeys", self.message(context))


@dataclass(frozen=True)
class ShareBox:
    """The sealed pair (seed share, mask-key share) a dealer sends one holder, and their commitments."""

    holder: str
    sealed: bytes
    seed_commitment: bytes
    key_commitment: bytes


@dataclass(frozen=True)
class ShareBundle:
    """Step 2: a dealer's share boxes for every member of U1 (its own included) and its seed commitment."""

    dealer: str
    boxes: tuple[ShareBox, ...]
    self_seed_commitment: bytes
    signature: str

    def shares_hash(self) -> bytes:
        """SHA-256 over every box and commitment, holders in order (what ``SecAggShares`` signs)."""
        parts = [self.self_seed_commitment]
        for box in sorted(self.boxes, key=lambda b: b.holder.lower()):
            parts += [_address_bytes(box.holder), box.sealed, box.seed_commitment, box.key_commitment]
        return _sha(b"fedledger/secagg/shares/v1", *parts)

    def message(self, context: GroupContext) -> dict[str, object]:
        """The ``SecAggShares`` fields this bundle signs."""
        return {**context._base(), "sharesHash": self.shares_hash()}

    def holders(self) -> frozenset[str]:
        """The members this dealer sealed a box for (U1 as the dealer saw it)."""
        return frozenset(b.holder.lower() for b in self.boxes)

    def box_for(self, holder: str) -> ShareBox:
        """The box sealed for ``holder`` (:class:`InvalidMessage` if there is none)."""
        for box in self.boxes:
            if box.holder.lower() == holder.lower():
                return box
        raise InvalidMessage(f"{self.dealer}'s shares include no box for {holder}")

    def verify(self, context: GroupContext, adverts: Mapping[str, KeyAdvert]) -> None:
        """Signed by a dealer of U1, with exactly one box per member of U1."""
        context.index_of(self.dealer)
        if self.dealer.lower() not in adverts:
            raise InvalidMessage(f"{self.dealer} sent shares without advertising keys first")
        if len({b.holder.lower() for b in self.boxes}) != len(self.boxes):
            raise InvalidMessage(f"{self.dealer}'s shares name one holder twice")
        if self.holders() != frozenset(adverts):
            raise InvalidMessage(
                f"{self.dealer}'s shares are for {len(self.boxes)} members, not the {len(adverts)} that "
                "advertised keys; it was shown a different key list"
            )
        check_signer(self.signature, self.dealer, context.domain, "SecAggShares", self.message(context))


@dataclass(frozen=True)
class MaskedInput:
    """Step 3: a member's masked vector in Z_{2^32} (by its hash), its sample claim, and the members it
    masked with. ``vector`` is the masked vector itself on the way to the server and None in the signed
    headers the server shows the survivors at step 4 (they check signatures, not vectors)."""

    member: str
    payload_hash: bytes
    num_samples: int
    peers: frozenset[str]
    signature: str
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)

    def message(self, context: GroupContext) -> dict[str, object]:
        """The ``SecAggMasked`` fields this input signs."""
        return {
            **context._base(),
            "payloadHash": self.payload_hash,
            "numSamples": self.num_samples,
            "peersHash": members_hash(self.peers),
        }

    def header(self) -> MaskedInput:
        """The signed fields without the vector (what the other survivors are shown)."""
        return dataclasses.replace(self, vector=None)

    def verify(self, context: GroupContext, dealers: frozenset[str]) -> None:
        """Signed by a member of U2, masked with exactly U2; a vector, when present, of the group's
        dimension and with the signed hash."""
        context.index_of(self.member)
        if self.member.lower() not in dealers:
            raise InvalidMessage(f"{self.member} sent a masked input but no shares: it cannot be unmasked")
        if self.vector is not None:
            if self.vector.dtype != np.uint32 or self.vector.shape != (context.dimension,):
                raise InvalidMessage(
                    f"{self.member}'s masked input must be {context.dimension} uint32 words, got "
                    f"{self.vector.dtype} of shape {self.vector.shape}"
                )
            if payload_hash(self.vector) != self.payload_hash:
                raise InvalidMessage(f"{self.member}'s masked vector does not have the hash it signed")
        if frozenset(p.lower() for p in self.peers) != dealers:
            raise InvalidMessage(
                f"{self.member} masked with a different member set than the dealers on record; its masks "
                "would not cancel"
            )
        if self.num_samples < 1:
            raise InvalidMessage(f"{self.member} claims {self.num_samples} samples; claim at least 1")
        check_signer(self.signature, self.member, context.domain, "SecAggMasked", self.message(context))


@dataclass(frozen=True)
class UnmaskReveal:
    """Step 4: a survivor's shares of each survivor's self seed and of each dropped member's mask key."""

    member: str
    survivors: frozenset[str]
    seed_shares: Mapping[str, Share]
    key_shares: Mapping[str, Share]
    signature: str

    def reveal_hash(self) -> bytes:
        """SHA-256 over every revealed share with its owner and kind (what ``SecAggUnmask`` signs)."""
        parts: list[bytes] = []
        for kind, shares in ((SEED, self.seed_shares), (KEY, self.key_shares)):
            for owner in sorted(shares, key=str.lower):
                share = shares[owner]
                parts += [kind.encode(), _address_bytes(owner), bytes([share.index]), share.value]
        return _sha(b"fedledger/secagg/reveal/v1", *parts)

    def message(self, context: GroupContext) -> dict[str, object]:
        """The ``SecAggUnmask`` fields this reveal signs."""
        return {
            **context._base(),
            "survivorsHash": members_hash(self.survivors),
            "revealHash": self.reveal_hash(),
        }


# --- a member ---------------------------------------------------------------------------------------


class GroupMember:
    """One organization's side of the protocol for one round; its secrets live only in this object."""

    def __init__(self, context: GroupContext, *, address: str, wallet_key: str) -> None:
        self.context = context
        self.address = context.member(address)
        self._wallet_key = wallet_key
        self._channel = agreement.new_private_key()
        self._mask = agreement.new_private_key()
        self._self_seed = os.urandom(32)
        self._adverts: dict[str, KeyAdvert] = {}
        self._dealers: frozenset[str] | None = None
        self._held: dict[str, tuple[Share, Share]] = {}
        self._survivors: frozenset[str] | None = None
        # X25519 exchanges by (purpose, peer key): the channel secret seals to a peer and opens its box.
        self._exchanges: dict[tuple[str, bytes], bytes] = {}

    def advertise(self) -> KeyAdvert:
        """Step 1: the signed public keys."""
        channel_key = agreement.public_bytes(self._channel)
        mask_key = agreement.public_bytes(self._mask)
        message = {**self.context._base(), "channelKey": channel_key, "maskKey": mask_key}
        signature = sign(self._wallet_key, self.context.domain, "SecAggKeys", message)
        return KeyAdvert(self.address, channel_key, mask_key, signature)

    def deal(self, adverts: Sequence[KeyAdvert]) -> ShareBundle:
        """Step 2: shares of the self seed and the mask key for every member whose keys arrived."""
        if self._adverts:
            raise ProtocolViolation("this member already dealt its shares for the round; deal once")
        by_member = _index_adverts(self.context, adverts)
        if self.address.lower() not in by_member:
            raise InvalidMessage("the key list the server relayed leaves this member out")
        if len(by_member) < self.context.threshold:
            raise TooManyDropouts(
                f"{len(by_member)} members advertised keys, fewer than the threshold "
                f"{self.context.threshold}: the group cannot run this round"
            )
        self._adverts = by_member
        holders = sorted(by_member, key=lambda m: self.context.index_of(m))
        # Shares are evaluated at each holder's group position, so a share's index says whose it is.
        indices = [self.context.index_of(h) for h in holders]
        seed_shares = _split_at(self._self_seed, self.context.threshold, indices)
        key_shares = _split_at(agreement.private_bytes(self._mask), self.context.threshold, indices)
        boxes = []
        for holder, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            holder_addr = by_member[holder].member
            sealed = agreement.seal_share(
                self._shared("channel", by_member[holder].channel_key),
                bytes([seed_share.index]) + seed_share.value + key_share.value,
                self._box_context(self.address, holder_addr),
            )
            boxes.append(
                ShareBox(
                    holder=holder_addr,
                    sealed=sealed,
                    seed_commitment=share_commitment(
                        self.context, self.address, holder_addr, SEED, seed_share
                    ),
                    key_commitment=share_commitment(self.context, self.address, holder_addr, KEY, key_share),
                )
            )
        unsigned = ShareBundle(
            self.address, tuple(boxes), seed_commitment(self.context, self.address, self._self_seed), ""
        )
        signature = sign(
            self._wallet_key, self.context.domain, "SecAggShares", unsigned.message(self.context)
        )
        return ShareBundle(unsigned.dealer, unsigned.boxes, unsigned.self_seed_commitment, signature)

    def mask(
        self,
        update: np.ndarray,
        num_samples: int,
        bundles: Sequence[ShareBundle],
        *,
        noise: MemberNoise | None = None,
        rng: np.random.Generator | None = None,
    ) -> MaskedInput:
        """Step 3: open this member's boxes, check them, and mask the quantized update for U2.

        With ``noise`` (differential privacy in this mode) the update is first clipped and given this
        member's share of the group's Gaussian noise (:mod:`.noise`), drawn from ``rng`` (default: fresh
        OS entropy); a group whose quantizer would cut or round the noise off is refused before anything."""
        if not self._adverts:
            raise ProtocolViolation("deal shares (step 2) before masking")
        if self._dealers is not None:
            raise ProtocolViolation("this member already sent its masked input for the round; send it once")
        if noise is not None:
            noise.check_fits(self.context.quantizer, self.context.dimension)
        dealers: dict[str, ShareBundle] = {}
        for bundle in bundles:
            bundle.verify(self.context, self._adverts)
            if bundle.dealer.lower() in dealers:
                raise InvalidMessage(f"two share bundles from {bundle.dealer}")
            dealers[bundle.dealer.lower()] = bundle
        if self.address.lower() not in dealers:
            raise InvalidMessage("the bundles the server relayed leave out this member's own")
        if len(dealers) < self.context.threshold:
            raise TooManyDropouts(
                f"{len(dealers)} members dealt shares, fewer than the threshold {self.context.threshold}"
            )
        held: dict[str, tuple[Share, Share]] = {}
        for dealer, bundle in dealers.items():
            held[dealer] = self._open(bundle)
        flat = np.asarray(update, dtype=np.float32).ravel()
        if flat.shape != (self.context.dimension,):
            raise InvalidMessage(
                f"update has {flat.size} entries; this group aggregates {self.context.dimension}"
            )
        if noise is not None:
            flat = noise.apply(flat, rng if rng is not None else np.random.default_rng())
        vector = self.context.quantizer.encode(flat)
        # Masks accumulate in place: one pass over d words per mask, no temporary vectors.
        vector += expand_mask(self._self_seed, self.context.dimension, _SELF_LABEL)
        mine = self.context.index_of(self.address)
        for dealer in dealers:
            if dealer == self.address.lower():
                continue
            seed = agreement.pairwise_seed(
                self._shared("mask", self._adverts[dealer].mask_key), self.context.group_id
            )
            pair_mask = expand_mask(seed, self.context.dimension, _PAIR_LABEL)
            if mine < self.context.index_of(dealer):
                vector += pair_mask
            else:
                vector -= pair_mask
        self._held = held
        self._dealers = frozenset(dealers)
        peers = frozenset(b.dealer for b in dealers.values())
        message: dict[str, Any] = {
            **self.context._base(),
            "payloadHash": payload_hash(vector),
            "numSamples": num_samples,
            "peersHash": members_hash(peers),
        }
        signature = sign(self._wallet_key, self.context.domain, "SecAggMasked", message)
        return MaskedInput(self.address, message["payloadHash"], num_samples, peers, signature, vector)

    def unmask(self, survivors_inputs: Sequence[MaskedInput]) -> UnmaskReveal:
        """Step 4: shown the survivors' signed inputs, reveal seed shares for them and key shares for the rest.

        Answers once: asked again with another survivor set it raises :class:`ProtocolViolation`, since
        two answers could reveal both secrets of one member."""
        if self._dealers is None:
            raise ProtocolViolation("send the masked input (step 3) before unmasking")
        survivors = frozenset(m.member.lower() for m in survivors_inputs)
        if len(survivors) != len(survivors_inputs):
            raise InvalidMessage("the survivor list names a member twice")
        if self._survivors is not None and survivors != self._survivors:
            raise ProtocolViolation(
                "the server asked for unmasking twice with different survivors; refusing (it would reveal "
                "both secrets of a member)"
            )
        for masked in survivors_inputs:
            masked.verify(self.context, self._dealers)
        if self.address.lower() not in survivors:
            raise InvalidMessage("the survivor list leaves out this member, which sent its masked input")
        if len(survivors) < self.context.threshold:
            raise TooManyDropouts(
                f"{len(survivors)} masked inputs arrived, fewer than the threshold {self.context.threshold}: "
                "unmasking would expose the survivors' sum to too few members; the group fails"
            )
        self._survivors = survivors
        seed_shares = {self.context.member(m): self._held[m][0] for m in survivors}
        key_shares = {self.context.member(m): self._held[m][1] for m in self._dealers - survivors}
        peers = frozenset(self.context.member(m) for m in survivors)
        unsigned = UnmaskReveal(self.address, peers, seed_shares, key_shares, "")
        signature = sign(
            self._wallet_key, self.context.domain, "SecAggUnmask", unsigned.message(self.context)
        )
        return UnmaskReveal(self.address, peers, seed_shares, key_shares, signature)

    def _shared(self, purpose: str, peer_public: bytes) -> bytes:
        key = (purpose, peer_public)
        if key not in self._exchanges:
            private = self._channel if purpose == "channel" else self._mask
            self._exchanges[key] = agreement.exchange(private, peer_public)
        return self._exchanges[key]

    def _box_context(self, dealer: str, holder: str) -> bytes:
        return _sha(
            b"fedledger/secagg/box/v1",
            self.context.group_id,
            _address_bytes(dealer),
            _address_bytes(holder),
        )

    def _open(self, bundle: ShareBundle) -> tuple[Share, Share]:
        box = bundle.box_for(self.address)
        plain = agreement.open_share(
            self._shared("channel", self._adverts[bundle.dealer.lower()].channel_key),
            box.sealed,
            self._box_context(bundle.dealer, self.address),
        )
        if len(plain) != 65:
            raise ForgedShare(f"{bundle.dealer}'s box for this member holds {len(plain)} bytes, not 65")
        seed_share = Share(plain[0], plain[1:33])
        key_share = Share(plain[0], plain[33:65])
        if seed_share.index != self.context.index_of(self.address):
            raise ForgedShare(f"{bundle.dealer} dealt this member a share at another member's position")
        if (
            share_commitment(self.context, bundle.dealer, self.address, SEED, seed_share)
            != box.seed_commitment
        ):
            raise ForgedShare(f"{bundle.dealer}'s seed share does not match its signed commitment")
        if share_commitment(self.context, bundle.dealer, self.address, KEY, key_share) != box.key_commitment:
            raise ForgedShare(f"{bundle.dealer}'s mask-key share does not match its signed commitment")
        return seed_share, key_share


def _split_at(secret: bytes, threshold: int, indices: Sequence[int]) -> list[Share]:
    """Shares of ``secret`` at the given 1-based indices (a polynomial over all positions, kept where asked)."""
    shares = split_secret(secret, threshold, max(indices))
    return [shares[i - 1] for i in indices]


def _index_adverts(context: GroupContext, adverts: Iterable[KeyAdvert]) -> dict[str, KeyAdvert]:
    by_member: dict[str, KeyAdvert] = {}
    for advert in adverts:
        advert.verify(context)
        key = advert.member.lower()
        if key in by_member:
            raise InvalidMessage(f"two key adverts from {advert.member}")
        by_member[key] = advert
    return by_member


# --- the server -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSum:
    """What the server learns of a group: the survivors, their sample claims, and their updates' sum."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    num_samples: Mapping[str, int]
    ring_sum: np.ndarray = field(repr=False)
    total: np.ndarray = field(repr=False)
    max_error: float

    @property
    def mean(self) -> np.ndarray:
        """The survivors' unweighted mean update (float32)."""
        return (self.total / len(self.survivors)).astype(np.float32)


class GroupTranscript:
    """The server's record of one group: every message checked on arrival, then :meth:`unmask`.

    It stores only what the members send it (signed public keys, sealed share boxes, masked vectors and
    the shares revealed at step 4), which is all :meth:`unmask` needs and, by the protocol, not enough to
    unmask any single member."""

    def __init__(self, context: GroupContext) -> None:
        self.context = context
        self.adverts: dict[str, KeyAdvert] = {}
        self.bundles: dict[str, ShareBundle] = {}
        self.masked: dict[str, MaskedInput] = {}
        self.reveals: dict[str, UnmaskReveal] = {}

    def add_advert(self, advert: KeyAdvert) -> None:
        """Record a step-1 message (before any shares were dealt)."""
        if self.bundles:
            raise ProtocolViolation("the key step is over for this group: shares are being dealt")
        advert.verify(self.context)
        _record(self.adverts, advert.member, advert)

    def add_bundle(self, bundle: ShareBundle) -> None:
        """Record a step-2 message (before any masked input)."""
        if self.masked:
            raise ProtocolViolation("the share step is over for this group: masked inputs are arriving")
        bundle.verify(self.context, self.adverts)
        _record(self.bundles, bundle.dealer, bundle)

    def add_masked(self, masked: MaskedInput) -> None:
        """Record a step-3 message (before any reveal)."""
        if self.reveals:
            raise ProtocolViolation("the masking step is over for this group: unmasking has begun")
        if masked.vector is None:
            raise InvalidMessage(f"{masked.member}'s masked input carries no vector")
        masked.verify(self.context, frozenset(self.bundles))
        _record(self.masked, masked.member, masked)

    def add_reveal(self, reveal: UnmaskReveal) -> None:
        """Record a step-4 message after checking every share against its dealer's commitment."""
        self.context.index_of(reveal.member)
        survivors = frozenset(self.masked)
        if reveal.member.lower() not in survivors:
            raise InvalidMessage(f"{reveal.member} sent no masked input; only survivors unmask")
        if frozenset(s.lower() for s in reveal.survivors) != survivors:
            raise InvalidMessage(f"{reveal.member} was shown another survivor set than the one on record")
        check_signer(
            reveal.signature, reveal.member, self.context.domain, "SecAggUnmask", reveal.message(self.context)
        )
        dropped = frozenset(self.bundles) - survivors
        if {o.lower() for o in reveal.seed_shares} != survivors or {
            o.lower() for o in reveal.key_shares
        } != dropped:
            raise InvalidMessage(
                f"{reveal.member} must reveal a seed share for each survivor and a key share for each "
                "dropped member, nothing else"
            )
        for kind, shares in ((SEED, reveal.seed_shares), (KEY, reveal.key_shares)):
            for owner, share in shares.items():
                box = self.bundles[owner.lower()].box_for(reveal.member)
                expected = box.seed_commitment if kind == SEED else box.key_commitment
                if (
                    share_commitment(
                        self.context,
                        self.context.member(owner),
                        self.context.member(reveal.member),
                        kind,
                        share,
                    )
                    != expected
                ):
                    raise ForgedShare(
                        f"{reveal.member}'s {kind} share of {owner} does not match {owner}'s signed "
                        "commitment; the reveal is refused"
                    )
        _record(self.reveals, reveal.member, reveal)

    def unmask(self) -> GroupSum:
        """The survivors' sum: every self mask and every dropped member's pairwise masks removed.

        :class:`TooManyDropouts` when fewer than ``threshold`` members are left at any step."""
        t = self.context.threshold
        for step, count in (
            ("dealt shares", len(self.bundles)),
            ("sent masked inputs", len(self.masked)),
            ("revealed shares", len(self.reveals)),
        ):
            if count < t:
                raise TooManyDropouts(
                    f"only {count} members {step}, fewer than the threshold {t}: this group's sum cannot be "
                    "unmasked; its members' updates are left out of the round"
                )
        survivors = sorted(self.masked, key=self.context.index_of)
        dropped = sorted(frozenset(self.bundles) - frozenset(survivors), key=self.context.index_of)
        d = self.context.dimension
        total = np.zeros(d, dtype=np.uint32)
        for member in survivors:
            vector = self.masked[member].vector
            if vector is None:
                raise InvalidMessage(f"{member}'s masked vector is missing from the transcript")
            total += vector
            seed = combine_shares(
                [r.seed_shares[self.context.member(member)] for r in self._reveals_for(member, SEED)], t
            )
            if (
                seed_commitment(self.context, self.context.member(member), seed)
                != self.bundles[member].self_seed_commitment
            ):
                raise ForgedShare(f"{member}'s rebuilt self seed does not match its commitment")
            total -= expand_mask(seed, d, _SELF_LABEL)
        for gone in dropped:
            raw = combine_shares(
                [r.key_shares[self.context.member(gone)] for r in self._reveals_for(gone, KEY)], t
            )
            key = agreement.private_key_from(raw)
            if agreement.public_bytes(key) != self.adverts[gone].mask_key:
                raise ForgedShare(f"{gone}'s rebuilt mask key does not match its advertised public key")
            position = self.context.index_of(gone)
            for member in survivors:
                seed = agreement.pairwise_seed(
                    agreement.exchange(key, self.adverts[member].mask_key), self.context.group_id
                )
                pair_mask = expand_mask(seed, d, _PAIR_LABEL)
                # The survivor added +mask when it sorts before the dropped member, -mask otherwise.
                if self.context.index_of(member) < position:
                    total -= pair_mask
                else:
                    total += pair_mask
        q = self.context.quantizer
        return GroupSum(
            survivors=tuple(self.context.member(m) for m in survivors),
            dropped=tuple(m for m in self.context.members if m.lower() not in self.masked),
            num_samples={self.context.member(m): self.masked[m].num_samples for m in survivors},
            ring_sum=total,
            total=q.decode_sum(total),
            max_error=q.sum_error(len(survivors)),
        )

    def _reveals_for(self, owner: str, kind: str) -> list[UnmaskReveal]:
        member = self.context.member(owner)
        return [
            r for r in self.reveals.values() if member in (r.seed_shares if kind == SEED else r.key_shares)
        ]


class _Signed(Protocol):
    @property
    def signature(self) -> str: ...


_M = TypeVar("_M", bound=_Signed)


def _record(store: dict[str, _M], sender: str, message: _M) -> None:
    # Idempotent: the same message again is fine (a retried request), a different one is not. Wallet
    # signatures are deterministic (RFC 6979), so equal signatures mean equal signed content.
    key = sender.lower()
    if key in store and store[key].signature != message.signature:
        raise InvalidMessage(
            f"{sender} already sent a different message for this step; each step is sent once"
        )
    store[key] = message
