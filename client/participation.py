"""Taking part in rounds: one full contribution (verify, train, seal, sign, submit), and the loop that
contributes to every round and claims the rewards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from client.chain import chain_errors
from client.data import Dataset, check_input_contract
from client.errors import (
    ApiUnreachableError,
    AuthenticationError,
    ChainError,
    ConflictError,
    InvalidRequestError,
    NoOpenRoundError,
    NotFoundError,
    RateLimitedError,
    RoundClosedError,
    ServerError,
)
from client.local_update import LocalTraining, builtin_trainer, train_update
from client.membership import Membership
from client.models import ModelVerifier, VerifiedModel
from client.rewards import RewardClaims
from client.rounds import open_round, wait_for_round
from client.sealing import PreparedUpdate, UpdateSealer
from client.secure import SecureRound, SecureRoundError, run_secure
from client.spool import Spool, round_scope
from client.training import EpochCallback, LocalDP, TrainFn
from fedledger.api.client import FedLedgerApi, ProgressCallback
from fedledger.api.schemas import ReceiptOut, RoundOut
from fedledger.crypto.chunked import coordinate_order
from fedledger.payload import flatten
from fedledger.secagg import wire

EventCallback = Callable[[str, dict[str, Any]], None]

# Refusals that mean the server never held the envelope (sealed to a key it does not have, signed for
# another deployment): a spooled envelope refused so is stale, not this round's.
_NOT_THIS_SERVERS = frozenset(
    {"unknown_key", "retired_key", "undecryptable", "bad_signature", "wrong_model_version", "shape_mismatch"}
)


@dataclass(frozen=True)
class Submission:
    """One contribution: the receipt, what was sent, how it was trained, and how long each step took."""

    round_id: int
    receipt: ReceiptOut
    prepared: PreparedUpdate
    training: LocalTraining | None  # None when a spooled envelope was resent
    timings: dict[str, float]
    final_round: RoundOut | None = None
    # This organization's scored contribution once the round was aggregated: kept or not, and why not.
    contribution: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (what the CLI prints with --json)."""
        out: dict[str, Any] = {
            "round_id": self.round_id,
            "receipt_id": self.receipt.receipt_id,
            "replayed": self.receipt.replayed,
            "payload_hash": self.prepared.payload_hash,
            "model_version": self.prepared.model_version,
            "num_samples": self.prepared.num_samples,
            "envelope_bytes": self.prepared.size,
            "plaintext_bytes": self.prepared.plaintext_bytes,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.training is not None:
            out["delta_norm"] = self.training.delta_norm
            out["metrics_before"] = self.training.before.as_dict() if self.training.before else None
            out["metrics_after"] = self.training.after.as_dict() if self.training.after else None
            out["dp"] = asdict(self.training.dp) if self.training.dp else None
        if self.final_round is not None:
            out["round_status"] = self.final_round.status
        if self.contribution is not None:
            out["kept"] = self.contribution.get("kept")
            out["excluded_reason"] = self.contribution.get("excluded_reason")
            out["evidence"] = self.contribution.get("evidence") or []
            out["fitness"] = self.contribution.get("fitness")
            out["reward_wei"] = self.contribution.get("reward_wei")
        return out


class Participation:
    """Contributions of one organization, from its parts: membership, models, sealing, spool, rewards."""

    def __init__(
        self,
        api: FedLedgerApi,
        membership: Membership,
        models: ModelVerifier,
        sealer: UpdateSealer,
        spool: Spool,
        claims: RewardClaims,
        *,
        dp: LocalDP | None = None,
        trainer_options: dict[str, Any] | None = None,
        poll_interval: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.membership = membership
        self.models = models
        self.sealer = sealer
        self.spool = spool
        self.claims = claims
        self.dp = dp
        self.trainer_options = dict(trainer_options or {})
        self.poll_interval = poll_interval
        self._sleep = sleep
        # Rounds this instance has a receipt for (the spool remembers them across restarts).
        self.submitted_rounds: set[int] = set()

    def train(
        self,
        model: VerifiedModel,
        data: Any,
        trainer: TrainFn | None = None,
        *,
        seed: int | np.random.Generator | None = None,
        num_samples: int | None = None,
        eval_data: Any = None,
        progress: EpochCallback | None = None,
    ) -> LocalTraining:
        """Train locally from the verified global weights (the built-in trainer for the model's spec unless
        ``trainer`` is given); returns the (optionally privatized) delta."""
        train_fn = (
            trainer if trainer is not None else builtin_trainer(model.spec, self.trainer_options, progress)
        )
        return train_update(
            model.weights, data, train_fn, dp=self.dp, seed=seed, num_samples=num_samples, eval_data=eval_data
        )

    def wait_for_round(
        self, round_id: int, *, timeout: float = 900.0, poll_interval: float | None = None
    ) -> RoundOut:
        """Poll the round until it is POSTED or FAILED (see :func:`client.rounds.wait_for_round`)."""
        interval = self.poll_interval if poll_interval is None else poll_interval
        return wait_for_round(self.api, round_id, timeout=timeout, poll_interval=interval, sleep=self._sleep)

    def participate(
        self,
        data: Any,
        *,
        trainer: TrainFn | None = None,
        seed: int | None = None,
        num_samples: int | None = None,
        eval_data: Any = None,
        wait: bool = False,
        timeout: float = 900.0,
        auto_enroll: bool = False,
        train_progress: EpochCallback | None = None,
        upload_progress: ProgressCallback | None = None,
    ) -> Submission:
        """One full contribution to the open round: verify the model, check the data against it, train,
        seal, sign, submit.

        A spooled envelope of this round (same deployment, same round opening) is resent instead of
        training again; success is only ever the server's receipt for the envelope sent now (resending
        accepted bytes returns the same receipt, ``replayed``), never a receipt read from disk.
        """
        timings: dict[str, float] = {}
        started = time.perf_counter()
        self.membership.check_may_submit(auto_enroll=auto_enroll)
        round_ = open_round(self.api)
        round_id, model_version = round_.id, round_.model_version
        mark = time.perf_counter()
        model = self.models.pull(model_version)
        timings["pull_and_verify"] = time.perf_counter() - mark
        train_fn = (
            trainer
            if trainer is not None
            else builtin_trainer(model.spec, self.trainer_options, train_progress)
        )
        # Before anything is sent, spooled or not: data the model cannot use must not reach the round.
        self.check_data(model, data, train_fn)
        if int(round_.params.get("secure_group_size") or 0) > 0:
            # Secure aggregation: the update is masked within a group, never sealed to the server.
            return self._participate_secure(
                round_,
                model,
                data,
                train_fn,
                seed=seed,
                num_samples=num_samples,
                eval_data=eval_data,
                wait=wait,
                timeout=timeout,
                timings=timings,
                started=started,
            )
        chain = self.sealer.chain
        with chain_errors("reading the deployment's block hashes"):
            identity = chain.deployments.identity(chain.w3)
        scope = round_scope(chain.deployments, round_, identity)
        prepared, _ = self.spool.load(round_id, scope)
        training: LocalTraining | None = None
        receipt: ReceiptOut | None = None
        mark = time.perf_counter()
        if prepared is not None:
            try:
                receipt = self.sealer.submit(prepared, progress=upload_progress)
            except (InvalidRequestError, AuthenticationError) as exc:
                # The server does not recognise the spooled envelope as one for this round (another key,
                # another deployment's signature): nothing of it was accepted, so train and seal afresh.
                if exc.code not in _NOT_THIS_SERVERS:
                    raise
                self.spool.discard(round_id, scope)
                prepared = None
        if prepared is None:
            training = self.train(
                model,
                data,
                train_fn,
                seed=seed,
                num_samples=num_samples,
                eval_data=eval_data,
            )
            timings["train"] = training.seconds
            mark = time.perf_counter()
            prepared = self.sealer.prepare(round_id, model_version, training.delta, training.num_samples)
            timings["seal_and_sign"] = time.perf_counter() - mark
            self.spool.save(prepared, scope)
            mark = time.perf_counter()
            try:
                receipt = self.sealer.submit(prepared, progress=upload_progress)
            except InvalidRequestError as exc:
                # The server rotated its key and retired the one this envelope was sealed to: nothing was
                # accepted, so sealing the same update again for the current key is safe.
                if exc.code not in ("unknown_key", "retired_key"):
                    raise
                prepared = self.sealer.prepare(round_id, model_version, training.delta, training.num_samples)
                self.spool.save(prepared, scope)
                receipt = self.sealer.submit(prepared, progress=upload_progress)
        assert receipt is not None
        timings["submit"] = time.perf_counter() - mark
        self.spool.save_receipt(prepared, receipt, scope)
        self.submitted_rounds.add(round_id)
        timings["total"] = time.perf_counter() - started
        final = self.wait_for_round(round_id, timeout=timeout) if wait else None
        contribution = None
        if final is not None:
            timings["wait"] = time.perf_counter() - started - timings["total"]
            contribution = self.contribution(round_id)
        return Submission(round_id, receipt, prepared, training, timings, final, contribution)

    def _participate_secure(
        self,
        round_: RoundOut,
        model: VerifiedModel,
        data: Any,
        train_fn: TrainFn,
        *,
        seed: int | None,
        num_samples: int | None,
        eval_data: Any,
        wait: bool,
        timeout: float,
        timings: dict[str, float],
        started: float,
    ) -> Submission:
        """One contribution to a secure-aggregation round: train, then the protocol's steps (client.secure),
        polling between them; the group member's secrets stay in memory and go when this returns."""
        training = self.train(model, data, train_fn, seed=seed, num_samples=num_samples, eval_data=eval_data)
        timings["train"] = training.seconds
        mark = time.perf_counter()
        wallet = self.sealer.wallet
        secure = SecureRound(
            self.api,
            round_.id,
            wallet.address,
            wallet.private_key,
            flatten(training.delta, coordinate_order(model.spec)),
            training.num_samples,
        )
        run_secure(secure, timeout=timeout, poll_interval=self.poll_interval, sleep=self._sleep)
        timings["secure_aggregation"] = time.perf_counter() - mark
        if secure.receipt is None or secure.masked is None or secure.masked.vector is None:
            raise RoundClosedError(
                409,
                "secure_round_missed",
                f"round {round_.id}'s secure aggregation ended before this organization's masked update was "
                f"taken (phase {secure.last.phase if secure.last else '?'})",
            )
        vector = bytes(wire.vector_bytes(secure.masked.vector))
        payload_hash = "0x" + secure.masked.payload_hash.hex()
        receipt = ReceiptOut(
            receipt_id=secure.receipt.receipt_id or "",
            round_id=round_.id,
            participant=wallet.address,
            payload_hash=payload_hash,
            num_samples=training.num_samples,
            received_at=datetime.now(UTC),
            replayed=secure.receipt.replayed,
        )
        prepared = PreparedUpdate(
            round_.id,
            round_.model_version,
            training.num_samples,
            vector,
            secure.masked.signature,
            payload_hash,
            "secagg",
            4 * secure.update.size,
        )
        self.submitted_rounds.add(round_.id)
        timings["total"] = time.perf_counter() - started
        final = self.wait_for_round(round_.id, timeout=timeout) if wait else None
        contribution = self.contribution(round_.id) if final is not None else None
        return Submission(round_.id, receipt, prepared, training, timings, final, contribution)

    def contribution(self, round_id: int) -> dict[str, Any] | None:
        """This organization's scored contribution to ``round_id`` (None before the round is aggregated)."""
        address = self.sealer.wallet.address
        rows = self.api.contributions(round_id=int(round_id), address=address)
        mine = [r.model_dump() for r in rows if r.participant.lower() == address.lower()]
        return mine[0] if mine else None

    @staticmethod
    def check_data(model: VerifiedModel, data: Any, train_fn: TrainFn) -> None:
        """``data`` fits the model: its input contract (from the server's model metadata) and, for the
        built-in trainers, the tensor shapes; else :class:`~client.errors.DataError` /
        :class:`~client.errors.TrainingError` saying what is wrong."""
        contract = model.metadata.input_contract
        if isinstance(contract, dict) and isinstance(data, Dataset):
            check_input_contract(data, contract)
        check = getattr(train_fn, "check_data", None)
        if callable(check):
            check(data)

    def run(
        self,
        data: Any,
        *,
        trainer: TrainFn | None = None,
        max_rounds: int | None = None,
        stop: threading.Event | None = None,
        claim: bool = True,
        auto_enroll: bool = False,
        seed: int | None = None,
        on_event: EventCallback | None = None,
        train_progress: EpochCallback | None = None,
        upload_progress: ProgressCallback | None = None,
    ) -> list[Submission]:
        """Take part in every round until ``stop`` is set (or ``max_rounds`` submissions were made).

        Expected failures of one round (closed, already submitted, unreachable API) are reported through
        ``on_event`` and the loop goes on; configuration problems and failed model verification stop it.
        An organization suspended for inactivity (anyone may suspend it once its on-chain activity evidence is
        older than the timeout) resumes itself on-chain before the round (event ``resumed``) and goes on.
        """
        stop = stop or threading.Event()
        emit = on_event or (lambda kind, payload: None)
        done: set[int] = set(self.submitted_rounds)
        submissions: list[Submission] = []
        claimed_after: set[int] = set()
        cancelled: set[int] = set()
        failures = 0
        while not stop.is_set():
            try:
                round_ = self.api.current_round()
                round_id = round_.id
                status = round_.status.upper()
                if status == "OPEN" and round_id not in done:
                    emit("round_open", {"round_id": round_id, "deadline": round_.deadline.isoformat()})
                    resumed = self.membership.resume_if_suspended()
                    if resumed is not None:
                        emit("resumed", {"round_id": round_id, "tx_hash": resumed})
                    try:
                        submission = self.participate(
                            data,
                            trainer=trainer,
                            auto_enroll=auto_enroll,
                            seed=None if seed is None else seed + round_id,
                            train_progress=train_progress,
                            upload_progress=upload_progress,
                        )
                    except (RoundClosedError, NoOpenRoundError, SecureRoundError) as exc:
                        emit("round_missed", {"round_id": round_id, "reason": str(exc)})
                    except ConflictError as exc:
                        emit("already_submitted", {"round_id": round_id, "reason": str(exc)})
                    else:
                        submissions.append(submission)
                        emit("submitted", submission.summary())
                    done.add(round_id)
                    if max_rounds is not None and len(submissions) >= max_rounds:
                        return submissions
                elif status == "POSTED" and claim and round_id in done and round_id not in claimed_after:
                    claimed_after.add(round_id)
                    try:
                        for result in self.claims.claim_all():
                            if result.status == "claimed":
                                emit("claimed", asdict(result))
                            elif result.status == "not_claimable_yet":
                                # Claimed by a later pass (after the next posted round), or `claim`.
                                emit("claim_pending", asdict(result))
                            elif result.status == "cancelled" and result.round_id not in cancelled:
                                cancelled.add(result.round_id)  # never claimable: said once
                                emit("claim_cancelled", asdict(result))
                    except (NotFoundError, ChainError) as exc:
                        emit("claim_failed", {"round_id": round_id, "reason": str(exc)})
                failures = 0
            except NotFoundError:
                pass  # no round yet
            except (ApiUnreachableError, ServerError, RateLimitedError) as exc:
                failures += 1
                emit("api_unavailable", {"reason": str(exc), "consecutive": failures})
            stop.wait(min(self.poll_interval * (2 ** min(failures, 5)), 300.0))
        return submissions
