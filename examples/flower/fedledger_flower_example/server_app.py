"""The ServerApp: Flower's usual loop with FedLedgerStrategy instead of FedAvg.

Local mode (``api-url`` empty): fedledger's robust rule, scores and reputation run here, on the digits
holdout the server keeps. Platform mode (``api-url`` set): every round is a fedledger round, aggregated by the
deployment and recorded on-chain; clients are paid in its reward token.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from aggregator.flower import FedLedgerStrategy
from fedledger.datasets import digits_split
from fedledger.flower import to_record
from fedledger_flower_example.task import PARAM_NAMES, initial_parameters

app = ServerApp()


def make_strategy(run: dict, num_nodes: int) -> FedLedgerStrategy:
    flower = {"min_train_nodes": num_nodes, "min_available_nodes": num_nodes, "fraction_evaluate": 0.0}
    if run["api-url"]:
        from client.flower import FedLedgerPlatform
        from client.wallet import Wallet

        platform = FedLedgerPlatform(
            str(run["api-url"]),
            Wallet.load(str(run["operator-key-file"])),
            rpc_url=str(run["rpc-url"]) or None,
            deployments=str(run["deployments"]) or None,
            trusted_model_signer=str(run["model-signer"]) or None,
            round_seconds=int(run["round-seconds"]),
        )
        return FedLedgerStrategy(platform=platform, **flower)
    _, _, X_holdout, y_holdout = digits_split()
    takes_share = run["strategy"] in ("krum", "multi_krum", "bulyan", "trimmed_mean")
    params = {"byzantine_fraction": float(run["byzantine-fraction"])} if takes_share else {}
    return FedLedgerStrategy(str(run["strategy"]), holdout=(X_holdout, y_holdout), **params, **flower)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = dict(context.run_config)
    num_nodes = int(run.get("num-nodes", 0)) or len(list(grid.get_node_ids()))
    strategy = make_strategy(run, num_nodes)
    initial = to_record(dict(zip(PARAM_NAMES, initial_parameters(), strict=True)))
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(run["num-server-rounds"]))
    if run["report-path"]:
        path = Path(str(run["report-path"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(strategy.report(), indent=2))
