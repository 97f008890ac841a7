"""The stacker-queue command line.

Connection: --dsn, else DATABASE_URL, else libpq's PG* variables.
Exit status: 0 success; 1 a failure (connection, SQL, demo); 2 usage error;
3 ``status`` found pending migrations or changed objects; 4 not found;
5 conflict; 6 permission denied; 7 invalid input. Failures print one line
to stderr ("stacker-queue: <reason>"), never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import Client
from .errors import Conflict, InvalidInput, NotFound, PermissionDenied, StackerQueueError
from .migrate import Installer
from .models import AppStatus, Command, QueueStats
from .templates import DEFAULT_SCHEMA, Renderer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES: dict[type[StackerQueueError], int] = {
    NotFound: 4,
    Conflict: 5,
    PermissionDenied: 6,
    InvalidInput: 7,
}


def resolve_conninfo(dsn: str | None) -> str:
    """--dsn, else DATABASE_URL, else "" (libpq's PG* environment variables)."""
    return dsn or os.environ.get("DATABASE_URL", "")


class Failure(click.ClickException):
    """An expected failure: one line on stderr and an exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click: a class default

    def show(self, file: Any = None) -> None:
        click.echo(f"stacker-queue: {self.message}", err=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Group(click.Group):
    """Turns the errors a command may expect into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise  # --help and ctx.exit(): click's Exit is a RuntimeError
        except StackerQueueError as exc:
            raise Failure(exc.message, EXIT_CODES.get(type(exc), 1)) from None
        except psycopg.OperationalError as exc:
            raise Failure(f"cannot connect or lost the connection: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
            raise Failure(f"{_first_line(exc)}{state}") from None
        except (RuntimeError, ValueError, FileNotFoundError) as exc:
            raise Failure(_first_line(exc)) from None


def _fail(message: str, code: int = 1) -> NoReturn:
    raise Failure(message, code)


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
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
actor_option = click.option(
    "--actor",
    envvar="STACKER_QUEUE_ACTOR",
    default=None,
    help="Who does it, for audit_log.actor (default: $STACKER_QUEUE_ACTOR, else the role).",
)


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def _client(dsn: str | None, schema: str, actor: str | None = None) -> Iterator[Client]:
    """A client on one plain connection: a CLI call fails fast on a wrong DSN."""
    conn = psycopg.connect(resolve_conninfo(dsn), autocommit=True, connect_timeout=10)
    try:
        yield Client(conn, schema=schema, actor=actor)
    finally:
        conn.close()


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log queue events and SQL steps (INFO).")
@click.version_option(package_name="stacker-queue")
def main(verbose: bool) -> None:
    """stacker-queue: Stacker's command queue inside PostgreSQL.

    Exit status: 0 ok, 1 failure, 2 usage, 3 status not up to date, 4 not
    found, 5 conflict, 6 permission denied, 7 invalid input.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- installing ---------------------------------------------------------------------------
@main.command()
@dsn_option
@schema_option
def migrate(dsn: str | None, schema: str) -> None:
    """Install or upgrade the schema (idempotent)."""
    report = Installer(resolve_conninfo(dsn), schema).migrate()
    click.echo(report.summary())


@main.command()
@dsn_option
@schema_option
@click.option("--count", default=1, show_default=True, help="Migrations to undo.")
@click.option("--all", "undo_all", is_flag=True, help="Undo every migration.")
def rollback(dsn: str | None, schema: str, count: int, undo_all: bool) -> None:
    """Undo the last migration (or --count N, or --all)."""
    undone = Installer(resolve_conninfo(dsn), schema).rollback(0 if undo_all else count)
    click.echo("Rolled back: " + ", ".join(undone) if undone else "Nothing to roll back.")


@main.command()
@schema_option
def render(schema: str) -> None:
    """Print the SQL of a full install, exactly as migrate applies it."""
    click.echo(Renderer(schema).full_install(), nl=False)


@main.command()
@dsn_option
@schema_option
@json_option
def status(dsn: str | None, schema: str, as_json: bool) -> None:
    """Applied and pending migrations; repeatable objects that differ (exit 3)."""
    st = Installer(resolve_conninfo(dsn), schema).status()
    out: dict[str, Any] = {
        "applied": st.applied,
        "pending": st.pending,
        "changed": st.changed_repeatables,
    }
    if as_json:
        _json({**out, "up_to_date": st.up_to_date})
    else:
        for key, values in out.items():
            click.echo(f"{key}: {', '.join(values) if values else '-'}")
    if not st.up_to_date:
        sys.exit(3)


# -- operating ----------------------------------------------------------------------------
def _ago(at: datetime | None) -> str:
    if at is None:
        return "-"
    seconds = (datetime.now(UTC) - at).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _stats_table(rows: list[QueueStats]) -> Table:
    table = Table(title=f"queue_stats at {datetime.now().strftime('%H:%M:%S')}")
    table.add_column("deployment")
    for name in ("queued", "in flight", "expired leases"):
        table.add_column(name, justify="right")
    table.add_column("oldest queued")
    table.add_column("agent last seen")
    for r in rows:
        table.add_row(
            r.deployment_hash,
            str(r.queued),
            str(r.in_flight),
            f"[red]{r.expired_leases}[/]" if r.expired_leases else "0",
            _ago(r.oldest_queued_at),
            _ago(r.agent_last_seen),
        )
    if not rows:
        table.add_row("(no deployments)", "", "", "", "", "")
    return table


@main.command()
@dsn_option
@schema_option
@click.argument("deployment_hash", required=False)
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--count", type=int, default=None, help="With --watch: stop after N refreshes.")
@json_option
def stats(
    dsn: str | None,
    schema: str,
    deployment_hash: str | None,
    watch: bool,
    interval: float,
    count: int | None,
    as_json: bool,
) -> None:
    """The queue_stats view: per deployment, queued and in-flight commands,
    the oldest queued one, expired leases, when its agent was last seen."""
    with _client(dsn, schema) as client:
        if not watch:
            rows = client.stats(deployment_hash)
            if as_json:
                _json([r.to_dict() for r in rows])
            else:
                _console().print(_stats_table(rows))
            return
        refreshes = 0
        if as_json:  # one JSON document per line and refresh
            while count is None or refreshes < count:
                rows = client.stats(deployment_hash)
                click.echo(json.dumps([r.to_dict() for r in rows], default=str), nl=True)
                refreshes += 1
                if count is None or refreshes < count:
                    time.sleep(interval)
            return
        console = _console()
        try:
            with Live(console=console, auto_refresh=False) as live:
                while count is None or refreshes < count:
                    live.update(_stats_table(client.stats(deployment_hash)), refresh=True)
                    refreshes += 1
                    if count is None or refreshes < count:
                        time.sleep(interval)
        except KeyboardInterrupt:
            pass


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_object(text: str | None, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        _fail(f"--{name} is not JSON: {exc}", 2)
    if not isinstance(value, dict):
        _fail(f"--{name} must be a JSON object", 2)
    return value


def _command_table(cmd: Command) -> Table:
    table = Table(show_header=False, title=f"command {cmd.command_id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in cmd.to_dict().items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        table.add_row(key, "-" if value is None else str(value))
    return table


@main.command()
@dsn_option
@schema_option
@actor_option
@click.argument("deployment_hash")
@click.argument("command_type")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="A parameter (VALUE parsed as JSON when it is JSON); repeatable.",
)  # fmt: skip
@click.option("--parameters", metavar="JSON", help="All parameters as a JSON object.")
@click.option("--priority", type=click.Choice(["low", "normal", "high", "critical"]))
@click.option("--idempotency-key")
@click.option("--timeout-seconds", type=int)
@click.option("--scheduled-for", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]))
@click.option("--max-attempts", type=int)
@click.option("--command-id")
@click.option("--metadata", metavar="JSON", help="Metadata as a JSON object.")
@json_option
def create(
    dsn: str | None,
    schema: str,
    actor: str | None,
    deployment_hash: str,
    command_type: str,
    params: tuple[str, ...],
    parameters: str | None,
    priority: str | None,
    idempotency_key: str | None,
    timeout_seconds: int | None,
    scheduled_for: datetime | None,
    max_attempts: int | None,
    command_id: str | None,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Queue a command for a deployment's agent, e.g.

    stacker-queue create DEPLOYMENT health -p app_code=fastapi
    """
    values = _json_object(parameters, "parameters") or {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--param {item!r} is not KEY=VALUE", 2)
        values[key] = _parse_value(raw)
    if scheduled_for is not None and scheduled_for.tzinfo is None:
        scheduled_for = scheduled_for.astimezone()  # local time, as typed
    with _client(dsn, schema, actor) as client:
        cmd = client.create_command(
            deployment_hash,
            command_type,
            values,
            priority,
            None,
            idempotency_key,
            timeout_seconds,
            scheduled_for,
            max_attempts,
            command_id,
            _json_object(metadata, "metadata"),
        )
    if as_json:
        _json(cmd.to_dict())
    else:
        click.echo(
            f"{cmd.command_id} {cmd.status}: {cmd.type} for {cmd.deployment_hash} "
            f"(priority {cmd.priority}, created by {cmd.created_by})"
        )


@main.command()
@dsn_option
@schema_option
@click.argument("command_id")
@json_option
def show(dsn: str | None, schema: str, command_id: str, as_json: bool) -> None:
    """One command, every field."""
    with _client(dsn, schema) as client:
        cmd = client.get_command(command_id)
    if as_json:
        _json(cmd.to_dict())
    else:
        _console().print(_command_table(cmd))


@main.command(name="list")
@dsn_option
@schema_option
@click.argument("deployment_hash")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "executing", "completed", "failed", "cancelled"]),
)
@click.option("--limit", type=int, default=None, help="At most N (default 100).")
@json_option
def list_(
    dsn: str | None,
    schema: str,
    deployment_hash: str,
    status: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """A deployment's newest commands."""
    with _client(dsn, schema) as client:
        rows = client.list_commands(deployment_hash, status, limit)
    if as_json:
        _json([c.to_dict() for c in rows])
        return
    table = Table(title=f"commands of {deployment_hash}", title_justify="left")
    for name in ("command_id", "type", "status", "priority", "attempts", "created", "by"):
        table.add_column(name)
    for c in rows:
        table.add_row(
            c.command_id,
            c.type,
            c.status,
            c.priority,
            f"{c.attempts}/{c.max_attempts}",
            _ago(c.created_at),
            c.created_by,
        )
    _console().print(table)


@main.command()
@dsn_option
@schema_option
@actor_option
@click.argument("command_id")
@click.option("--reason", help="Why (kept in the command's error).")
@json_option
def cancel(
    dsn: str | None,
    schema: str,
    actor: str | None,
    command_id: str,
    reason: str | None,
    as_json: bool,
) -> None:
    """Cancel a queued, sent or executing command (exit 5 when it already finished)."""
    with _client(dsn, schema, actor) as client:
        cmd = client.cancel_command(command_id, reason)
    if as_json:
        _json(cmd.to_dict())
    else:
        click.echo(f"{cmd.command_id} {cmd.status}")


def _app_table(deployment_hash: str, rows: list[AppStatus]) -> Table:
    table = Table(title=f"apps of {deployment_hash}", title_justify="left")
    for name in ("app", "status", "state", "checked", "logs", "pending command", "agent seen"):
        table.add_column(name)
    for r in rows:
        logs = r.logs[-3:]
        table.add_row(
            r.app_code,
            r.status,
            r.state or "",
            _ago(r.checked_at),
            "\n".join(logs) + (f"\n(+{len(r.logs) - 3} more)" if len(r.logs) > 3 else ""),
            r.pending_command_id or "-",
            _ago(r.agent_last_seen),
        )
    if not rows:
        table.add_row("(no apps)", "", "", "", "", "", "")
    return table


@main.command(name="app-status")
@dsn_option
@schema_option
@click.argument("deployment_hash")
@json_option
def app_status(dsn: str | None, schema: str, deployment_hash: str, as_json: bool) -> None:
    """The status panel of a deployment: each app's status, logs and state
    (reported, stale, awaiting_execution, awaiting_agent)."""
    with _client(dsn, schema) as client:
        rows = client.app_status(deployment_hash)
    if as_json:
        _json([r.to_dict() for r in rows])
    else:
        _console().print(_app_table(deployment_hash, rows))


# -- the demo -------------------------------------------------------------------------------
@main.command()
@dsn_option
@click.option("--keep", is_flag=True, help="Keep the scratch schema afterwards.")
@click.option(
    "--embedded",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="auto: an embedded PostgreSQL when no database is configured or reachable.",
)
def demo(dsn: str | None, keep: bool, embedded: str) -> None:
    """The seed's flow end to end, narrated: migrate, an agent woken by a
    health command for fastapi, its report, the panel and the audit trail."""
    from .demo import DemoError, run_demo

    try:
        run_demo(resolve_conninfo(dsn), keep=keep, embedded=embedded, console=_console())
    except DemoError as exc:
        _fail(str(exc))


# -- adopting a live Stacker database, exporting for sqlx ------------------------------------
@main.command()
@dsn_option
@click.option(
    "--schema", required=True, help="The schema holding Stacker's tables (usually public)."
)
@click.option("--dry-run", is_flag=True, help="Print the SQL and the counts, then roll back.")
@click.option(
    "--drop-orphans", is_flag=True, help="Delete queue rows that name no command (else refuse)."
)
@click.option(
    "--legacy-role",
    default=None,
    help="The role Stacker's old binary logs in as (default: the owner of commands).",
)
@click.option(
    "--no-legacy-role",
    is_flag=True,
    help="The old binary no longer runs: no row-level security for it.",
)
@click.option(
    "--lock-timeout",
    default="5s",
    show_default=True,
    help="How long to wait for the tables' locks before giving up (nothing changed).",
)
@click.option(
    "--terminate-legacy-sessions",
    is_flag=True,
    help="End the old binary's sessions that predate adoption once idle (fresh prepared "
    "statements after column type changes).",
)
@json_option
def adopt(
    dsn: str | None,
    schema: str,
    dry_run: bool,
    drop_orphans: bool,
    legacy_role: str | None,
    no_legacy_role: bool,
    lock_timeout: str,
    terminate_legacy_sessions: bool,
    as_json: bool,
) -> None:
    """Adopt Stacker's live command tables in place, in one transaction
    (docs/adopting-stacker.md). Afterwards migrate has nothing to do."""
    from .adopt import Adopter, AdoptError

    if legacy_role and no_legacy_role:
        _fail("--legacy-role and --no-legacy-role exclude each other", 2)
    adopter = Adopter(
        resolve_conninfo(dsn),
        schema,
        legacy_role=legacy_role,
        legacy_guard=not no_legacy_role,
        drop_orphans=drop_orphans,
        lock_timeout=lock_timeout,
        terminate_legacy_sessions=terminate_legacy_sessions,
    )
    try:
        report = adopter.adopt(dry_run=dry_run)
    except AdoptError as exc:
        _fail(str(exc))
    if as_json:
        _json(
            {
                "schema": report.schema,
                "dry_run": report.dry_run,
                "state": report.state,
                "changed": report.changed,
                "counts": report.counts,
                "marked_migrations": report.marked_migrations,
                "applied_repeatables": report.applied_repeatables,
                "legacy_role": report.legacy_role,
                "kept": report.kept,
                "warnings": report.warnings,
                "terminated_sessions": report.terminated_sessions,
                "statements": report.statements,
                "seconds": report.seconds,
            }
        )
        return
    if dry_run:
        click.echo(f"-- stacker-queue adopt --dry-run: the SQL adoption runs on schema {schema}")
        for statement in report.statements:
            click.echo(statement.rstrip().rstrip(";") + ";\n")
        click.echo("\n".join(f"-- {line}" for line in report.summary().splitlines()))
        click.echo("-- dry run: rolled back, nothing was changed")
    else:
        click.echo(report.summary())


@main.command()
@click.option("--format", "fmt", type=click.Choice(["sqlx"]), required=True, help="Migration tool.")
@click.option("--schema", required=True, help="The schema to install into (Stacker: public).")
@click.option(
    "--dsn",
    envvar="DATABASE_URL",
    default=None,
    help="Read _sqlx_migrations there to number after Stacker's latest migration "
    "(default: $DATABASE_URL; without one, a fixed base).",
)
@click.option("--after", type=int, default=None, help="Number the files after this version.")
@click.argument("directory", type=click.Path(file_okay=False))
def export(fmt: str, schema: str, dsn: str | None, after: int | None, directory: str) -> None:
    """Write the install as sqlx migrations (<version>_<name>.up.sql and
    .down.sql) into DIRECTORY, for sqlx migrate run."""
    from pathlib import Path

    from .export import export_sqlx

    try:
        report = export_sqlx(Path(directory), schema, conninfo=dsn or None, after=after)
    except FileExistsError as exc:
        _fail(str(exc))
    click.echo(report.summary())
