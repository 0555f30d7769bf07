"""The spool: a sealed envelope survives a crash until its receipt arrives.

The envelope is written to disk before the first submission attempt, so a client that crashes before the
receipt arrives resends the same bytes after a restart instead of training again (a different payload
would be refused with 409); once the receipt is on disk too, nothing is sent for that round at all. Files
live under ``<dir>/<address>/<api>/round-<id>.{envelope,json,receipt.json}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from client.sealing import PreparedUpdate


class Spool:
    """One organization's spool for one API; ``directory=None`` keeps nothing (every method is a no-op)."""

    def __init__(self, directory: Path | str | None, address: str, api_base_url: str) -> None:
        self.base: Path | None = None
        if directory is not None:
            api = api_base_url.replace("://", "_").replace("/", "_").replace(":", "_")
            self.base = Path(directory).expanduser() / address / api

    def _paths(self, round_id: int) -> tuple[Path, Path, Path] | None:
        if self.base is None:
            return None
        name = f"round-{round_id}"
        return (
            self.base / f"{name}.envelope",
            self.base / f"{name}.json",
            self.base / f"{name}.receipt.json",
        )

    def save(self, prepared: PreparedUpdate) -> None:
        """Keep the envelope and its metadata (before it is sent for the first time)."""
        paths = self._paths(prepared.round_id)
        if paths is None:
            return
        envelope_path, meta_path, _ = paths
        envelope_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = {k: v for k, v in asdict(prepared).items() if k != "envelope"}
        envelope_path.write_bytes(prepared.envelope)
        meta_path.write_text(json.dumps(meta))

    def load(self, round_id: int) -> tuple[PreparedUpdate | None, dict[str, Any] | None]:
        """The round's spooled envelope (None if absent or damaged) and its receipt (None if none)."""
        paths = self._paths(round_id)
        if paths is None:
            return None, None
        envelope_path, meta_path, receipt_path = paths
        receipt = json.loads(receipt_path.read_text()) if receipt_path.exists() else None
        if not (envelope_path.exists() and meta_path.exists()):
            return None, receipt
        meta = json.loads(meta_path.read_text())
        prepared = PreparedUpdate(envelope=envelope_path.read_bytes(), **meta)
        if "0x" + hashlib.sha256(prepared.envelope).hexdigest() != prepared.payload_hash:
            return None, receipt
        return prepared, receipt

    def save_receipt(self, round_id: int, receipt: Mapping[str, Any]) -> None:
        """Keep the receipt: the round needs nothing more sent."""
        paths = self._paths(round_id)
        if paths is not None:
            paths[2].write_text(json.dumps(dict(receipt)))
