"""The stacker-queue command line."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
import psycopg

from .migrate import Installer
from .templates import DEFAULT_SCHEMA, Renderer


def resolve_conninfo(dsn: str | None) -> str:
    """--dsn, else DATABASE_URL, else "" (libpq's PG* environment variables)."""
    return dsn or os.environ.get("DATABASE_URL", "")


class Context:
    def __init__(self, dsn: str | None, schema: str) -> None:
        self.conninfo = resolve_conninfo(dsn)
        self.schema = schema


dsn_option = click.option(
    "--dsn",
    envvar="DATABASE_URL",
    default=None,
    help="libpq connection string or URL (default: $DATABASE_URL, then PG* variables).",
)
schema_option = click.option(
    "--schema",
    default=DEFAULT_SCHEMA,
    show_default=True,
    envvar="STACKER_QUEUE_SCHEMA",
    help="Schema to install into / operate on.",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log queue events and SQL steps (INFO).")
def main(verbose: bool) -> None:
    """stacker-queue: Stacker's command queue inside PostgreSQL."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> None:
    click.echo(f"stacker-queue: {message}", err=True)
    sys.exit(1)


@main.command()
@dsn_option
@schema_option
def migrate(dsn: str | None, schema: str) -> None:
    """Install or upgrade the schema (idempotent)."""
    try:
        report = Installer(resolve_conninfo(dsn), schema).migrate()
    except (psycopg.Error, RuntimeError, ValueError) as exc:
        _fail(str(exc).strip().splitlines()[0])
        return
    click.echo(report.summary())


@main.command()
@dsn_option
@schema_option
@click.option("--count", default=1, show_default=True, help="Migrations to undo.")
@click.option("--all", "undo_all", is_flag=True, help="Undo every migration.")
def rollback(dsn: str | None, schema: str, count: int, undo_all: bool) -> None:
    """Undo the last migration (or --count N, or --all)."""
    try:
        undone = Installer(resolve_conninfo(dsn), schema).rollback(0 if undo_all else count)
    except (psycopg.Error, RuntimeError, ValueError) as exc:
        _fail(str(exc).strip().splitlines()[0])
        return
    click.echo("Rolled back: " + ", ".join(undone) if undone else "Nothing to roll back.")


@main.command()
@schema_option
def render(schema: str) -> None:
    """Print the SQL of a full install, exactly as migrate applies it."""
    try:
        click.echo(Renderer(schema).full_install(), nl=False)
    except ValueError as exc:
        _fail(str(exc))


@main.command()
@dsn_option
@schema_option
def status(dsn: str | None, schema: str) -> None:
    """Applied and pending migrations; repeatable objects that differ."""
    try:
        st = Installer(resolve_conninfo(dsn), schema).status()
    except (psycopg.Error, RuntimeError, ValueError) as exc:
        _fail(str(exc).strip().splitlines()[0])
        return
    out: dict[str, Any] = {
        "applied": st.applied,
        "pending": st.pending,
        "changed": st.changed_repeatables,
    }
    for key, values in out.items():
        click.echo(f"{key}: {', '.join(values) if values else '-'}")
    if not st.up_to_date:
        sys.exit(3)
