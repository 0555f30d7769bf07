"""Subcommands of ``fedledger``: one module each, each with ``register(app: typer.Typer)``."""
