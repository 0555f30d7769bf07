"""Differential privacy in the secure-aggregation mode on the live stack (API, Celery worker, Hardhat
governance, PostgreSQL, Redis): the group range holds the members' noise, the SDK adds each member's share
before masking, and the worker charges the round at its worst group's multiplier."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from client.data import Dataset
from client.sdk import Organization
from client.wallet import Wallet
from db.models import Aggregation, SecAggGroup
from fedledger.devkeys import dev_private_key
from fedledger.domain.blob_backends import open_blob_store
from fedledger.privacy import epsilon_after
from fedledger.secagg.noise import MemberNoise, noise_evident
from fedledger.secagg.quantize import Quantizer
from tests.worker.conftest import ORGS, Platform
from tests.worker.secure_kit import Members, govern, mine

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def test_a_secure_round_with_dp_widens_its_range_to_hold_the_members_noise(platform: Platform) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    round_ = platform.open_round(duration=600, quorum=3, cohort=ORGS[:3])
    view = Members(platform, round_["id"], ORGS[:1]).view(ORGS[0])
    # Genesis DP settings (clip 1, multiplier 1), groups of 3 at threshold 2: each member adds std 1/sqrt(2).
    noise = MemberNoise.for_group(1.0, 1.0, 3, 2)
    assert view["clip"] == pytest.approx(noise.required_range(view["dimension"]))
    noise.check_fits(Quantizer(view["clip"], 3), view["dimension"])


@pytest.mark.celery
def test_the_sdk_noises_before_masking_and_the_worker_charges_the_worst_group(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    trio = ORGS[:3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    orgs = {
        i: Organization(Wallet(dev_private_key(i)), http=platform.client, w3=platform.w3, poll_interval=0.3)
        for i in trio
    }
    errors: dict[int, BaseException] = {}

    def take_part(i: int) -> None:
        X, y = platform.partitions[i]
        try:
            orgs[i].participate(Dataset(X.astype(np.float32), y), seed=i, timeout=240)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors[i] = exc

    threads = [threading.Thread(target=take_part, args=(i,)) for i in trio]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        mine(platform)  # the groups are drawn from the chain's next block
        time.sleep(1.0)
    for t in threads:
        t.join(timeout=5)
    assert errors == {}, errors
    final = platform.wait_for(round_["id"], {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final
    engine = sa.create_engine(platform.settings.resolved_database_url)
    with engine.connect() as connection:
        aggregation: Any = connection.execute(
            sa.select(Aggregation).where(Aggregation.round_id == round_["id"])
        ).one()
        group: Any = connection.execute(
            sa.select(SecAggGroup).where(SecAggGroup.round_id == round_["id"])
        ).one()
    engine.dispose()
    # One group of 3 at threshold 2, no dropout: z sqrt(3/2), the only DP round so far.
    worst = math.sqrt(3 / 2)
    assert aggregation.params["dp_mode"] == "distributed"
    assert aggregation.params["dp_effective_noise_multiplier"] == pytest.approx(worst)
    assert aggregation.epsilon_spent == pytest.approx(epsilon_after(worst, 1.0, 1, 1e-5))
    assert aggregation.dp_noise_std == pytest.approx(worst / 3)
    # What the server learned of the group carries the members' noise (far above three clipped updates).
    blobs = open_blob_store(platform.settings)
    mean = np.frombuffer(blobs.get(group.mean_hash), dtype="<f4")
    noise = MemberNoise.for_group(1.0, 1.0, 3, 2)
    assert noise_evident(mean, 3, noise)
    # Noise of std sqrt(3/2) / 3 = 0.41 per coordinate over 650: a norm near 10, against at most 1 without.
    assert float(np.linalg.norm(mean)) > 5.0
    for org in orgs.values():
        org.close()
