"""``fedledger db upgrade`` and ``fedledger audit verify``."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply every migration (idempotent)."""
    from db.migrate import upgrade as run
    from fedledger.config import get_settings

    url = get_settings().resolved_database_url
    run(url)
    typer.echo(f"database at {url.split('@')[-1]} is up to date")


@audit_app.command("verify")
def verify(
    offline: bool = typer.Option(
        False, "--offline", help="Check the hash chain only, without the heads anchored on-chain."
    ),
) -> None:
    """Recompute the audit chain and check it against the heads posted rounds anchored on-chain; exit 1 if
    any entry was altered, inserted or removed, or the log was cut or rewritten."""
    from db.session import session_factory
    from fedledger.chain.deployments import Deployments
    from fedledger.chain.reader import ChainReader
    from fedledger.config import get_settings
    from fedledger.domain.audit import verify_chain

    settings = get_settings()
    anchors = []
    if not offline:
        try:
            reader = ChainReader(settings.chain_rpc_url, Deployments.load(settings.resolved_deployments_file))
            reader.check()
            anchors = reader.audit_anchors()
        except Exception as exc:  # noqa: BLE001 - any failure to read the chain is reported the same way
            typer.echo(
                f"cannot read the audit anchors from the chain ({exc}); use --offline to skip", err=True
            )
            raise typer.Exit(2) from exc
    with session_factory(settings.resolved_database_url)() as session:
        result = verify_chain(session, anchors)
    if result.ok:
        anchored = (
            "hash chain only"
            if offline
            else f"{result.anchors_checked} of {len(anchors)} on-chain anchors matched"
        )
        typer.echo(f"audit log intact: {result.entries} entries ({anchored})")
        if not offline and result.unanchored_entries:
            typer.echo(
                f"{result.unanchored_entries} entries after the last anchor (from id {result.first_unanchored_id})"
                " are protected by the hash chain only until a later anchor covers them"
            )
        return
    where = f"at entry {result.first_bad_id}" if result.first_bad_id is not None else "at its end"
    typer.echo(
        f"audit log BROKEN {where} ({result.reason}); {result.entries} entries verified before it",
        err=True,
    )
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(audit_app, name="audit")
