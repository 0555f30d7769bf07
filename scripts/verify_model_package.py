#!/usr/bin/env python3
"""Verify a signed fedledger model package offline, for air-gapped sites.

    verify_model_package.py PACKAGE --signer 0xADDRESS [--chain-id N] [--contract 0xLEDGER]

Needs only the package file and the model signer's address: no server, no chain, no network. Checks
the archive holds exactly the manifest and the weights, that SHA-256 of the weights equals the
manifest's model hash, and that the EIP-712 ``Model(version, modelHash)`` signature recovers to
``--signer``. ``--chain-id`` / ``--contract`` additionally pin the deployment.

On success prints ``OK version N sha256:<hex>`` and exits 0; otherwise prints ``FAIL: <reason>`` to
stderr and exits 1 (2 for a usage error). The manifest's metadata is not covered by the signature.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedledger.crypto.errors import PackageError  # noqa: E402
from fedledger.crypto.package import MAX_MANIFEST_BYTES, MAX_WEIGHTS_BYTES, open_package  # noqa: E402

# The two capped entries plus generous room for ZIP headers.
MAX_PACKAGE_BYTES = MAX_WEIGHTS_BYTES + MAX_MANIFEST_BYTES + 64 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a signed fedledger model package offline.")
    parser.add_argument("package", type=Path, help="path of the .zip package")
    parser.add_argument("--signer", required=True, help="the model signer's 0x address")
    parser.add_argument("--chain-id", type=int, default=None, help="refuse packages for another chain id")
    parser.add_argument("--contract", default=None, help="refuse packages for another ledger contract")
    args = parser.parse_args(argv)
    try:
        size = args.package.stat().st_size
        if size > MAX_PACKAGE_BYTES:
            raise PackageError(f"{args.package} is {size} bytes; a package is at most {MAX_PACKAGE_BYTES}")
        data = args.package.read_bytes()
        verified = open_package(
            data, args.signer, expected_chain_id=args.chain_id, expected_contract=args.contract
        )
    except OSError as exc:
        print(f"FAIL: cannot read {args.package}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except PackageError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(f"OK version {verified.version} sha256:{verified.model_hash.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
