"""Strategies anchored on something other than the crowd: FLTrust (the server's reference update) and
centered clipping (a centre, the coordinate median when the round has none)."""

from __future__ import annotations

from typing import Self

import numpy as np

from aggregator.centered_clip import bucketed_centered_clip, centered_clip
from aggregator.errors import InvalidParameter
from aggregator.fltrust import fltrust, fltrust_coefficients, trust_scores
from aggregator.round.params import RoundParams
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.registry import register
from aggregator.validation import as_update_matrix


@register
class FLTrust(Strategy):
    """Mean of the updates rescaled to the reference's norm, weighted by ReLU(cos to the reference)
    (Cao et al., NDSS 2021). Needs ``StrategyInputs.reference``."""

    name = "fltrust"

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """FLTrust has no governed parameter; its reference comes with the round's inputs."""
        return cls()

    def aggregate(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        """FLTrust aggregate; clients with positive trust are selected."""
        if inputs.reference is None:
            raise InvalidParameter(
                "fltrust needs the server's reference update (trained on its root data) in the round's "
                "inputs; none was given"
            )
        X = as_update_matrix(X)
        trust = trust_scores(X, inputs.reference)
        coefficients = fltrust_coefficients(X, inputs.reference)
        return Aggregated(fltrust(X, inputs.reference), np.flatnonzero(trust > 0), {}, coefficients)


@register
class CenteredClip(Strategy):
    """Centered clipping (Karimireddy et al., ICML 2021) of bucket means (ICLR 2022 bucketing).

    A bucket mixes ``bucket_size`` clients, so f Byzantine clients can spoil up to f buckets: with the
    governed Byzantine fraction b, b x bucket_size must stay below one half or the rule guarantees nothing,
    which is refused at construction.
    """

    name = "centered_clip"

    def __init__(
        self,
        tau: float = 0.0,
        iterations: int = 3,
        bucket_size: int = 1,
        byzantine_fraction: float | None = None,
    ) -> None:
        if not (np.isfinite(tau) and tau >= 0):
            raise InvalidParameter(f"centered_clip: tau must be >= 0 (0 = adaptive), got {tau!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise InvalidParameter(f"centered_clip: iterations must be an integer >= 1, got {iterations!r}")
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
            raise InvalidParameter(f"centered_clip: bucket_size must be an integer >= 1, got {bucket_size!r}")
        if byzantine_fraction is not None and byzantine_fraction * bucket_size >= 0.5:
            raise InvalidParameter(
                f"centered_clip: byzantine_fraction {byzantine_fraction} x bucket_size {bucket_size} must be "
                "below 0.5 (more spoiled buckets than clean ones otherwise); lower one of them through governance"
            )
        self.tau, self.iterations, self.bucket_size = float(tau), iterations, bucket_size
        self.byzantine_fraction = byzantine_fraction

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The governed radius, iterations and bucket size."""
        return cls(
            params.centered_clip_tau,
            params.centered_clip_iterations,
            params.bucket_size,
            params.byzantine_fraction,
        )

    def aggregate(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        """Centered clipping around ``inputs.center`` (None: the coordinate median); all clients selected."""
        X = as_update_matrix(X)
        if self.bucket_size > 1:
            if inputs.rng is None:
                raise InvalidParameter("centered_clip with buckets needs the round's rng in its inputs")
            vector = bucketed_centered_clip(
                X, inputs.rng, inputs.center, self.tau, self.iterations, self.bucket_size
            )
        else:
            vector = centered_clip(X, inputs.center, self.tau, self.iterations)
        return Aggregated(vector, np.arange(X.shape[0]), {})

    def describe(self) -> dict[str, Detail]:
        """Radius, iterations, bucket size."""
        return {"tau": self.tau, "iterations": self.iterations, "bucket_size": self.bucket_size}
