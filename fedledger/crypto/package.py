"""Signed model packages: one file an air-gapped site can verify with nothing but the signer's address.

A package is a ZIP archive with exactly two stored (uncompressed) entries, in this order::

    manifest.json        {"chain_id", "format", "metadata", "model_hash", "signature",
                          "verifying_contract", "version"} (sorted keys, 2-space indent, ASCII)
    weights.safetensors  the model weights, byte for byte

The archive is deterministic: entries sorted by name, fixed 1980-01-01 timestamps, fixed permissions
and creator system, no compression (float32 weights barely compress, and stored entries do not depend
on the zlib version), so exporting the same model twice gives the same bytes and the same file hash.

Verification recomputes SHA-256 of the weights, checks it against the manifest's ``model_hash``,
recovers the EIP-712 ``Model(version, modelHash)`` signer for the manifest's chain id and contract and
compares it with the expected address. What the signature covers: the weights, the version, the chain
id and the ledger contract. What it does NOT cover: ``metadata``, which is informational and must not
drive security decisions. The archive itself is untrusted input: any entry besides the two (other
names, paths, duplicates, directories), encrypted entries, unknown compression methods, and entries
whose declared size exceeds the caps are refused before anything is read.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.eip712 import model_hash, normalize_signature, recover_model_signer
from fedledger.crypto.errors import PackageError, SignatureError
from fedledger.crypto.strictjson import loads_strict

PACKAGE_FORMAT = "fedledger-model-package/1"
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
MAX_WEIGHTS_BYTES = 2 * 1024**3
MAX_MANIFEST_BYTES = 1024**2
_ENTRY_CAPS = {MANIFEST_NAME: MAX_MANIFEST_BYTES, WEIGHTS_NAME: MAX_WEIGHTS_BYTES}
_MANIFEST_KEYS = frozenset(
    {"format", "version", "chain_id", "verifying_contract", "model_hash", "signature", "metadata"}
)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX = 3
_FILE_MODE = 0o100644 << 16  # regular file, rw-r--r--
_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose weights hash and signer were checked. ``metadata`` is not covered by the signature."""

    weights: bytes
    metadata: dict[str, Any]
    version: int
    chain_id: int
    verifying_contract: str
    model_hash: bytes
    signer: str


def export_package(
    weights: bytes,
    metadata: dict[str, Any],
    signature: str,
    *,
    chain_id: int,
    verifying_contract: str,
    version: int,
) -> bytes:
    """Build the deterministic ZIP package of a signed model version.

    ``signature`` is the model signer's EIP-712 ``Model`` signature over ``(version, sha256(weights))``
    for this chain and contract. It must at least be a well-formed signature; whether it comes from the
    right signer is what :func:`verify_package` checks on the receiving side.
    """
    if not isinstance(weights, bytes | bytearray | memoryview):
        raise PackageError(f"weights must be the safetensors bytes, got {type(weights).__name__}")
    weights = bytes(weights)
    if len(weights) > MAX_WEIGHTS_BYTES:
        raise PackageError(f"weights are {len(weights)} bytes; a package holds at most {MAX_WEIGHTS_BYTES}")
    if not isinstance(metadata, dict):
        raise PackageError(f"metadata must be a dict, got {type(metadata).__name__}")
    if not isinstance(verifying_contract, str) or not is_valid_address(verifying_contract):
        raise PackageError(f"verifying_contract must be a 0x address, got {verifying_contract!r}")
    digest = model_hash(weights)
    try:
        recover_model_signer(
            signature,
            chain_id=chain_id,
            verifying_contract=verifying_contract,
            version=version,
            model_hash=digest,
        )
    except SignatureError as exc:
        raise PackageError(f"cannot export: {exc}") from exc
    manifest = {
        "format": PACKAGE_FORMAT,
        "version": version,
        "chain_id": chain_id,
        "verifying_contract": to_checksum_address(verifying_contract),
        "model_hash": digest.hex(),
        "signature": normalize_signature(signature),
        "metadata": metadata,
    }
    try:
        manifest_bytes = (
            json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False).encode("ascii")
            + b"\n"
        )
    except (TypeError, ValueError) as exc:
        raise PackageError(f"metadata must be JSON-serializable (str keys, finite numbers): {exc}") from exc
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"manifest is {len(manifest_bytes)} bytes; keep metadata under {MAX_MANIFEST_BYTES} bytes"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in sorted({MANIFEST_NAME: manifest_bytes, WEIGHTS_NAME: weights}.items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = _UNIX
            info.external_attr = _FILE_MODE
            archive.writestr(info, data)
    return buffer.getvalue()


def verify_package(
    package: bytes,
    expected_signer: str,
    *,
    expected_chain_id: int | None = None,
    expected_contract: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Check a package and return ``(weights, metadata)``; raises :class:`PackageError` with the reason.

    ``expected_chain_id`` / ``expected_contract`` optionally pin the deployment, for a signer key that
    signs models of more than one deployment. ``metadata`` is not covered by the signature.
    """
    verified = open_package(
        package, expected_signer, expected_chain_id=expected_chain_id, expected_contract=expected_contract
    )
    return verified.weights, verified.metadata


def open_package(
    package: bytes,
    expected_signer: str,
    *,
    expected_chain_id: int | None = None,
    expected_contract: str | None = None,
) -> VerifiedPackage:
    """:func:`verify_package`, returning everything that was verified (version, hash, signer...)."""
    if not isinstance(expected_signer, str) or not is_valid_address(expected_signer):
        raise PackageError(f"expected signer must be a 0x address, got {expected_signer!r}")
    if expected_contract is not None and not is_valid_address(expected_contract):
        raise PackageError(f"expected contract must be a 0x address, got {expected_contract!r}")
    if not isinstance(package, bytes | bytearray | memoryview):
        raise PackageError(f"package must be bytes, got {type(package).__name__}")
    entries = _read_entries(bytes(package))
    manifest = _parse_manifest(entries[MANIFEST_NAME])
    weights = entries[WEIGHTS_NAME]
    digest = model_hash(weights)
    if digest.hex() != manifest["model_hash"]:
        raise PackageError(
            f"weights hash sha256:{digest.hex()} differs from the manifest's sha256:{manifest['model_hash']}; "
            "the weights were altered or swapped: do not use this package"
        )
    if expected_chain_id is not None and manifest["chain_id"] != expected_chain_id:
        raise PackageError(f"package is for chain id {manifest['chain_id']}, expected {expected_chain_id}")
    if expected_contract is not None and manifest["verifying_contract"].lower() != expected_contract.lower():
        raise PackageError(
            f"package is for ledger {manifest['verifying_contract']}, expected {to_checksum_address(expected_contract)}"
        )
    try:
        signer = recover_model_signer(
            manifest["signature"],
            chain_id=manifest["chain_id"],
            verifying_contract=manifest["verifying_contract"],
            version=manifest["version"],
            model_hash=digest,
        )
    except SignatureError as exc:
        raise PackageError(f"package signature is invalid: {exc}") from exc
    if signer.lower() != expected_signer.lower():
        raise PackageError(
            f"package was signed by {signer}, not by the expected signer {to_checksum_address(expected_signer)}; "
            "do not use this package"
        )
    return VerifiedPackage(
        weights=weights,
        metadata=manifest["metadata"],
        version=manifest["version"],
        chain_id=manifest["chain_id"],
        verifying_contract=to_checksum_address(manifest["verifying_contract"]),
        model_hash=digest,
        signer=signer,
    )


def _read_entries(package: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(package))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise PackageError(f"not a model package (not a readable ZIP archive): {exc}") from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if sorted(names) != sorted(_ENTRY_CAPS):
            unexpected = sorted({repr(n) for n in names} - {repr(n) for n in _ENTRY_CAPS})[:5]
            raise PackageError(
                f"package must hold exactly {MANIFEST_NAME} and {WEIGHTS_NAME} once each; found {len(names)} "
                f"entries, unexpected: {', '.join(unexpected) or 'none (duplicates)'}"
            )
        for info in infos:
            if info.flag_bits & 0x1:
                raise PackageError(f"entry {info.filename} is encrypted; packages are never encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise PackageError(
                    f"entry {info.filename} uses compression method {info.compress_type}; expected stored"
                )
            cap = _ENTRY_CAPS[info.filename]
            if info.file_size > cap:
                raise PackageError(
                    f"entry {info.filename} declares {info.file_size} bytes; the limit is {cap}"
                )
        try:
            # ZipFile.read stops at the declared size and checks the CRC-32.
            return {info.filename: archive.read(info) for info in infos}
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            ValueError,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise PackageError(f"package archive is corrupt: {exc}") from None


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = loads_strict(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{MANIFEST_NAME} must be a JSON object")
    if manifest.keys() != _MANIFEST_KEYS:
        missing = sorted(_MANIFEST_KEYS - manifest.keys())
        unexpected = sorted(manifest.keys() - _MANIFEST_KEYS)
        raise PackageError(f"{MANIFEST_NAME} fields are wrong: missing {missing}, unexpected {unexpected}")
    if manifest["format"] != PACKAGE_FORMAT:
        raise PackageError(
            f"package format {manifest['format']!r} is not supported; expected {PACKAGE_FORMAT!r}"
        )
    for name, minimum in (("version", 0), ("chain_id", 1)):
        value = manifest[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise PackageError(f"manifest {name} must be an integer >= {minimum}, got {value!r}")
    if not isinstance(manifest["verifying_contract"], str) or not is_valid_address(
        manifest["verifying_contract"]
    ):
        raise PackageError(
            f"manifest verifying_contract is not an address: {manifest['verifying_contract']!r}"
        )
    if not isinstance(manifest["model_hash"], str) or not _HASH_RE.fullmatch(manifest["model_hash"]):
        raise PackageError("manifest model_hash must be 64 lowercase hex characters (SHA-256)")
    if not isinstance(manifest["signature"], str):
        raise PackageError("manifest signature must be a 0x-hex string")
    if not isinstance(manifest["metadata"], dict):
        raise PackageError("manifest metadata must be a JSON object")
    return manifest
