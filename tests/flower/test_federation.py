"""A real Flower deployment (SuperLink, 7 SuperNodes, ServerApp and ClientApp processes started by Flower)
running FedLedgerStrategy: 2 of the 7 clients are Byzantine."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType

import flwr
import pytest

pytestmark = pytest.mark.slow

CLIENTS, BYZANTINE, ROUNDS = 7, 2, 4


def test_multi_krum_federation_excludes_the_attackers(launcher: ModuleType, tmp_path: Path) -> None:
    started = time.monotonic()
    report, seconds = launcher.run_federation(
        clients=CLIENTS,
        byzantine=BYZANTINE,
        attack="signflip",
        rounds=ROUNDS,
        # The governed default Byzantine share: f = floor(0.3 n), 2 of the 7 clients, and 1 once the
        # attackers' reputation falls below min_reputation and only the 5 honest clients are eligible.
        run_config={"strategy": "multi_krum", "byzantine-fraction": 0.3},
        workdir=tmp_path,
    )
    total = time.monotonic() - started
    assert [r["status"] for r in report] == ["aggregated"] * ROUNDS
    attackers = set(range(CLIENTS - BYZANTINE, CLIENTS))
    for entry in report:
        assert len(entry["nodes"]) == CLIENTS
        by_partition = {int(n["metrics"]["partition-id"]): n for n in entry["nodes"]}
        assert set(by_partition) == set(range(CLIENTS))
        excluded = {p for p, n in by_partition.items() if not n["kept"]}
        # Multi-Krum keeps n - f of the eligible clients: once the attackers' reputation is below
        # min_reputation (5 eligible, f = 1) it also leaves out the one honest client furthest from the rest.
        assert attackers <= excluded and len(excluded - attackers) <= 1, entry
        # Below every honest client's honesty, not a fixed 50: the close's line search (up to 4x the
        # aggregate) brings the model near convergence by round 3, where honest updates scatter widely
        # and the honesty score allows for that scatter (a sign-flipped one then scores 60-75 against 100).
        honest_honesty = min(by_partition[p]["honesty"] for p in range(CLIENTS - BYZANTINE))
        for p in attackers:
            assert by_partition[p]["honesty"] < honest_honesty
            assert by_partition[p]["fitness"] < by_partition[0]["fitness"]
    accuracies = [r["holdout_accuracy"] for r in report]
    assert accuracies[0] > 0.8 and accuracies[-1] >= 0.88, accuracies
    final = {int(n["metrics"]["partition-id"]): n["reputation"] for n in report[-1]["nodes"]}
    assert max(final[p] for p in attackers) < min(final[p] for p in range(CLIENTS - BYZANTINE))
    print(
        f"\nflwr {flwr.__version__}: {CLIENTS} clients ({BYZANTINE} sign-flip), {ROUNDS} rounds multi_krum (byzantine_fraction 0.3), "
        f"holdout accuracy {[round(a, 3) for a in accuracies]}, flwr run {seconds:.1f} s, total {total:.1f} s"
    )


def test_example_runs_as_the_readme_says(tmp_path: Path) -> None:
    """`python examples/flower/run.py --quick` (README "Using fedledger from Flower")."""
    import subprocess
    import sys

    from tests.flower.conftest import EXAMPLE

    # As the README says it: no --workdir. The logs folder it prints must still exist afterwards.
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print("\n" + result.stdout)
    lines = result.stdout.splitlines()
    (logs,) = [Path(line.removeprefix("logs: ")) for line in lines if line.startswith("logs: ")]
    assert logs.is_dir() and logs.parent == tmp_path and any(logs.iterdir()), result.stdout
    assert f"logs kept in {logs}" in lines
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == 3 and all("aggregated" in r and "excluded 2" in r for r in rounds), result.stdout
    excluded = [line for line in lines if "excluded node" in line]
    assert excluded and all("(partition 3)" in e or "(partition 4)" in e for e in excluded), result.stdout
