"""A member's share of differential privacy under secure aggregation: clip, then noise, before masking.

The server sees only group sums, so the noise the clear mode adds to the sum at the server is added by the
members instead (distributed DP): each clips its update to L2 norm ``clip_norm`` (the governed DP clip) and
adds N(0, std^2) to every coordinate, ``std`` = sigma / sqrt(threshold) (:func:`fedledger.privacy.
member_noise_std`), before quantizing and masking. A group sum of m >= threshold survivors then carries at
least the clear mode's noise sigma; see :func:`fedledger.privacy.group_noise_multiplier` for what dropouts do.

Two things must hold for the quantizer not to eat the noise, and :meth:`MemberNoise.check_fits` refuses a
group whose quantizer breaks either: its range must hold a clipped coordinate plus the noise's tail (a
coordinate clipped by the range is the member's noise cut off, which neither the accounting nor the model
expects), and its step must be far below ``std`` (rounding must not round the noise away).

What the noise does not cover: a member who skips it (an attacker, or a server's accomplice) leaves its
share out, so its group's sum carries m - 1 shares; a server that colludes with members knows their noise.
Distributed DP protects an organization against the server and the other organizations up to the honest
members' noise, as in Kairouz et al. (ICML 2021, the distributed discrete Gaussian).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedledger.privacy import InvalidPrivacyParameter, member_noise_std
from fedledger.secagg.errors import QuantizationError
from fedledger.secagg.quantize import Quantizer

# The chance that any coordinate of one member's noised update falls outside the range the quantizer must
# hold (a union bound over coordinates of the Gaussian tail 2 exp(-x^2 / 2)).
RANGE_MISS_PROBABILITY = 1e-9
# The quantizer's step must be at most this share of the noise's std, so rounding leaves the noise intact
# (rounding adds a uniform error of variance step^2 / 12 per member: 1e-8 of the noise's variance here).
MAX_STEP_PER_STD = 1e-3


@dataclass(frozen=True)
class MemberNoise:
    """What one member does to its update before masking: clip to L2 ``clip_norm``, add N(0, std^2)."""

    clip_norm: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise InvalidPrivacyParameter(f"clip norm must be a finite number > 0, got {self.clip_norm}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise InvalidPrivacyParameter(f"noise std must be a finite number > 0, got {self.std}")

    @classmethod
    def for_group(
        cls, clip_norm: float, noise_multiplier: float, group_size: int, threshold: int
    ) -> MemberNoise:
        """The governed DP settings (clip C, multiplier z) as one member's share in a group of
        ``group_size`` with ``threshold``: std = z C / sqrt(threshold)."""
        return cls(clip_norm, member_noise_std(noise_multiplier * clip_norm, group_size, threshold))

    def required_range(self, dimension: int) -> float:
        """The smallest quantizer range (per coordinate) that holds a clipped coordinate (at most
        ``clip_norm``) plus noise of ``dimension`` coordinates with probability 1 - RANGE_MISS_PROBABILITY."""
        if dimension < 1:
            raise InvalidPrivacyParameter(f"dimension must be >= 1, got {dimension}")
        tail = math.sqrt(2.0 * math.log(2.0 * dimension / RANGE_MISS_PROBABILITY))
        return self.clip_norm + tail * self.std

    def check_fits(self, quantizer: Quantizer, dimension: int) -> None:
        """:class:`QuantizationError` when the group's quantizer would clip or round away this noise."""
        needed = self.required_range(dimension)
        if quantizer.clip < needed:
            raise QuantizationError(
                f"the group's quantization range {quantizer.clip:g} cannot hold updates clipped to "
                f"{self.clip_norm:g} plus noise of std {self.std:.4g} over {dimension} coordinates: it would "
                f"cut the noise off; the group needs a range of at least {needed:.4g}"
            )
        step = 1.0 / quantizer.scale
        if step > MAX_STEP_PER_STD * self.std:
            raise QuantizationError(
                f"the group's quantization step {step:.3g} is coarse against noise of std {self.std:.3g}: "
                "rounding would change the noise; lower the range or the group size"
            )

    def apply(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``update`` clipped to L2 norm ``clip_norm`` plus the noise, as a flat float32 vector (a copy).

        float32 throughout but the norm (accumulated in float64): the noise is drawn as float32, one pass of
        d draws being most of a member's added time (bench_secagg.py --dp)."""
        x = np.asarray(update, dtype=np.float32).ravel()
        if not np.isfinite(x).all():
            raise QuantizationError("update has NaN or infinite entries; only finite updates are noised")
        norm = float(np.sqrt(np.einsum("i,i->", x, x, dtype=np.float64)))
        noised: np.ndarray = rng.standard_normal(x.size, dtype=np.float32)
        noised *= np.float32(self.std)
        if norm > self.clip_norm:
            noised += x * np.float32(self.clip_norm / norm)
        else:
            noised += x
        return noised


def noise_for_round(params: Mapping[str, Any], group_size: int, threshold: int) -> MemberNoise | None:
    """The noise share a round's parameter snapshot asks each member of a group for (None with DP off).

    The one reading of the snapshot's DP settings on both sides: the SDK noises with it, the server widens
    the group's range with it (:func:`group_range`) and charges the accountant for it."""
    if params.get("dp_enabled") is not True:
        return None
    try:
        clip, multiplier = float(params["dp_clip_norm"]), float(params["dp_noise_multiplier"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidPrivacyParameter(
            f"a round with DP on needs numeric dp_clip_norm and dp_noise_multiplier in its snapshot: {exc}"
        ) from exc
    return MemberNoise.for_group(clip, multiplier, group_size, threshold)


def group_range(clip: float, noise: MemberNoise | None, dimension: int) -> float:
    """The quantizer range a group needs: the governed ``secure_clip``, widened under DP to hold a clipped
    update plus its member's noise (:meth:`MemberNoise.required_range`), so no member refuses the group."""
    return clip if noise is None else max(clip, noise.required_range(dimension))


def noise_evident(mean: np.ndarray, survivors: int, noise: MemberNoise) -> bool:
    """Whether a group's unmasked mean of ``survivors`` updates carries at least one member's noise share.

    With DP on, every honest member adds N(0, std^2) per coordinate, so the mean holds at least one share,
    N(0, (std / m)^2), whatever the other members did: its squared norm is then above
    (d - 6 sqrt(2 d)) (std / m)^2 - 12 C std / m except with 6-sigma odds (the chi-square's spread, and the
    cross term with the survivors' clipped mean, of norm at most C). Below that, no member noised: a client
    that does not implement the mode's DP, whose round must not be charged as private. True when d is too
    small to tell (the bound is not positive)."""
    if survivors < 1:
        raise InvalidPrivacyParameter(f"a group mean needs at least one survivor, got {survivors}")
    x = np.asarray(mean, dtype=np.float64).ravel()
    d = x.size
    share = noise.std / survivors
    floor = (d - 6.0 * math.sqrt(2.0 * d)) * share * share - 12.0 * noise.clip_norm * share
    return floor <= 0 or float(np.dot(x, x)) >= floor
