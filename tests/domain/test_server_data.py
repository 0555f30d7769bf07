"""The rule that refuses rounds on too little server data (fedledger.domain.rounds.ServerData)."""

from __future__ import annotations

import pytest

from fedledger.config import Settings
from fedledger.domain.errors import Conflict
from fedledger.domain.rounds import ServerData


def test_too_few_holdout_examples_are_refused_with_both_sizes() -> None:
    with pytest.raises(Conflict, match="has 199 labelled examples and rounds need at least 200") as refused:
        ServerData("holdout.csv", 199, 200).check()
    assert refused.value.code == "holdout_too_small"
    ServerData("holdout.csv", 200, 200).check()


def test_the_default_minimum_resolves_a_ten_point_accuracy_change_and_the_bundled_task_meets_it() -> None:
    needed = Settings(_env_file=None).min_holdout_examples  # type: ignore[call-arg]
    validation = needed // 2
    # Two standard errors of a 0/1 outcome over the validation half: at most 10 accuracy points.
    assert 2 * 0.5 / validation**0.5 <= 0.1
    ServerData("digits", 360, needed).check()
