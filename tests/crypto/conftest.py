"""Shared fixtures: one server key per algorithm (RSA generation is slow), and a real update payload."""

from __future__ import annotations

import numpy as np
import pytest
from eth_account import Account

from fedledger.crypto.keys import KeyAlgorithm, ServerKeyPair, generate_server_key
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from fedledger.payload import Compression, encode_update

ALGORITHMS = list(KeyAlgorithm)
ORG_KEY = dev_private_key(FIRST_ORGANIZATION_INDEX)
ORG_ADDRESS = Account.from_key(ORG_KEY).address


@pytest.fixture(scope="session")
def server_keys() -> dict[KeyAlgorithm, ServerKeyPair]:
    return {algorithm: generate_server_key(algorithm) for algorithm in KeyAlgorithm}


@pytest.fixture(params=ALGORITHMS, ids=[a.value for a in ALGORITHMS])
def server_key(
    request: pytest.FixtureRequest, server_keys: dict[KeyAlgorithm, ServerKeyPair]
) -> ServerKeyPair:
    return server_keys[request.param]


@pytest.fixture(scope="session")
def delta() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "dense.weight": rng.normal(size=(16, 8)).astype(np.float32),
        "dense.bias": rng.normal(size=8).astype(np.float32),
    }


@pytest.fixture(scope="session", params=["dense", "topk-half"])
def update_payload(request: pytest.FixtureRequest, delta: dict[str, np.ndarray]) -> bytes:
    compression = Compression() if request.param == "dense" else Compression(topk_fraction=0.25, half=True)
    return encode_update(delta, compression)
