"""A round's aggregation mode read from its parameter snapshot: clear, or secure aggregation with its group
size, and whether DP is on (one reading for the dashboard and the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RoundMode:
    """How a round aggregates: ``group_size`` 0 for the clear mode, else the governed group size; ``clip``
    the quantizer's range per coordinate; ``dp`` differential privacy on (noise added by the members before
    masking in the secure mode, by the server in the clear mode)."""

    group_size: int
    clip: float | None
    dp: bool

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> RoundMode:
        """From a round's parameter snapshot; a snapshot from before the mode existed is the clear mode."""
        size = params.get("secure_group_size")
        clip = params.get("secure_clip")
        return cls(
            group_size=int(size) if isinstance(size, int | float) else 0,
            clip=float(clip) if isinstance(clip, int | float) and size else None,
            dp=params.get("dp_enabled") is True,
        )

    @property
    def secure(self) -> bool:
        """The round runs in the secure-aggregation mode."""
        return self.group_size > 0

    def label(self) -> str:
        """``clear`` or ``secure aggregation, groups of 3``, with ``+ DP`` when privacy is on."""
        text = f"secure aggregation, groups of {self.group_size}" if self.secure else "clear"
        return text + (" + DP" if self.dp else "")
