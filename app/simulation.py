"""A many-organization simulation through the real API, workers and chain (``fedledger simulate``).

Each simulated organization is a dev wallet (Hardhat accounts #3.., funded on the dev chain) with its own
partition of the digits training split (IID or Dirichlet non-IID), driving the same SDK a real
organization uses. Byzantine organizations train honestly and then corrupt what they send.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from scipy.stats import norm

from client.data import Dataset, load_digits_dataset, partition_dirichlet, partition_iid
from client.errors import ConflictError
from client.sdk import Organization
from client.wallet import Wallet
from fedledger.api.client import FedLedgerApi
from fedledger.config import get_settings
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from fedledger.models import init_softmax
from fedledger.payload import encode_weights

ATTACKS = ("scaling", "signflip", "noise", "labelflip", "alie")


class SimulationError(RuntimeError):
    pass


@dataclass
class RoundReport:
    round_id: int
    status: str
    strategy: str
    accuracy: float | None
    loss: float | None
    kept: list[str]
    excluded: list[str]
    rewards_wei: dict[str, str]
    slashed: list[str]
    seconds: float


@dataclass
class SimulationReport:
    organizations: list[dict[str, Any]]
    rounds: list[RoundReport] = field(default_factory=list)
    claimed_wei: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "organizations": self.organizations,
                "rounds": [r.__dict__ for r in self.rounds],
                "claimed_wei": self.claimed_wei,
            },
            indent=2,
        )


class _RoundProgress:
    """One tqdm bar per round on a terminal: a step per organization trained and submitted, then the close
    (its postfix counts the seconds waited). Off, or on a non-terminal stderr, it draws nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._waited = 0.0

    def start(self, description: str, total: int) -> None:
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, leave=False, disable=None, unit="step")
            self._waited = 0.0

    def step(self, what: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(what)
            self._bar.update(1)

    def waited(self, seconds: float) -> None:
        if self._bar is not None:
            self._waited += seconds
            self._bar.set_postfix_str(f"closing, {self._waited:.0f} s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _alie_z(n: int, f: int) -> float:
    # Baruch et al. 2019: the largest z for which enough honest clients sit on the attackers' side.
    s = n // 2 + 1 - f
    return float(norm.ppf((n - s) / n))


def corrupt(
    attack: str,
    delta: dict[str, np.ndarray],
    honest: list[dict[str, np.ndarray]],
    rng: np.random.Generator,
    n: int,
    f: int,
) -> dict[str, np.ndarray]:
    if attack == "scaling":
        return {k: v * 100 for k, v in delta.items()}
    if attack == "signflip":
        return {k: -4 * v for k, v in delta.items()}
    if attack == "noise":
        return {
            k: (rng.standard_normal(v.shape) * 10 * (np.sqrt(np.mean(v**2)) + 1e-8)).astype(np.float32)
            for k, v in delta.items()
        }
    if attack == "alie":
        z = _alie_z(n, f)
        return {
            k: (np.mean([h[k] for h in honest], axis=0) - z * np.std([h[k] for h in honest], axis=0)).astype(
                np.float32
            )
            for k in delta
        }
    return delta  # labelflip corrupts the data, not the delta


def simulate(
    api_url: str,
    rpc_url: str,
    *,
    orgs: int = 8,
    byzantine: int = 2,
    attack: str = "scaling",
    rounds: int = 5,
    partition: str = "iid",
    operator_key: str | None = None,
    round_seconds: int = 120,
    seed: int = 0,
    log: Callable[[str], None] = print,
    report_path: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
    model_signer: str | None = None,
    leave_unclaimed: set[str] | frozenset[str] = frozenset(),
    progress: bool = False,
) -> SimulationReport:
    """Run ``rounds`` rounds; ``sleep`` is what waiting calls (``fedledger run`` checks its processes there).

    ``model_signer`` is the address the server signs models with (default: the one the settings' model-signer
    key gives, the dev account only on the dev chain). The organizations in ``leave_unclaimed`` keep their
    rewards to claim themselves (the wallet ``fedledger run`` prints). ``progress`` draws a progress bar per
    round on a terminal (training, submissions, then the wait for the worker's close).
    """
    if attack not in ATTACKS:
        raise SimulationError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    if not 0 <= byzantine < orgs or FIRST_ORGANIZATION_INDEX + orgs > 20:
        raise SimulationError(f"need 0 <= byzantine < orgs <= {20 - FIRST_ORGANIZATION_INDEX} (dev accounts)")
    rng = np.random.default_rng(seed)
    operator = FedLedgerApi(api_url, wallet=Wallet(operator_key or dev_private_key(0)))
    operator.login()
    # A genesis softmax model for the digits task, unless the platform already has one (409).
    with contextlib.suppress(ConflictError):
        operator.upload_genesis(encode_weights(init_softmax(64, 10)))
    train = load_digits_dataset("train")
    parts = (
        partition_iid(train, orgs, seed)
        if partition == "iid"
        else partition_dirichlet(train, orgs, 0.5, seed)
    )
    signer = model_signer or Account.from_key(get_settings().resolved_model_signer_key).address
    bar = _RoundProgress(enabled=progress)

    def waiting(seconds: float) -> None:
        sleep(seconds)
        bar.waited(seconds)

    members: list[tuple[Organization, Dataset, bool]] = []
    for i in range(orgs):
        wallet = Wallet(dev_private_key(FIRST_ORGANIZATION_INDEX + i))
        bad = i >= orgs - byzantine
        org = Organization(
            wallet,
            api_url,
            rpc_url=rpc_url,
            trusted_model_signer=signer,
            org_name=f"sim-org-{i}{' (byzantine)' if bad else ''}",
            poll_interval=0.5,
            sleep=waiting,
        )
        org.setup()
        data = parts[i]
        if bad and attack == "labelflip":
            data = Dataset(data.x, (9 - data.y).astype(np.int64), data.feature_names)
        members.append((org, data, bad))
    report = SimulationReport(
        [{"address": o.address, "byzantine": bad, "samples": len(d)} for o, d, bad in members]
    )
    log(f"{orgs} organizations ({byzantine} Byzantine, attack {attack}, {partition}) enrolled")
    for number in range(1, rounds + 1):
        started = time.monotonic()
        eligible = []
        for org, data, bad in members:
            me = org.api.me()
            if me.may_submit:
                eligible.append((org, data, bad))
            else:
                log(f"  {org.address} sits this round out: {me.reason}")
        if not eligible:
            raise SimulationError("no organization may submit any more")
        # Quorum = everyone still eligible: the round closes as soon as the last active organization submits
        # (an early close needs every active one), and never with fewer than all of them.
        round_ = operator.open_round(round_seconds, len(eligible))
        honest_deltas: list[dict[str, np.ndarray]] = []
        pending: list[tuple[Organization, Any]] = []
        bar.start(f"round {number}/{rounds} (id {round_.id})", 2 * len(eligible) + 1)
        for org, data, bad in eligible:
            bar.step("training")
            model = org.pull_model(round_.model_version)
            training = org.train(model, data, seed=int(rng.integers(2**31)))
            delta = training.delta
            if bad:
                delta = corrupt(attack, dict(delta), honest_deltas, rng, orgs, byzantine)
            else:
                honest_deltas.append(dict(delta))
            pending.append(
                (
                    org,
                    org.prepare_update(round_.id, round_.model_version, delta, training.num_samples),
                )
            )
        for org, prepared in pending:
            bar.step("submitting")
            org.submit(prepared)
        bar.step("the worker aggregates, scores and posts on-chain")
        final = members[0][0].wait_for_round(round_.id, timeout=round_seconds + 300)
        bar.close()
        stats = next(s for s in operator.round_history() if s.id == round_.id)
        contributions = operator.contributions(round_id=round_.id)
        aggregation = stats.aggregation
        tx_hashes = aggregation.tx_hashes if aggregation else {}
        slashed = [k.split(":", 1)[1] for k in tx_hashes if k.startswith("slash:")]
        entry = RoundReport(
            round_id=round_.id,
            status=final.status,
            strategy=stats.strategy,
            accuracy=aggregation.holdout_accuracy if aggregation else None,
            loss=aggregation.holdout_loss_after if aggregation else None,
            kept=[c.participant for c in contributions if c.kept],
            excluded=[c.participant for c in contributions if not c.kept],
            rewards_wei={c.participant: c.reward_wei for c in contributions},
            slashed=slashed,
            seconds=time.monotonic() - started,
        )
        report.rounds.append(entry)
        accuracy = f"{entry.accuracy:.3f}" if entry.accuracy is not None else "n/a"
        log(
            f"round {entry.round_id}: {entry.status}, {entry.strategy}, holdout accuracy {accuracy}, kept {len(entry.kept)}, "
            f"excluded {len(entry.excluded)}, slashed {len(entry.slashed)}, {entry.seconds:.1f} s"
        )
    for org, _, _ in members:
        if org.address in leave_unclaimed:
            continue
        for result in org.claim_rewards():
            if result.status == "claimed":
                report.claimed_wei[org.address] = str(
                    int(report.claimed_wei.get(org.address, "0")) + result.amount_wei
                )
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(report.to_json())
    return report
