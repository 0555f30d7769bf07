"""Mask expansion: a 32-byte seed into ring elements with AES-256 in counter mode (a standard PRG).

AES-CTR rather than SHAKE-256 because it runs at memory speed with AES-NI (a group member expands ``k``
masks of ``d`` words per round; at d = 1M that is 4 MB each). The key is HKDF-SHA256 of the seed with a
label naming the mask's purpose, so a pairwise seed and a self seed never expand to the same stream; the
counter starts at zero, which is safe because every key is used for one stream only.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.secagg.errors import SecAggError

SEED_BYTES = 32
_ZERO_IV = bytes(16)


def expand_mask(seed: bytes, length: int, label: bytes) -> np.ndarray:
    """``length`` uint32 words of the keystream of AES-256-CTR keyed by HKDF(seed, label)."""
    if len(seed) != SEED_BYTES:
        raise SecAggError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise SecAggError(f"mask length must be >= 0, got {length}")
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedledger/secagg/prg/v1/" + label
    ).derive(seed)
    encryptor = Cipher(algorithms.AES256(key), modes.CTR(_ZERO_IV)).encryptor()
    stream = encryptor.update(bytes(4 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
