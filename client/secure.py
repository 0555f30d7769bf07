"""Taking part in a secure-aggregation round (issue 24): the protocol's four steps behind one call.

The server never sees this organization's update: it is quantized and masked (fedledger.secagg) inside a
group drawn from a block hash. :class:`SecureRound` holds the group member's secrets (its X25519 keys, its
self-mask seed and the shares it holds for its group-mates) in memory only, never on disk or in a log, and
does at each :meth:`SecureRound.step` what the round's phase asks of it: join, advertise keys, deal shares,
send the masked update, reveal shares for unmasking. :func:`run_secure` polls between steps until the
protocol is over for this member, so a caller sees one call (``Organization.participate``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedledger.api.client import FedLedgerApi
from fedledger.api.schemas import SecAggAcceptedOut, SecAggOut
from fedledger.secagg import wire
from fedledger.secagg.errors import SecAggError
from fedledger.secagg.messages import Domain, sign
from fedledger.secagg.noise import MemberNoise, noise_for_round
from fedledger.secagg.protocol import GroupContext, GroupMember, MaskedInput


class SecureRoundError(RuntimeError):
    """The protocol cannot go on for this member (left out of every group, the join phase missed, a
    message from the server that does not check); the message says why."""


@dataclass
class SecureRound:
    """One organization's side of one secure round, driven by the server's phase (see the module)."""

    api: FedLedgerApi
    round_id: int
    address: str
    wallet_key: str = field(repr=False)
    update: np.ndarray = field(repr=False)  # float32, in the model's coordinate order
    num_samples: int
    member: GroupMember | None = field(default=None, repr=False)
    receipt: SecAggAcceptedOut | None = None
    masked: MaskedInput | None = field(default=None, repr=False)  # what was sent at step 3 (masked)
    done: bool = False
    last: SecAggOut | None = None

    def step(self) -> bool:
        """Do what the round's current phase asks of this member, if anything; True once nothing is left
        (the reveal is sent, or the protocol ended). Each message is sent once per phase: the server takes
        the same message again as a no-op, so a retried request is harmless."""
        if self.done:
            return True
        view = self.api.secagg(self.round_id)
        self.last = view
        if view.mode != "secure":
            raise SecureRoundError(f"round {self.round_id} runs in the clear mode")
        phase = view.phase
        sent = set(view.sent)
        if phase == "join":
            if not view.joined:
                assert view.chain_id is not None and view.verifying_contract is not None
                domain = Domain(view.chain_id, view.verifying_contract)
                message = {"roundId": self.round_id, "modelVersion": view.model_version}
                self.api.secagg_join(self.round_id, sign(self.wallet_key, domain, "SecAggJoin", message))
            return False
        if not view.joined:
            raise SecureRoundError(
                f"round {self.round_id}'s join phase ended before this organization joined"
            )
        if view.group is None:
            if phase == "closed":
                self.done = True
                return True
            raise SecureRoundError(
                f"no group of round {self.round_id} took this organization (its reputation tier had fewer "
                f"members than one group of {view.group_size})"
            )
        member = self._member(view)
        try:
            if phase == "keys" and "keys" not in sent:
                self.api.secagg_send(self.round_id, "keys", wire.advert_json(member.advertise()))
            elif phase == "shares" and "shares" not in sent and "keys" in sent:
                adverts = [wire.advert_from(a) for a in view.adverts]
                self.api.secagg_send(self.round_id, "shares", wire.bundle_json(member.deal(adverts)))
            elif phase == "masked" and "masked" not in sent and "shares" in sent:
                bundles = [wire.bundle_from(b) for b in view.bundles]
                masked = member.mask(self.update, self.num_samples, bundles, noise=self._noise(view))
                assert masked.vector is not None
                self.masked = masked
                body = {
                    "masked": wire.masked_json(masked),
                    "vector": base64.b64encode(wire.vector_bytes(masked.vector)).decode(),
                }
                self.receipt = self.api.secagg_send(self.round_id, "masked", body)
            elif phase == "unmask" and "unmask" not in sent and "masked" in sent:
                headers = [wire.masked_from(m) for m in view.masked]
                self.api.secagg_send(self.round_id, "unmask", wire.reveal_json(member.unmask(headers)))
                self.done = True
            elif phase == "closed" or (phase != "keys" and "keys" not in sent):
                # The protocol ended, or went on without this member: nothing more it can send.
                self.done = True
        except SecAggError as exc:
            raise SecureRoundError(f"round {self.round_id}: {type(exc).__name__}: {exc}") from exc
        return self.done

    def _noise(self, view: SecAggOut) -> MemberNoise | None:
        """This member's share of the round's DP noise (None with DP off), from the round's parameter
        snapshot through the function the server charges with (fedledger.secagg.noise.noise_for_round)."""
        assert view.group is not None
        params = self.api.round(self.round_id).params
        try:
            return noise_for_round(params, len(view.group.members), view.group.threshold)
        except ValueError as exc:
            raise SecureRoundError(f"round {self.round_id}: its DP settings are unusable: {exc}") from exc

    def _member(self, view: SecAggOut) -> GroupMember:
        if self.member is None:
            assert view.group is not None and view.seed is not None
            assert view.chain_id is not None and view.verifying_contract is not None
            assert view.dimension is not None and view.clip is not None
            context = GroupContext(
                Domain(view.chain_id, view.verifying_contract),
                self.round_id,
                bytes.fromhex(view.seed[2:]),
                tuple(view.group.members),
                view.group.threshold,
                view.dimension,
                view.clip,
            )
            if "0x" + context.group_id.hex() != view.group.group_id:
                raise SecureRoundError("the server's group id does not match the group it lists; refusing")
            self.member = GroupMember(context, address=self.address, wallet_key=self.wallet_key)
        return self.member


def run_secure(
    secure: SecureRound,
    *,
    timeout: float,
    poll_interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> SecureRound:
    """Step until this member's part is done, polling the phase in between; :class:`TimeoutError` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not secure.step():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"round {secure.round_id}'s secure aggregation was still in its "
                f"{secure.last.phase if secure.last else '?'} phase after {timeout:.0f} s"
            )
        sleep(poll_interval)
    return secure
