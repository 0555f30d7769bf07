"""float32 updates into the ring Z_{2^32} and sums back, with a stated clipping range and error.

Each coordinate is clipped to ``[-clip, clip]`` and rounded to the nearest multiple of ``1 / scale``; the
integer is stored in two's complement mod 2^32. ``scale`` is the largest integer for which the sum of
``max_summands`` clipped values stays inside the signed 32-bit range, so a group's masked sum decodes
without ambiguity however its members' values fall:

    scale = floor((2^31 - 1) / (max_summands * clip))

Error: a coordinate inside the range is off by at most ``1 / (2 scale)`` after decoding (round to nearest),
so a sum of ``m`` members is off by at most ``m / (2 scale)`` per coordinate (:meth:`Quantizer.sum_error`).
A coordinate outside the range is clipped first: that error is the member's choice of range, not noise.
With the defaults (clip 1.0, a group of up to 5) the step is 2.3e-9, below float32's resolution near 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedledger.secagg.errors import QuantizationError

RING_BITS = 32
_SIGNED_MAX = 2 ** (RING_BITS - 1) - 1


@dataclass(frozen=True)
class Quantizer:
    """Fixed-point encoding for sums of at most ``max_summands`` updates clipped to ``[-clip, clip]``."""

    clip: float
    max_summands: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise QuantizationError(f"clip must be a finite positive number, got {self.clip!r}")
        if self.max_summands < 1:
            raise QuantizationError(f"max_summands must be at least 1, got {self.max_summands}")
        if self.scale < 1:
            raise QuantizationError(
                f"clip {self.clip} x {self.max_summands} summands leaves no fixed-point resolution in "
                f"{RING_BITS} bits; lower the clip range"
            )

    @property
    def scale(self) -> int:
        """Integer steps per unit."""
        return int(_SIGNED_MAX // (self.max_summands * self.clip))

    def sum_error(self, summands: int) -> float:
        """The largest per-coordinate error of a decoded sum of ``summands`` in-range updates."""
        return summands / (2.0 * self.scale)

    def encode(self, update: np.ndarray) -> np.ndarray:
        """A flat float32 update as uint32 ring elements (clipped, rounded to nearest)."""
        x = np.asarray(update)
        if x.dtype != np.float32 or x.ndim != 1:
            raise QuantizationError(f"update must be a flat float32 vector, got {x.dtype} of shape {x.shape}")
        if not np.isfinite(x).all():
            raise QuantizationError("update has NaN or infinite entries; only finite updates are quantized")
        # float64 for the product: scale reaches 2^31 / m, past float32's 24-bit mantissa. Clipped after
        # scaling, so the bound is clip x scale exactly (float32(0.1) is above 0.1: clipping in float32 let
        # m extreme values wrap). The rounded value fits int32, whose two's complement bits are the element.
        scaled = np.multiply(x, np.float64(self.scale))
        bound = self.clip * self.scale
        np.clip(scaled, -bound, bound, out=scaled)
        np.rint(scaled, out=scaled)
        ring: np.ndarray = scaled.astype(np.int32).view(np.uint32)
        return ring

    def decode_sum(self, ring_sum: np.ndarray) -> np.ndarray:
        """The float64 sum a uint32 ring sum of at most ``max_summands`` encodings stands for."""
        y = np.asarray(ring_sum)
        if y.dtype != np.uint32 or y.ndim != 1:
            raise QuantizationError(
                f"ring sum must be a flat uint32 vector, got {y.dtype} of shape {y.shape}"
            )
        return y.view(np.int32).astype(np.float64) / self.scale
