"""Mask expansion: a 32-byte seed into ring elements with AES-256 in counter mode (a standard PRG).

AES-CTR rather than SHAKE-256 because it runs at memory speed with AES-NI (a group member expands ``k``
masks of ``d`` words per round; at d = 1M that is 4 MB each). The keystream is taken from AES-256-GCM's
encryption of zeros, which is AES-256-CTR from the counter block ``nonce || 2`` (a test checks the two
are equal byte for byte): OpenSSL's stitched GCM code runs several times faster here than its plain CTR
mode. The key is HKDF-SHA256 of the seed with a label naming the mask's purpose, so a pairwise seed and
a self seed never expand to the same stream; the nonce is fixed because every key makes one stream only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.secagg.errors import SecAggError

SEED_BYTES = 32
_NONCE = bytes(12)
# cryptography's AEAD refuses inputs of 2^31 bytes or more.
_MAX_STREAM_BYTES = 2**31 - 1


@lru_cache(maxsize=4)
def _zeros(size: int) -> bytes:
    # One zero buffer per length, reused: a fresh one costs a page fault per 4 KiB on every mask.
    return bytes(size)


def expand_mask(seed: bytes, length: int, label: bytes) -> np.ndarray:
    """``length`` uint32 words of the keystream of AES-256-CTR keyed by HKDF(seed, label)."""
    if len(seed) != SEED_BYTES:
        raise SecAggError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise SecAggError(f"mask length must be >= 0, got {length}")
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedledger/secagg/prg/v1/" + label
    ).derive(seed)
    if 4 * length > _MAX_STREAM_BYTES:
        raise SecAggError(
            f"a mask of {length} words is longer than one AES-GCM stream ({_MAX_STREAM_BYTES} bytes)"
        )
    sealed = AESGCM(key).encrypt(_NONCE, _zeros(4 * length), None)
    # The last 16 bytes are GCM's tag, not keystream.
    return np.frombuffer(sealed, dtype="<u4", count=length).astype(np.uint32, copy=False)
