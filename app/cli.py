"""The ``fedledger`` command.

Each subcommand lives in its own module under :mod:`app.commands` and exposes
``register(app)``; this file only gathers them, so parts of the platform add commands without
touching each other's code.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from app import commands as command_modules

app = typer.Typer(
    name="fedledger",
    help="fedledger: federated learning paid, audited and governed on an Ethereum chain.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(command_modules.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"app.commands.{module_info.name}")
        module.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
