"""An organization's wallet: the key that signs in, signs updates and sends transactions.

Where the key comes from, in this order (:meth:`Wallet.load`):

1. an explicit file (``--key-file``): either a file holding one 0x-hex private key, or an encrypted
   Ethereum keystore (V3 JSON), opened with a password;
2. the environment variable ``FEDLEDGER_CLIENT_PRIVATE_KEY`` (0x-hex);
3. the environment variable ``FEDLEDGER_CLIENT_KEY_FILE`` (a path, as in 1).

A keystore's password comes from the argument, else ``FEDLEDGER_CLIENT_KEYSTORE_PASSWORD``; the CLI
prompts for it when neither is set. The key never appears in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from client.errors import WalletError
from fedledger.crypto.eip712 import sign_update
from fedledger.devkeys import is_dev_private_key

ENV_PRIVATE_KEY = "FEDLEDGER_CLIENT_PRIVATE_KEY"
ENV_KEY_FILE = "FEDLEDGER_CLIENT_KEY_FILE"
ENV_KEYSTORE_PASSWORD = "FEDLEDGER_CLIENT_KEYSTORE_PASSWORD"

_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_MAX_KEY_FILE_BYTES = 64 * 1024


class Wallet:
    """A loaded private key and its checksummed address."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: str) -> None:
        key = private_key.strip() if isinstance(private_key, str) else ""
        if not _HEX_KEY.fullmatch(key):
            raise WalletError(
                "the private key must be 32 bytes of hex (64 hex digits, optionally 0x-prefixed)"
            )
        key = key if key.startswith("0x") else "0x" + key
        try:
            self.address: str = Account.from_key(key).address
        except (ValueError, TypeError):
            raise WalletError(
                "the private key is not a valid secp256k1 key (zero or above the curve order)"
            ) from None
        self._key = key

    def __repr__(self) -> str:
        return f"Wallet(address={self.address!r})"

    @property
    def private_key(self) -> str:
        """The 0x-hex private key (for signing transactions with :func:`fedledger.chain.tx.send_transaction`)."""
        return self._key

    @property
    def is_dev_key(self) -> bool:
        """Whether this is one of the public Hardhat development keys (never use one on a real chain)."""
        return is_dev_private_key(self._key)

    # ------------------------------------------------------------------------------------------- signing
    def sign_message(self, text: str) -> str:
        """EIP-191 ``personal_sign`` of ``text`` (what Sign-In with Ethereum asks for); 0x-hex."""
        return str(Account.sign_message(encode_defunct(text=text), self._key).signature.to_0x_hex())

    def sign_update(
        self,
        *,
        chain_id: int,
        verifying_contract: str,
        round_id: int,
        model_version: int,
        payload_hash: bytes,
        num_samples: int,
    ) -> str:
        """The EIP-712 ``Update`` signature the server checks against the signed-in wallet."""
        return sign_update(
            self._key,
            chain_id=chain_id,
            verifying_contract=verifying_contract,
            round_id=round_id,
            model_version=model_version,
            payload_hash=payload_hash,
            num_samples=num_samples,
        )

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_private_key(cls, private_key: str) -> Wallet:
        """A wallet from a 0x-hex private key; :class:`WalletError` if it is not one."""
        return cls(private_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, password: str | None = None) -> Wallet:
        """From ``FEDLEDGER_CLIENT_PRIVATE_KEY``, else the file ``FEDLEDGER_CLIENT_KEY_FILE`` names."""
        env = os.environ if env is None else env
        if env.get(ENV_PRIVATE_KEY):
            try:
                return cls(env[ENV_PRIVATE_KEY])
            except WalletError as exc:
                raise WalletError(f"{ENV_PRIVATE_KEY}: {exc}") from None
        if env.get(ENV_KEY_FILE):
            return cls.from_file(Path(env[ENV_KEY_FILE]), password=password, env=env)
        raise WalletError(
            f"no wallet configured: pass --key-file PATH, or set {ENV_PRIVATE_KEY} (0x-hex key) "
            f"or {ENV_KEY_FILE} (a key file or an encrypted keystore)"
        )

    @classmethod
    def from_file(
        cls, path: Path | str, *, password: str | None = None, env: Mapping[str, str] | None = None
    ) -> Wallet:
        """A file holding a 0x-hex key, or an encrypted keystore JSON (needs a password)."""
        path = Path(path).expanduser()
        try:
            if path.stat().st_size > _MAX_KEY_FILE_BYTES:
                raise WalletError(f"{path} is too large to be a key file or a keystore")
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise WalletError(f"key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise WalletError(f"cannot read key file {path}: {exc}") from None
        if text.startswith("{"):
            return cls.from_keystore(text, password=password, env=env, source=str(path))
        try:
            return cls(text)
        except WalletError as exc:
            raise WalletError(f"{path}: {exc}; or give an encrypted keystore JSON") from None

    @classmethod
    def from_keystore(
        cls,
        keystore: str | bytes | Mapping[str, Any],
        *,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
        source: str = "keystore",
    ) -> Wallet:
        """Decrypt an Ethereum V3 keystore (``eth_account.Account.decrypt``)."""
        env = os.environ if env is None else env
        if password is None:
            password = env.get(ENV_KEYSTORE_PASSWORD)
        if password is None:
            raise KeystorePasswordRequired(
                f"{source} is an encrypted keystore: give its password (--password-file, or {ENV_KEYSTORE_PASSWORD})"
            )
        try:
            document = dict(keystore) if isinstance(keystore, Mapping) else json.loads(keystore)
        except (ValueError, TypeError) as exc:
            raise WalletError(f"{source} is not valid keystore JSON: {exc}") from None
        try:
            key = Account.decrypt(document, password)
        except ValueError as exc:
            if "MAC" in str(exc):
                raise WalletError(f"wrong password for {source}") from None
            raise WalletError(f"{source} is not a usable keystore: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise WalletError(f"{source} is not a usable keystore (missing {exc})") from None
        return cls("0x" + bytes(key).hex())

    @classmethod
    def load(
        cls,
        key_file: Path | str | None = None,
        *,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Wallet:
        """The wallet from ``key_file`` if given, else from the environment (see the module docstring)."""
        if key_file is not None:
            return cls.from_file(key_file, password=password, env=env)
        return cls.from_env(env, password=password)

    def to_keystore(self, password: str) -> dict[str, Any]:
        """This key as an encrypted V3 keystore (scrypt), for storing it safely."""
        return dict(Account.encrypt(bytes.fromhex(self._key[2:]), password))


class KeystorePasswordRequired(WalletError):
    """The key file is an encrypted keystore and no password was given (the CLI then prompts)."""
