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
def verify() -> None:
    """Recompute the audit chain; exit 1 if any entry was altered, inserted or removed."""
    from db.session import session_factory
    from fedledger.config import get_settings
    from fedledger.domain.audit import verify_chain

    with session_factory(get_settings().resolved_database_url)() as session:
        result = verify_chain(session)
    if result.ok:
        typer.echo(f"audit log intact: {result.entries} entries")
        return
    typer.echo(
        f"audit log BROKEN at entry {result.first_bad_id} ({result.reason}); {result.entries} entries verified before it",
        err=True,
    )
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(audit_app, name="audit")
