"""Flower interoperability, server side: :class:`FedLedgerStrategy` (needs ``pip install 'fedledger[flower]'``).

The client side (an organization's Flower ``NumPyClient`` taking part in fedledger rounds, and the
platform a strategy points at) is ``client.flower``; what both sides agree on is ``fedledger.flower``.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "aggregator.flower needs Flower: pip install 'fedledger[flower]' (flwr is an optional extra)"
    ) from exc

from aggregator.flower.legacy import FedLedgerLegacyStrategy
from aggregator.flower.local import LOCAL_DEFAULTS, LocalRounds, NodeReport, Reply, RoundReport
from aggregator.flower.strategy import FedLedgerStrategy
from fedledger.flower import OpenedRound, PlatformOutcome, RoundPlatform

__all__ = [
    "LOCAL_DEFAULTS",
    "FedLedgerLegacyStrategy",
    "FedLedgerStrategy",
    "LocalRounds",
    "NodeReport",
    "OpenedRound",
    "PlatformOutcome",
    "Reply",
    "RoundPlatform",
    "RoundReport",
]
