"""Privacy accounting shared by the server (the round's DP budget) and organizations (their own epsilon).

Google's ``dp-accounting`` RDP accountant composes the (Poisson-subsampled) Gaussian mechanism of each
round; see ``aggregator/round/dp.py`` for the mechanism itself and why the package is used rather than an own
derivation. Lives in the core because both sides must compute the same epsilon.
"""

from __future__ import annotations

import math

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
    if not 0 < sampling_rate <= 1:
        raise InvalidPrivacyParameter(f"sampling rate must be in (0, 1], got {sampling_rate}")
    if not 0 < delta < 1:
        raise InvalidPrivacyParameter(f"delta must be in (0, 1), got {delta}")
    if rounds < 0:
        raise InvalidPrivacyParameter(f"rounds must be >= 0, got {rounds}")
    if rounds == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    accountant = rdp_accountant.RdpAccountant()
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))
