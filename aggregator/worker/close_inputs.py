"""What a close reads before it decrypts anything, shared by the clear close and the secure one.

Apart from :mod:`aggregator.worker.close` so that :mod:`aggregator.worker.secure_close`, which the close
calls for a secure round, does not import the module that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.round.compute import ClientMeta, RoundInputs
from aggregator.round.params import RoundParams
from aggregator.scoring.budget import ScoreBudget
from db.models import ModelVersion, Participant, Round, Update
from fedledger.crypto.chunked import coordinate_order
from fedledger.payload import flatten


@dataclass
class Inputs:
    """What ``load`` reads (detached ORM rows), before decryption."""

    round: Round
    updates: list[Update]
    participants: dict[int, Participant]
    weights: dict[str, np.ndarray]
    model: ModelVersion
    private_keys: dict[str, bytes]
    dp_rounds_spent: int
    # The model's parent's weights (None for the first version): the last public change is their difference.
    parent_weights: dict[str, np.ndarray] | None = None
    # The per-row scores' budget of the worker that loaded the round (its settings' FEDLEDGER_SCORE_EXAMPLES
    # and FEDLEDGER_SCORE_WORK_FLOOR); None: the module's defaults. Carried with the round, not set on the
    # process, so that every close of it (single, sharded, secure) and a test comparing them judge alike.
    score_budget: ScoreBudget | None = None
    # The participant whose update alone was kept in the round that made the model (None: several, none,
    # or the first model): its next update may repeat that change (RoundInputs.public_change_author).
    public_change_author: int | None = None
    # Rounds in a row that kept neither the rule's aggregate nor the server's step (RoundInputs.stalled_rounds).
    stalled_rounds: int = 0

    @property
    def spec(self) -> dict[str, tuple[int, ...]]:
        """The model's tensors in the order the close lays out coordinates: by name, as chunked envelopes do
        (fedledger.crypto.chunked.coordinate_order), whatever order the model version lists them in."""
        return coordinate_order(self.model.spec)

    def round_inputs(
        self,
        params: RoundParams,
        *,
        deltas: np.ndarray,
        holdout: tuple[np.ndarray, np.ndarray] | None,
        clients: tuple[ClientMeta, ...] = (),
        rejected: tuple[tuple[ClientMeta, str], ...] = (),
        reference: np.ndarray | None = None,
        public_change: np.ndarray | None = None,
    ) -> RoundInputs:
        """The pure computation's inputs: this round's identity, model and DP history as ``load`` read
        them, with what the caller's close decrypted, unmasked or trained."""
        return RoundInputs(
            round_id=self.round.id,
            params=params,
            opened_at=self.round.opened_at,
            deadline=self.round.deadline,
            extensions=self.round.extensions,
            clients=clients,
            deltas=deltas,
            rejected=rejected,
            weights=self.weights,
            spec=self.spec,
            holdout=holdout,
            dp_rounds_spent=self.dp_rounds_spent,
            reference=reference,
            public_change=public_change,
            public_change_author=self.public_change_author if public_change is not None else None,
            score_budget=self.score_budget,
            stalled_rounds=self.stalled_rounds,
        )


def public_change(inputs: Inputs) -> np.ndarray | None:
    """The active model minus its parent, flattened in the close's order: the last change anyone can
    read from the model versions (None for the first version or a parent of another shape)."""
    if inputs.parent_weights is None:
        return None
    spec = inputs.spec
    if set(inputs.parent_weights) != set(spec) or any(
        list(inputs.parent_weights[k].shape) != list(spec[k]) for k in spec
    ):
        return None
    change: np.ndarray = flatten(inputs.weights, spec) - flatten(inputs.parent_weights, spec)
    return change
