"""Membership: the organization's registration with the API, its stake on-chain, and whether it may submit.

The server decides who may submit from its own registration record and from the chain's registry (which
it caches for a while); this client asks, and when the answer is "not enrolled" although the chain says
active, it waits for the server's cache to catch up instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from client.chain import OrganizationChain
from client.errors import (
    ChainError,
    ConfigurationError,
    ConflictError,
    NotEnrolledError,
    NotFoundError,
    NotRegisteredError,
    ParticipantBlockedError,
    ServerError,
)
from fedledger.api.client import FedLedgerApi
from fedledger.api.schemas import ParticipantOut, ParticipantStatusOut


class Membership:
    """Sign-in, registration and enrollment of one organization, and its standing for submissions."""

    def __init__(
        self,
        api: FedLedgerApi,
        chain: OrganizationChain,
        *,
        org_name: str | None = None,
        poll_interval: float = 2.0,
        enrollment_sync_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.chain = chain
        self.org_name = org_name
        self.poll_interval = poll_interval
        self.enrollment_sync_timeout = enrollment_sync_timeout
        self._sleep = sleep

    @property
    def address(self) -> str:
        """The organization's wallet address."""
        return self.chain.wallet.address

    def default_org_name(self) -> str:
        """The configured name, else ``org-`` and the address's first eight hex digits."""
        return self.org_name or f"org-{self.address[2:10].lower()}"

    def register(self, org_name: str | None = None) -> ParticipantOut:
        """Register (or rename) the organization; idempotent."""
        return self.api.register(org_name or self.default_org_name())

    def ensure_registered(self, org_name: str | None = None) -> ParticipantStatusOut:
        """The participant record, registering first if there is none (an existing name is kept)."""
        try:
            return self.api.me()
        except NotRegisteredError:
            self.register(org_name)
            return self.api.me()

    def setup(
        self, org_name: str | None = None, stake_wei: int | None = None, *, enroll: bool = True
    ) -> ParticipantStatusOut:
        """Sign in, stake on-chain if needed, register; returns the participant record (``api.me()``).

        The stake comes first: the API may cache an enrollment read for a while, so asking it about this
        wallet before staking could leave it answering "not enrolled" for that while after the stake.
        """
        self.api.login()
        if enroll:
            self.chain.ensure_enrolled(stake_wei)
        me = self.ensure_registered(org_name)
        if enroll and me.chain_status in (None, "none"):
            me = self.wait_for_server_enrollment(me)
        return me

    def check_may_submit(
        self, *, auto_enroll: bool = False, stake_wei: int | None = None
    ) -> ParticipantStatusOut:
        """Registered and enrolled, or a typed error that says what to do (or enroll, with ``auto_enroll``)."""
        if auto_enroll:
            self.chain.ensure_enrolled(stake_wei)
        # Read on the chain, not through the API (which may cache an "active" read for a while).
        self.resume_if_suspended()
        me = self.ensure_registered()
        if me.may_submit:
            return me
        chain_status = me.chain_status
        if chain_status in (None, "none"):
            me = self.wait_for_server_enrollment(me)
            if me.may_submit:
                return me
            chain_status = me.chain_status
        reason = me.reason or "the server says this participant may not submit"
        if chain_status in (None, "none"):
            raise NotEnrolledError(
                403, "not_enrolled", f"{reason}; run `fedledger client enroll` (or auto_enroll=True)"
            )
        code = f"participant_{chain_status if chain_status != 'active' else me.status}"
        raise ParticipantBlockedError(403, code, reason)

    def resume_if_suspended(self) -> str | None:
        """Resume on-chain when suspended for inactivity (anyone may suspend an organization whose activity
        evidence is older than the timeout; only the organization can resume). Returns the transaction hash,
        or None when the organization was not suspended for inactivity."""
        return self.chain.resume_if_inactive()

    def wait_for_server_enrollment(self, me: ParticipantStatusOut) -> ParticipantStatusOut:
        """The API says "not enrolled": if the chain (read by this client) says active, the API's view is
        stale (it caches enrollment reads); poll it until it agrees, up to ``enrollment_sync_timeout``."""
        if not self.chain.status()["active"]:
            return me
        deadline = time.monotonic() + self.enrollment_sync_timeout
        while me.chain_status in (None, "none") and time.monotonic() < deadline:
            self._sleep(min(1.0, max(self.poll_interval, 0.05)))
            me = self.api.me()
        return me

    def status(self) -> dict[str, Any]:
        """Everything about this organization: registration, chain, current round and model. An unreachable
        chain is reported in ``chain.error`` rather than raised."""
        out: dict[str, Any] = {"address": self.address, "api": self.api.base_url}
        try:
            out["participant"] = self.api.me().model_dump(mode="json")
            out["registered"] = True
        except NotRegisteredError:
            out["participant"], out["registered"] = None, False
        try:
            out["chain"] = self.chain.status()
        except (ChainError, ConfigurationError, ServerError) as exc:
            out["chain"] = {"error": str(exc)}
        try:
            out["round"] = self.api.current_round().model_dump(mode="json")
        except NotFoundError:
            out["round"] = None
        # This organization's outcome in that round once aggregated: kept or excluded (and why), its pay.
        found = (
            self.api.contributions(round_id=int(out["round"]["id"]), address=self.address)
            if out["round"]
            else []
        )
        out["round_result"] = found[0].model_dump(mode="json") if found else None
        try:
            model = self.api.current_model()
            out["model"] = model.model_dump(
                mode="json", include={"version", "weights_hash", "produced_by_round", "status"}
            )
        except (ConflictError, NotFoundError):
            out["model"] = None
        return out
