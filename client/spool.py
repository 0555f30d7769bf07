"""The spool: a sealed envelope survives a crash until its receipt arrives.

The envelope is written to disk before the first submission attempt, so a client that crashes before the
receipt arrives resends the same bytes after a restart instead of training again (a different payload
would be refused with 409).

A spooled entry belongs to one round of one deployment: a fresh dev chain reuses the chain id, the
contract addresses and the round ids of the previous one, so the key also holds the round's opening time
(:func:`round_scope`). A receipt is kept beside the envelope it answers and comes back only with that
envelope (same round, same payload hash); it is never shown as success on its own: the caller resends the
envelope, and the server's answer (the same receipt, ``replayed``) is what counts. Files live under
``<dir>/<address>/<api>/<scope>/round-<id>.{envelope,json,receipt.json}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError

from client.sealing import PreparedUpdate
from fedledger.api.schemas import ReceiptOut, RoundOut
from fedledger.chain.deployments import ChainIdentity, Deployments


def round_scope(deployments: Deployments, round_: RoundOut, identity: ChainIdentity | None = None) -> str:
    """What tells this round apart from every other round with the same id: the deployment (chain id,
    deploy block and, given ``identity``, its hash and the genesis hash, every contract address) and the
    round's opening time on the server."""
    binding = {
        "chain_id": deployments.chain_id,
        "deploy_block": deployments.deploy_block,
        "chain": [identity.genesis_hash, identity.deploy_block_hash] if identity else None,
        "addresses": {name: address.lower() for name, address in sorted(deployments.addresses.items())},
        "round_id": round_.id,
        # As the server wrote it (the scope names spool folders: the same text before and after an upgrade).
        "opened_at": round_.model_dump(mode="json")["opened_at"],
    }
    return hashlib.sha256(json.dumps(binding, sort_keys=True).encode()).hexdigest()[:24]


class Spool:
    """One organization's spool for one API; ``directory=None`` keeps nothing (every method is a no-op)."""

    def __init__(self, directory: Path | str | None, address: str, api_base_url: str) -> None:
        self.base: Path | None = None
        if directory is not None:
            api = api_base_url.replace("://", "_").replace("/", "_").replace(":", "_")
            self.base = Path(directory).expanduser() / address / api

    def _paths(self, round_id: int, scope: str) -> tuple[Path, Path, Path] | None:
        if self.base is None:
            return None
        name = f"round-{round_id}"
        folder = self.base / scope
        return (
            folder / f"{name}.envelope",
            folder / f"{name}.json",
            folder / f"{name}.receipt.json",
        )

    def save(self, prepared: PreparedUpdate, scope: str) -> None:
        """Keep the envelope and its metadata (before it is sent for the first time); a receipt kept for
        an earlier envelope of the round no longer applies."""
        paths = self._paths(prepared.round_id, scope)
        if paths is None:
            return
        envelope_path, meta_path, receipt_path = paths
        envelope_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = {k: v for k, v in asdict(prepared).items() if k != "envelope"}
        receipt_path.unlink(missing_ok=True)
        envelope_path.write_bytes(prepared.envelope)
        meta_path.write_text(json.dumps(meta))

    def load(self, round_id: int, scope: str) -> tuple[PreparedUpdate | None, ReceiptOut | None]:
        """The round's spooled envelope (None if absent or damaged) and the receipt kept for exactly that
        envelope (None if none, or if it names another update or round)."""
        paths = self._paths(round_id, scope)
        if paths is None:
            return None, None
        envelope_path, meta_path, receipt_path = paths
        if not (envelope_path.exists() and meta_path.exists()):
            return None, None
        meta = json.loads(meta_path.read_text())
        prepared = PreparedUpdate(envelope=envelope_path.read_bytes(), **meta)
        if "0x" + hashlib.sha256(prepared.envelope).hexdigest() != prepared.payload_hash:
            return None, None
        if prepared.round_id != round_id:
            return None, None
        receipt = _receipt(receipt_path) if receipt_path.exists() else None
        if receipt is not None and (
            receipt.payload_hash.lower() != prepared.payload_hash or receipt.round_id != round_id
        ):
            receipt = None
        return prepared, receipt

    def save_receipt(self, prepared: PreparedUpdate, receipt: ReceiptOut, scope: str) -> None:
        """Keep the receipt the server gave for ``prepared``."""
        paths = self._paths(prepared.round_id, scope)
        if paths is not None:
            paths[2].write_text(receipt.model_dump_json())

    def discard(self, round_id: int, scope: str) -> None:
        """Forget the round's envelope and receipt (the server refused the envelope as not its own)."""
        paths = self._paths(round_id, scope)
        if paths is not None:
            for path in paths:
                path.unlink(missing_ok=True)


def _receipt(path: Path) -> ReceiptOut | None:
    """A kept receipt; None when the file is damaged (a crash mid-write): the envelope is resent and the
    server answers with the same receipt."""
    try:
        return ReceiptOut.model_validate_json(path.read_bytes())
    except ValidationError:
        return None
