"""Signed model packages: deterministic export, offline verification, refusal of altered archives,
and the command-line verifier run as a subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from fedledger.crypto.eip712 import model_hash, sign_model
from fedledger.crypto.errors import PackageError
from fedledger.crypto.package import (
    MANIFEST_NAME,
    MAX_WEIGHTS_BYTES,
    PACKAGE_FORMAT,
    WEIGHTS_NAME,
    export_package,
    open_package,
    verify_package,
)
from fedledger.devkeys import MODEL_SIGNER_INDEX, dev_private_key
from fedledger.payload import decode_weights, encode_weights

from .conftest import ORG_KEY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "verify_model_package.py"
SIGNER_KEY = dev_private_key(MODEL_SIGNER_INDEX)
SIGNER = Account.from_key(SIGNER_KEY).address
LEDGER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31337
VERSION = 7
METADATA = {"parent": 6, "round": 7, "holdout_loss": 0.4375, "strategy": "trimmed_mean"}


@pytest.fixture(scope="module")
def weights() -> bytes:
    rng = np.random.default_rng(3)
    return encode_weights({"dense.weight": rng.normal(size=(32, 16)), "dense.bias": rng.normal(size=16)})


def signed(weights: bytes, *, key: str = SIGNER_KEY, version: int = VERSION) -> str:
    return sign_model(
        key, chain_id=CHAIN_ID, verifying_contract=LEDGER, version=version, model_hash=model_hash(weights)
    )


def export(
    weights: bytes, *, signature: str | None = None, version: int = VERSION, metadata: dict = METADATA
) -> bytes:
    return export_package(
        weights,
        metadata,
        signature or signed(weights, version=version),
        chain_id=CHAIN_ID,
        verifying_contract=LEDGER,
        version=version,
    )


def rezip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def entries_of(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# --- round trip --------------------------------------------------------------------------------------


def test_export_verify_round_trip(weights: bytes) -> None:
    package = export(weights)
    out_weights, out_metadata = verify_package(package, SIGNER)
    assert out_weights == weights
    assert out_metadata == METADATA
    assert set(decode_weights(out_weights)) == {"dense.weight", "dense.bias"}


def test_open_package_reports_what_was_verified(weights: bytes) -> None:
    verified = open_package(export(weights), SIGNER.lower())
    assert verified.version == VERSION
    assert verified.chain_id == CHAIN_ID
    assert verified.verifying_contract == LEDGER
    assert verified.model_hash == hashlib.sha256(weights).digest()
    assert verified.signer == SIGNER


def test_export_is_deterministic(weights: bytes) -> None:
    assert export(weights) == export(weights)


def test_archive_layout(weights: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(export(weights))) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == [MANIFEST_NAME, WEIGHTS_NAME]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        manifest = json.loads(archive.read(MANIFEST_NAME))
    assert manifest == {
        "format": PACKAGE_FORMAT,
        "version": VERSION,
        "chain_id": CHAIN_ID,
        "verifying_contract": LEDGER,
        "model_hash": hashlib.sha256(weights).hexdigest(),
        "signature": signed(weights),
        "metadata": METADATA,
    }


def test_deflated_repack_of_the_same_entries_still_verifies(weights: bytes) -> None:
    """Verification depends on the entries, not on the exact archive bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries_of(export(weights)).items():
            archive.writestr(name, data)
    assert verify_package(buffer.getvalue(), SIGNER)[0] == weights


# --- refusals ----------------------------------------------------------------------------------------


def test_wrong_signer_is_refused(weights: bytes) -> None:
    with pytest.raises(PackageError, match="not by the expected signer"):
        verify_package(export(weights), Account.from_key(ORG_KEY).address)


def test_package_signed_by_another_key_is_refused(weights: bytes) -> None:
    package = export(weights, signature=signed(weights, key=ORG_KEY))
    with pytest.raises(PackageError, match=f"signed by {Account.from_key(ORG_KEY).address}"):
        verify_package(package, SIGNER)


def test_tampered_weights_are_refused(weights: bytes) -> None:
    entries = entries_of(export(weights))
    tampered = bytearray(entries[WEIGHTS_NAME])
    tampered[-1] ^= 0x01
    package = rezip([(MANIFEST_NAME, entries[MANIFEST_NAME]), (WEIGHTS_NAME, bytes(tampered))])
    with pytest.raises(PackageError, match="weights were altered"):
        verify_package(package, SIGNER)


def test_tampered_manifest_hash_and_weights_are_refused(weights: bytes) -> None:
    """Swapping in other weights with their matching hash still fails: the signature covers the hash."""
    other = encode_weights({"dense.weight": np.zeros((32, 16)), "dense.bias": np.zeros(16)})
    entries = entries_of(export(weights))
    manifest = json.loads(entries[MANIFEST_NAME])
    manifest["model_hash"] = hashlib.sha256(other).hexdigest()
    package = rezip([(MANIFEST_NAME, json.dumps(manifest).encode()), (WEIGHTS_NAME, other)])
    with pytest.raises(PackageError, match="not by the expected signer"):
        verify_package(package, SIGNER)


@pytest.mark.parametrize("field, value", [("version", VERSION + 1), ("chain_id", 1)])
def test_changed_version_or_chain_is_refused(weights: bytes, field: str, value: int) -> None:
    entries = entries_of(export(weights))
    manifest = json.loads(entries[MANIFEST_NAME])
    manifest[field] = value
    package = rezip([(MANIFEST_NAME, json.dumps(manifest).encode()), (WEIGHTS_NAME, entries[WEIGHTS_NAME])])
    with pytest.raises(PackageError, match="not by the expected signer"):
        verify_package(package, SIGNER)


def test_metadata_is_not_covered_by_the_signature(weights: bytes) -> None:
    """Documented limit of the Model type: metadata is informational, verified packages may carry any."""
    entries = entries_of(export(weights))
    manifest = json.loads(entries[MANIFEST_NAME])
    manifest["metadata"] = {"holdout_loss": 0.0}
    package = rezip([(MANIFEST_NAME, json.dumps(manifest).encode()), (WEIGHTS_NAME, entries[WEIGHTS_NAME])])
    assert verify_package(package, SIGNER)[1] == {"holdout_loss": 0.0}


@pytest.mark.parametrize(
    "extra",
    [
        [("README.txt", b"hello")],
        [("../weights.safetensors", b"evil")],
        [("/etc/passwd", b"evil")],
        [("weights.safetensors/", b"")],
        [(WEIGHTS_NAME, b"second copy")],
    ],
    ids=["extra-file", "zip-slip", "absolute", "directory", "duplicate"],
)
def test_extra_entries_are_refused(weights: bytes, extra: list[tuple[str, bytes]]) -> None:
    entries = list(entries_of(export(weights)).items())
    duplicate = extra[0][0] == WEIGHTS_NAME
    with pytest.warns(UserWarning, match="Duplicate name") if duplicate else contextlib.nullcontext():
        package = rezip(entries + extra)
    with pytest.raises(PackageError, match="exactly manifest.json and weights.safetensors"):
        verify_package(package, SIGNER)


def test_renamed_entries_are_refused(weights: bytes) -> None:
    entries = entries_of(export(weights))
    package = rezip([(MANIFEST_NAME, entries[MANIFEST_NAME]), ("./" + WEIGHTS_NAME, entries[WEIGHTS_NAME])])
    with pytest.raises(PackageError, match="exactly"):
        verify_package(package, SIGNER)


def test_oversize_declared_entry_is_refused_before_reading(weights: bytes) -> None:
    package = bytearray(export(weights))
    # Walk the central directory to the weights entry's record and declare 3 GiB uncompressed.
    end_record = package[-22:]  # no archive comment: the end-of-central-directory record is the last 22 bytes
    assert end_record[:4] == b"PK\x05\x06"
    position = int.from_bytes(end_record[16:20], "little")
    while True:
        name_len = int.from_bytes(package[position + 28 : position + 30], "little")
        name = bytes(package[position + 46 : position + 46 + name_len])
        if name == WEIGHTS_NAME.encode():
            break
        extra_len = int.from_bytes(package[position + 30 : position + 32], "little")
        comment_len = int.from_bytes(package[position + 32 : position + 34], "little")
        position += 46 + name_len + extra_len + comment_len
    package[position + 24 : position + 28] = (3 * 1024**3).to_bytes(4, "little")
    assert MAX_WEIGHTS_BYTES < 3 * 1024**3
    with pytest.raises(PackageError, match="declares 3221225472 bytes"):
        verify_package(bytes(package), SIGNER)


def test_corrupted_stored_bytes_fail_the_crc(weights: bytes) -> None:
    package = bytearray(export(weights))
    offset = package.index(weights[:64]) + 100
    package[offset] ^= 0xFF
    with pytest.raises(PackageError, match="corrupt"):
        verify_package(bytes(package), SIGNER)


@pytest.mark.parametrize(
    "manifest_change, reason",
    [
        ({"format": "something-else/2"}, "format"),
        ({"version": -1}, "version must be an integer"),
        ({"version": "7"}, "version must be an integer"),
        ({"chain_id": True}, "chain_id must be an integer"),
        ({"model_hash": "sha256:00"}, "model_hash"),
        ({"signature": 5}, "signature must be"),
        ({"signature": "0x1234"}, "signature is invalid"),
        ({"metadata": []}, "metadata must be"),
        ({"verifying_contract": "nope"}, "verifying_contract"),
        ({"surprise": 1}, "unexpected \\['surprise'\\]"),
    ],
)
def test_bad_manifests_are_refused(weights: bytes, manifest_change: dict, reason: str) -> None:
    entries = entries_of(export(weights))
    manifest = {**json.loads(entries[MANIFEST_NAME]), **manifest_change}
    package = rezip([(MANIFEST_NAME, json.dumps(manifest).encode()), (WEIGHTS_NAME, entries[WEIGHTS_NAME])])
    with pytest.raises(PackageError, match=reason):
        verify_package(package, SIGNER)


def test_duplicate_manifest_keys_are_refused(weights: bytes) -> None:
    entries = entries_of(export(weights))
    raw = entries[MANIFEST_NAME].rstrip().rstrip(b"}") + b',"version": 8}'
    package = rezip([(MANIFEST_NAME, raw), (WEIGHTS_NAME, entries[WEIGHTS_NAME])])
    with pytest.raises(PackageError, match="duplicate key"):
        verify_package(package, SIGNER)


@pytest.mark.parametrize("garbage", [b"", b"PK", b"not a zip at all", b"PK\x05\x06" + bytes(18)])
def test_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(PackageError):
        verify_package(garbage, SIGNER)


def test_invalid_expected_signer_is_refused(weights: bytes) -> None:
    with pytest.raises(PackageError, match="expected signer"):
        verify_package(export(weights), "0xnot-an-address")
    with pytest.raises(PackageError, match="expected signer"):
        verify_package(export(weights), SIGNER.swapcase().replace("0X", "0x"))


def test_deployment_can_be_pinned(weights: bytes) -> None:
    package = export(weights)
    assert verify_package(package, SIGNER, expected_chain_id=CHAIN_ID, expected_contract=LEDGER.lower())
    with pytest.raises(PackageError, match="chain id"):
        verify_package(package, SIGNER, expected_chain_id=1)
    with pytest.raises(PackageError, match="ledger"):
        verify_package(package, SIGNER, expected_contract="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"signature": "0xdeadbeef"}, "cannot export"),
        ({"metadata": {"bad": float("nan")}}, "JSON-serializable"),
        ({"metadata": {"bad": object()}}, "JSON-serializable"),
        ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
        ({"verifying_contract": "0x1"}, "verifying_contract"),
    ],
)
def test_export_refuses_bad_inputs(weights: bytes, kwargs: dict, reason: str) -> None:
    arguments = {
        "metadata": METADATA,
        "signature": signed(weights),
        "chain_id": CHAIN_ID,
        "verifying_contract": LEDGER,
        "version": VERSION,
        **kwargs,
    }
    with pytest.raises(PackageError, match=reason):
        export_package(weights, **arguments)


# --- the command-line verifier ------------------------------------------------------------------------


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_script_accepts_a_good_package(tmp_path: Path, weights: bytes) -> None:
    path = tmp_path / "model-v7.zip"
    path.write_bytes(export(weights))
    result = run_script(str(path), "--signer", SIGNER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OK version {VERSION} sha256:{hashlib.sha256(weights).hexdigest()}"


def test_script_refuses_a_wrong_signer(tmp_path: Path, weights: bytes) -> None:
    path = tmp_path / "model-v7.zip"
    path.write_bytes(export(weights))
    result = run_script(str(path), "--signer", Account.from_key(ORG_KEY).address)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "not by the expected signer" in result.stderr


def test_script_refuses_a_tampered_package(tmp_path: Path, weights: bytes) -> None:
    entries = entries_of(export(weights))
    path = tmp_path / "tampered.zip"
    path.write_bytes(
        rezip([(MANIFEST_NAME, entries[MANIFEST_NAME]), (WEIGHTS_NAME, entries[WEIGHTS_NAME] + b" ")])
    )
    result = run_script(str(path), "--signer", SIGNER)
    assert result.returncode == 1
    assert "altered" in result.stderr


def test_script_reports_a_missing_file(tmp_path: Path) -> None:
    result = run_script(str(tmp_path / "absent.zip"), "--signer", SIGNER)
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_script_pins_the_chain(tmp_path: Path, weights: bytes) -> None:
    path = tmp_path / "model-v7.zip"
    path.write_bytes(export(weights))
    assert run_script(str(path), "--signer", SIGNER, "--chain-id", str(CHAIN_ID)).returncode == 0
    assert run_script(str(path), "--signer", SIGNER, "--chain-id", "1").returncode == 1
