"""Test fixtures: a real PostgreSQL for every test, no mocks.

By default the suites run against the server that is already running
(pytest-postgresql's ``postgresql_noproc``; host, port and user from the usual
``--postgresql-*`` options or ``postgresql_*`` ini keys). The schema is
installed once per session into a template database, and every test gets a
fresh copy of it (``CREATE DATABASE ... TEMPLATE``).

On a laptop without a server, ``--pg-mode=proc`` (or STACKER_QUEUE_PG_MODE=proc)
starts a throw-away cluster with pytest-postgresql's ``postgresql_proc``;
``initdb`` refuses to run as root, so that mode is for non-root users.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor, PostgreSQLExecutor

from stacker_queue.migrate import Installer

# The Python wrapper suites' fixtures (client, aclient, make_agent, ...).
pytest_plugins = ["helpers_queue"]

ROOT = Path(__file__).resolve().parents[1]
SESSION_TAG = f"{os.getpid()}"
TEST_DBNAME = f"sq_test_{SESSION_TAG}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-mode",
        choices=["noproc", "proc"],
        default=os.environ.get("STACKER_QUEUE_PG_MODE", "noproc"),
        help="noproc: use the running server (default); proc: start one (non-root only).",
    )


def conninfo_of(host: str, port: Any, user: str, dbname: str, password: str | None = None) -> str:
    return psycopg.conninfo.make_conninfo(
        host=host, port=str(port), user=user, dbname=dbname, password=password or None
    )


def admin_conninfo(pg_server: Any) -> str:
    """The server's ``postgres`` database, for CREATE and DROP DATABASE."""
    return conninfo_of(
        pg_server.host, pg_server.port, pg_server.user, "postgres", pg_server.password
    )


@contextmanager
def nested_plans(conn: psycopg.Connection[Any], analyze: bool = False) -> Iterator[list[str]]:
    """The plans auto_explain logs (at NOTICE) for every statement ``conn`` runs
    meanwhile, those inside functions and triggers included; with ``analyze``,
    actual rows, times and buffers."""
    plans: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        plans.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    if analyze:
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_buffers = on")
    conn.execute("SET auto_explain.log_level = notice")
    try:
        yield plans
    finally:
        conn.execute("SET auto_explain.log_min_duration = -1")
        conn.remove_notice_handler(keep)


@contextmanager
def new_database(pg_server: Any, name: str, template: str | None = None) -> Iterator[Database]:
    """``CREATE DATABASE name [TEMPLATE template]``; dropped (FORCE) afterwards."""
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
        conn.execute(create)
    database = Database(pg_server.host, pg_server.port, pg_server.user, name, pg_server.password)
    try:
        yield database
    finally:
        database.close_all()
        with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def install_schema(
    host: str, port: Any, user: str, dbname: str, password: str | None = None, **_: Any
) -> None:
    """pytest-postgresql loader: the template database gets the full install and pgTAP."""
    conninfo = conninfo_of(host, port, user, dbname, password)
    Installer(conninfo).migrate()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")


postgresql_noproc = factories.postgresql_noproc(dbname=TEST_DBNAME, load=[install_schema])
postgresql_proc = factories.postgresql_proc(dbname=TEST_DBNAME, load=[install_schema])


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> NoopExecutor | PostgreSQLExecutor:
    """The server under test, with the schema template built once."""
    mode = request.config.getoption("--pg-mode")
    if mode == "proc" and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.exit("--pg-mode=proc cannot run as root (initdb refuses); use noproc", returncode=4)
    fixture = "postgresql_proc" if mode == "proc" else "postgresql_noproc"
    executor: NoopExecutor | PostgreSQLExecutor = request.getfixturevalue(fixture)
    return executor


postgresql = factories.postgresql("pg_server")


@dataclass
class Database:
    """A test database and how to reach it."""

    host: str
    port: Any
    user: str
    dbname: str
    password: str | None = None
    schema: str = "stacker"
    _conns: list[psycopg.Connection[Any]] = field(default_factory=list)

    @property
    def conninfo(self) -> str:
        return conninfo_of(self.host, self.port, self.user, self.dbname, self.password)

    @property
    def url(self) -> str:
        auth = self.user if not self.password else f"{self.user}:{self.password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.dbname}"

    def connect(self, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, autocommit=autocommit, **kwargs)
        self._conns.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self._conns:
            conn.close()


@pytest.fixture
def db(postgresql: psycopg.Connection[Any], pg_server: Any) -> Iterator[Database]:
    """A fresh database with the schema installed (a copy of the session template)."""
    info = postgresql.info
    database = Database(info.host, info.port, info.user, info.dbname, pg_server.password)
    try:
        yield database
    finally:
        database.close_all()


@pytest.fixture
def conn(db: Database) -> psycopg.Connection[Any]:
    """An autocommit connection to ``db``."""
    return db.connect()


@pytest.fixture
def empty_db(pg_server: Any) -> Iterator[Database]:
    """A brand-new empty database (for install, upgrade and rollback tests)."""
    with new_database(pg_server, f"sq_empty_{SESSION_TAG}_{uuid.uuid4().hex[:8]}") as database:
        yield database


# -- pgTAP ---------------------------------------------------------------------------

_TAP_LINE = re.compile(r"^(not )?ok (\d+)(?: - (.*))?$")
_TAP_PLAN = re.compile(r"^1\.\.(\d+)")


@dataclass
class TapResult:
    planned: int | None = None
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.passed + len(self.failed)


def parse_tap(output: str) -> TapResult:
    result = TapResult()
    for raw in output.splitlines():
        line = raw.strip()
        if plan := _TAP_PLAN.match(line):
            result.planned = int(plan.group(1))
        elif match := _TAP_LINE.match(line):
            todo = "# TODO" in (match.group(3) or "") or "# SKIP" in (match.group(3) or "")
            if match.group(1) and not todo:
                result.failed.append(line)
            else:
                result.passed += 1
        elif line.startswith("#"):
            result.diagnostics.append(line)
    return result


def run_pgtap_file(database: Database, path: Path) -> TapResult:
    """Run one pgTAP file with psql, as pg_prove would, and parse its TAP."""
    proc = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            "pager=off",
            "-d",
            database.conninfo,
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = parse_tap(proc.stdout)
    if proc.returncode != 0:
        result.failed.append(f"psql exited {proc.returncode}: {proc.stderr.strip()}")
    elif result.planned is None:
        result.failed.append("no TAP plan printed")
    elif result.planned != result.ran:
        result.failed.append(f"planned {result.planned} tests but ran {result.ran}")
    return result


PGTAP_TOTALS = {"files": 0, "assertions": 0, "failed": 0}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PGTAP_TOTALS["files"]:
        terminalreporter.write_line(
            f"pgTAP: {PGTAP_TOTALS['assertions']} assertions in {PGTAP_TOTALS['files']} files, "
            f"{PGTAP_TOTALS['failed']} failed"
        )
