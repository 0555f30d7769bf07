"""``fedledger chain``: a local Hardhat node with the contracts deployed, in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedledger.config import get_settings


def chain(
    port: Annotated[int, typer.Option(help="RPC port of the node.")] = 8545,
    deployments_out: Annotated[
        Path | None, typer.Option(help="Where to write the deployments file (default: settings).")
    ] = None,
) -> None:
    """Start a Hardhat dev node, deploy every contract, write the deployments file, run until Ctrl-C."""
    from fedledger.chain.devnode import DevChain

    out = deployments_out or get_settings().resolved_deployments_file
    with DevChain(port=port) as node:
        deployments = node.deploy(out)
        typer.echo(f"dev chain {deployments.chain_id} on {node.rpc_url}; deployments in {out}")
        for name, address in deployments.addresses.items():
            typer.echo(f"  {name:<20} {address}")
        try:
            node.wait()
        except KeyboardInterrupt:
            typer.echo("stopping the dev chain")


def register(app: typer.Typer) -> None:
    app.command("chain")(chain)
