"""Operator commands: ``fedledger rounds open|close|list`` and ``fedledger models current|rollback``.

They sign in to the API with the operator's wallet (Sign-In with Ethereum; its address must be in the API's
FEDLEDGER_OPERATOR_ADDRESSES): ``--key-file`` or FEDLEDGER_OPERATOR_KEY_FILE, or on the dev chain the dev
operator account that ``fedledger run`` configures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedledger.config import Environment, get_settings
from fedledger.secagg.mode import RoundMode

if TYPE_CHECKING:
    from datetime import datetime

    from fedledger.api.client import FedLedgerApi

rounds_app = typer.Typer(
    help="Operator: open training rounds, close them, list them.", no_args_is_help=True, add_completion=False
)
models_app = typer.Typer(
    help="Operator: the active model version, and rolling back to an earlier one.",
    no_args_is_help=True,
    add_completion=False,
)

ApiOption = Annotated[
    str | None, typer.Option("--api", help="API base URL (default: FEDLEDGER_API_URL).", show_default=False)
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="FEDLEDGER_OPERATOR_KEY_FILE",
        help="The operator's key file (0x-hex key or encrypted keystore). Default on the dev chain: the dev "
        "operator account `fedledger run` configures.",
        show_default=False,
    ),
]


class OperatorError(RuntimeError):
    """A precondition of an operator command; the message says what to do."""


def _wallet(key_file: Path | None) -> Any:
    from client.wallet import Wallet
    from fedledger.devkeys import DEPLOYER_INDEX, dev_private_key

    if key_file is not None:
        return Wallet.from_file(key_file)
    settings = get_settings()
    if settings.is_dev_chain and settings.env != Environment.production:
        return Wallet(dev_private_key(DEPLOYER_INDEX))
    raise OperatorError(
        "no operator key: pass --key-file PATH or set FEDLEDGER_OPERATOR_KEY_FILE "
        "(the dev operator account is used on the dev chain only)"
    )


@contextlib.contextmanager
def _operator(api: str | None, key_file: Path | None, sign_in: bool = True) -> Iterator[FedLedgerApi]:
    """The API client, signed in as the operator; any failure becomes one line on stderr and exit code 1."""
    from fedledger.api.client import FedLedgerApi
    from fedledger.api.errors import ClientError

    try:
        client = FedLedgerApi(api or get_settings().api_url, wallet=_wallet(key_file) if sign_in else None)
        with contextlib.closing(client):
            if sign_in:
                client.login()
            yield client
    except (ClientError, OperatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@rounds_app.command("open")
def open_round(
    duration: Annotated[
        int | None,
        typer.Option(help="Seconds until the deadline (default: the governed round duration).", min=1),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(
            help=(
                "Fewest updates the deadline's close aggregates (default: governed). Never closes the round "
                "early: that takes every active organization's update."
            ),
            min=1,
        ),
    ] = None,
    api: ApiOption = None,
    key_file: KeyFileOption = None,
) -> None:
    """Open a round on the active model, with the governed parameters the chain holds now."""
    with _operator(api, key_file) as client:
        round_ = client.open_round(duration, quorum)
    typer.echo(
        f"round {round_.id} is OPEN on model v{round_.model_version}: strategy {round_.strategy}, "
        f"mode {RoundMode.of(round_.params).label()}, quorum {round_.quorum}, "
        f"deadline {_when(round_.deadline)} UTC"
    )
    typer.echo(
        "organizations can now submit (`fedledger client train-and-submit`, or `fedledger client run`)"
    )


@rounds_app.command("close")
def close_round(
    round_id: Annotated[int, typer.Argument(help="The OPEN round to close now.", min=1)],
    api: ApiOption = None,
    key_file: KeyFileOption = None,
) -> None:
    """Close an OPEN round now: the worker aggregates the updates it has, or fails the round if too few."""
    with _operator(api, key_file) as client:
        round_ = client.close_round(round_id)
    typer.echo(
        f"round {round_.id} closes now with {round_.submissions} update(s) (quorum {round_.quorum}); "
        "no deadline extension follows: `fedledger rounds list` shows the outcome"
    )


@rounds_app.command("list")
def list_rounds(
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=1000)] = 20,
    api: ApiOption = None,
) -> None:
    """The most recent rounds: status, strategy, model, what the close kept and the holdout accuracy."""
    with _operator(api, None, sign_in=False) as client:
        rounds = client.round_history(limit=limit)
    if not rounds:
        typer.echo("no round yet: open one with `fedledger rounds open`")
        return
    typer.echo(
        f"{'round':>8}  {'status':<9} {'strategy':<14} {'model':>5}  {'kept':>4} {'excl':>4}  accuracy"
    )
    for r in rounds:
        a = r.aggregation
        accuracy = a.holdout_accuracy if a else None
        line = (
            f"{r.id:>8}  {r.status:<9} {r.strategy:<14} {'v' + str(r.model_version):>5}  "
            f"{a.kept if a else '-':>4} {a.excluded if a else '-':>4}  "
            f"{'-' if accuracy is None else f'{accuracy:.3f}'}"
        )
        if a and a.rolled_back:
            line += "  (new model rolled back)"
        # Only a FAILED round failed (rounds closed before this rule kept an extension's note there).
        if r.failure_reason and r.status == "FAILED":
            line += f"  failed: {r.failure_reason}"
        elif r.extensions:
            line += f"  ({r.extensions} deadline extension(s))"
        typer.echo(line)


@models_app.command("current")
def current_model(api: ApiOption = None) -> None:
    """The active model version and where it came from."""
    with _operator(api, None, sign_in=False) as client:
        model = client.current_model()
    origin = f"round {model.produced_by_round}" if model.produced_by_round else "genesis"
    typer.echo(f"model v{model.version} ({model.status}, from {origin}) sha256:{model.weights_hash}")


@models_app.command("rollback")
def rollback(
    version: Annotated[int, typer.Argument(help="The earlier model version to make active again.", min=1)],
    api: ApiOption = None,
    key_file: KeyFileOption = None,
) -> None:
    """Make an earlier model version active again (recorded in the audit log); the next round trains on it."""
    with _operator(api, key_file) as client:
        model = client.rollback_model(version)
    typer.echo(f"model v{model.version} is active again; rounds opened from now on train on it")


def register(app: typer.Typer) -> None:
    app.add_typer(rounds_app, name="rounds")
    app.add_typer(models_app, name="models")
