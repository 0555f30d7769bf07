"""The API's paths, for callers that must speak HTTP themselves (the benchmarks' async bursts).

Everything else goes through :class:`fedledger.api.client.FedLedgerApi`; a test keeps "/v1/" literals out of
every other module, so a renamed route is changed here, in the client and in the routes only.
"""

from __future__ import annotations

NONCE = "/v1/auth/nonce"
LOGIN = "/v1/auth/login"
MODELS = "/v1/models"
PARTICIPANTS = "/v1/participants"
ROUNDS = "/v1/rounds"
CURRENT_KEY = "/v1/keys/current"


def round_path(round_id: int) -> str:
    """One round's path."""
    return f"{ROUNDS}/{int(round_id)}"


def updates_path(round_id: int) -> str:
    """Where a round's updates are submitted."""
    return f"{round_path(round_id)}/updates"
