"""Sealed, signed updates: encode the delta, seal it for the server's current key, sign it, submit it.

The envelope is sealed once and then resent byte for byte until a receipt arrives: sealing is randomized,
so sealing again would be a different payload, which the server refuses (409) once it holds the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from client.chain import OrganizationChain
from client.errors import ApiError, ClientError, TrainingError
from client.wallet import Wallet
from fedledger.api.client import FedLedgerApi, ProgressCallback
from fedledger.api.schemas import ReceiptOut
from fedledger.config import get_settings
from fedledger.crypto.chunked import coordinate_order, layout_hash, seal_chunked, signed_payload_hash
from fedledger.crypto.envelope import seal
from fedledger.crypto.errors import CryptoError
from fedledger.crypto.keys import key_id_of
from fedledger.payload import Compression, UpdateFormatError, encode_update, flatten


@dataclass(frozen=True)
class Chunking:
    """When the SDK seals an update in chunks (a chunked envelope, which a sharded close reads by coordinate
    range): dense updates of more than ``threshold_coords`` coordinates, ``chunk_coords`` per chunk."""

    threshold_coords: int
    chunk_coords: int

    @classmethod
    def from_settings(cls) -> Chunking:
        """``FEDLEDGER_UPDATE_CHUNK_THRESHOLD_COORDS`` and ``FEDLEDGER_UPDATE_CHUNK_COORDS``."""
        settings = get_settings()
        return cls(settings.update_chunk_threshold_coords, settings.update_chunk_coords)

    def applies(self, delta: Mapping[str, np.ndarray], compression: Compression) -> bool:
        """Whether this delta is sealed in chunks: dense (top-k is sealed whole) and above the threshold."""
        size = sum(int(np.asarray(v).size) for v in delta.values())
        return compression.topk_fraction is None and size > self.threshold_coords


@dataclass(frozen=True)
class PreparedUpdate:
    """A sealed, signed update: resend exactly these bytes until a receipt arrives."""

    round_id: int
    model_version: int
    num_samples: int
    envelope: bytes = field(repr=False)
    signature: str
    payload_hash: str  # 0x hex SHA-256 of the envelope (what the receipt names)
    key_id: str
    plaintext_bytes: int

    @property
    def size(self) -> int:
        """Bytes sent: the envelope's length."""
        return len(self.envelope)


class UpdateSealer:
    """Prepares and submits the organization's updates."""

    def __init__(
        self,
        api: FedLedgerApi,
        chain: OrganizationChain,
        wallet: Wallet,
        compression: Compression,
        chunking: Chunking | None = None,
    ) -> None:
        self.api = api
        self.chain = chain
        self.wallet = wallet
        self.compression = compression
        self.chunking = chunking or Chunking.from_settings()

    def prepare(
        self, round_id: int, model_version: int, delta: Mapping[str, np.ndarray], num_samples: int
    ) -> PreparedUpdate:
        """Compress, seal for the server's current key (in chunks for a large dense delta), and sign with EIP-712."""
        pem, key_id = self._server_key()
        participant = self.wallet.address
        try:
            if self.chunking.applies(delta, self.compression):
                shapes = coordinate_order({name: np.shape(array) for name, array in delta.items()})
                vector = flatten(delta, shapes)
                payload_bytes = vector.size * (2 if self.compression.half else 4)
                envelope = seal_chunked(
                    vector,
                    pem,
                    round_id=round_id,
                    model_version=model_version,
                    participant=participant,
                    num_samples=num_samples,
                    layout=layout_hash(shapes),
                    chunk_coords=self.chunking.chunk_coords,
                    half=self.compression.half,
                )
            else:
                payload = encode_update(delta, self.compression)
                payload_bytes = len(payload)
                envelope = seal(
                    payload,
                    pem,
                    round_id=round_id,
                    model_version=model_version,
                    participant=participant,
                    num_samples=num_samples,
                )
        except UpdateFormatError as exc:
            raise TrainingError(f"the update cannot be encoded: {exc}") from exc
        except CryptoError as exc:
            raise ClientError(f"the update cannot be sealed: {exc}") from exc
        digest = hashlib.sha256(envelope).digest()
        deployments = self.chain.deployments
        signature = self.wallet.sign_update(
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            round_id=round_id,
            model_version=model_version,
            # A chunked envelope's head (header and chunk table), a version 1 envelope's whole bytes.
            payload_hash=signed_payload_hash(envelope),
            num_samples=num_samples,
        )
        return PreparedUpdate(
            round_id,
            model_version,
            num_samples,
            envelope,
            signature,
            "0x" + digest.hex(),
            key_id,
            payload_bytes,
        )

    def _server_key(self) -> tuple[bytes, str]:
        """The server's current public key (PEM) and its id, checked to belong together."""
        key = self.api.current_key()
        try:
            pem = key.public_key_pem.encode()
            key_id = key_id_of(pem)
        except CryptoError as exc:
            raise ApiError(200, "malformed_response", f"the server's public key is unusable: {exc}") from exc
        if key.key_id != key_id:
            raise ApiError(
                200,
                "malformed_response",
                f"the server's key id {key.key_id} does not match its key ({key_id})",
            )
        return pem, key_id

    def submit(self, prepared: PreparedUpdate, *, progress: ProgressCallback | None = None) -> ReceiptOut:
        """Submit (retrying with the same bytes) and check that the receipt is for this envelope."""
        receipt = self.api.submit_update(
            prepared.round_id, prepared.envelope, prepared.signature, progress=progress
        )
        if receipt.payload_hash.lower() != prepared.payload_hash or receipt.round_id != prepared.round_id:
            raise ApiError(
                202,
                "receipt_mismatch",
                f"the receipt {receipt.receipt_id} is for {receipt.payload_hash} in round "
                f"{receipt.round_id}, not this update ({prepared.payload_hash}, round {prepared.round_id})",
            )
        return receipt
