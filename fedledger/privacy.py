"""Privacy accounting shared by the server (the round's DP budget) and organizations (their own epsilon).

Google's ``dp-accounting`` RDP accountant composes the (Poisson-subsampled) Gaussian mechanism of each
round; see ``aggregator/round/dp.py`` for the mechanism itself and why the package is used rather than an own
derivation. Lives in the core because both sides must compute the same epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dp_accounting
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant as rdp_accountant


class InvalidPrivacyParameter(ValueError):
    """A privacy parameter (sampling rate, delta, rounds) is outside its valid range."""


def gaussian_rdp(noise_multiplier: float, orders: np.ndarray) -> np.ndarray:
    """RDP of one full-participation round (the Gaussian mechanism): alpha / (2 z^2), exact."""
    return orders / (2 * noise_multiplier * noise_multiplier)


def rdp_to_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """Smallest epsilon over orders: rdp + log(1 - 1/a) - log(delta a) / (a - 1) (Canonne et al. 2020)."""
    eps = rdp + np.log1p(-1.0 / orders) - np.log(delta * orders) / (orders - 1)
    return float(max(0.0, np.min(eps)))


def epsilon_after(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """(epsilon, delta)-DP epsilon after ``rounds`` rounds. Zero rounds spend nothing; zero noise is
    infinitely expensive."""
    return epsilon_of([(noise_multiplier, rounds)], sampling_rate, delta)


def epsilon_of(rounds: Sequence[tuple[float, int]], sampling_rate: float, delta: float) -> float:
    """(epsilon, delta)-DP epsilon of rounds at differing noise multipliers: (multiplier, count) pairs,
    composed in the RDP accountant (a secure round is charged at its worst group's multiplier)."""
    if not 0 < sampling_rate <= 1:
        raise InvalidPrivacyParameter(f"sampling rate must be in (0, 1], got {sampling_rate}")
    if not 0 < delta < 1:
        raise InvalidPrivacyParameter(f"delta must be in (0, 1), got {delta}")
    if any(count < 0 for _, count in rounds):
        raise InvalidPrivacyParameter(f"rounds must be >= 0, got {[c for _, c in rounds]}")
    charged = [(z, count) for z, count in rounds if count > 0]
    if not charged:
        return 0.0
    if any(z <= 0 for z, _ in charged):
        return math.inf
    accountant = rdp_accountant.RdpAccountant()
    for z, count in charged:
        event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
        if sampling_rate < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


# --- distributed DP under secure aggregation ------------------------------------------------------------
#
# Under secure aggregation the server sees only group sums, so no one can add the clear mode's central noise
# after the sum: each member adds its share before masking. The clear mode's noise on one sum is N(0, sigma^2)
# per coordinate (sigma = noise multiplier x clip norm). A member adds N(0, sigma^2 / t), t the group's
# threshold, so a sum of m members carries variance m sigma^2 / t: at least sigma^2 whenever the sum can be
# unmasked at all (m >= t survivors), and sigma^2 exactly at the smallest admissible survivor count. Dropouts
# thus lower a group's noise, never below the clear mode's; a group with all k members carries k / t times it.


def member_noise_std(sigma: float, group_size: int, threshold: int) -> float:
    """Each member's share of a group sum's Gaussian noise: sigma / sqrt(threshold), so that the fewest
    survivors a group's sum can be unmasked with (``threshold``) carry the clear mode's sigma together."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidPrivacyParameter(f"sigma must be a finite number >= 0, got {sigma}")
    if not 1 <= threshold <= group_size:
        raise InvalidPrivacyParameter(
            f"threshold must be between 1 and the group size {group_size}, got {threshold}"
        )
    return sigma / math.sqrt(threshold)


def group_noise_multiplier(noise_multiplier: float, survivors: int, threshold: int) -> float:
    """The noise multiplier of a group sum of ``survivors`` members who each added their share
    (:func:`member_noise_std`): z sqrt(survivors / threshold). Fewer survivors than the threshold cannot
    be unmasked, so that case is refused rather than priced."""
    if threshold < 1 or survivors < threshold:
        raise InvalidPrivacyParameter(
            f"a group sum of {survivors} survivors at threshold {threshold} is never released"
        )
    return noise_multiplier * math.sqrt(survivors / threshold)
