"""Differential privacy in the secure-aggregation mode on the live stack: the round's group range holds the
members' noise (API, Hardhat governance, PostgreSQL)."""

from __future__ import annotations

import pytest

from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.quantize import Quantizer
from tests.worker.conftest import ORGS, Platform
from tests.worker.secure_kit import Members, govern

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
