"""stacker-queue adopt on Stacker-shaped databases at each state of Stacker's
history (stacker_fixtures.STATES), full of rows: every row survives with its
meaning, the queue is repaired (remapped, deduplicated, lost commands queued,
in-flight ones due for redelivery), migrate afterwards has nothing to do,
adopting twice changes nothing, a dry run changes nothing, and what cannot be
adopted is refused with a clear message and no change."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stacker_fixtures as sf
from adopt_helpers import app_role, commands, dump, queue_rows
from conftest import Database
from psycopg import sql

from stacker_queue.adopt import Adopter, AdoptError
from stacker_queue.migrate import Installer

CLI = [str(Path(sys.executable).with_name("stacker-queue"))]
PENDING = {"queued", "sent", "executing"}


@pytest.fixture(scope="module")
def role(pg_server: Any) -> Iterator[str]:
    yield from app_role(pg_server)


def _stacker(empty_db: Database, role: str, state: str) -> sf.StackerDatabase:
    stacker = sf.build(empty_db, role, state)
    sf.fill(stacker)
    return stacker


@pytest.mark.parametrize("state", sf.STATES)
def test_adopt_keeps_every_row_and_repairs_the_queue(
    empty_db: Database, role: str, state: str
) -> None:
    stacker = _stacker(empty_db, role, state)
    with empty_db.connect() as conn:
        before = sf.snapshot(conn, "public")

    report = Adopter(empty_db.conninfo, "public").adopt()

    assert report.changed and not report.dry_run
    assert report.legacy_role == role
    assert report.marked_migrations == [up.name for up, _ in Installer().renderer.migrations()]
    with empty_db.connect() as conn:
        # Every row of Stacker's tables, every Stacker column, the same value
        # (timestamps compared in UTC: the naive ones were read as UTC).
        after = sf.snapshot(conn, "public")
        # ... but sent_at, which Stacker never wrote: a sent or executing
        # command's is filled in from its updated_at (when Stacker sent it).
        for row in after["commands"]:
            if row["status"] in ("sent", "executing"):
                assert row["sent_at"] == row["updated_at"]
                row["sent_at"] = None
        assert after == before
        rows = commands(conn)
        queue = queue_rows(conn)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        audit_at = conn.execute(
            "SELECT min(created_at), pg_typeof(min(created_at))::text FROM public.audit_log "
            "WHERE action = 'agent.command_polled'"
        ).fetchone()

    ids = stacker.expected
    assert set(rows) == {r["command_id"] for r in ids.values() if isinstance(r, dict)}
    # A queue row exactly for the pending commands, one each.
    assert set(queue) == {c for c, r in rows.items() if r["status"] in PENDING}
    assert all(count == 1 for count, _, _ in queue.values())
    # The seed's lost command is queued and due now; the duplicate was collapsed.
    assert queue["cmd_lost"][1] is True
    assert rows["cmd_lost"]["status"] == "queued" and rows["cmd_lost"]["attempts"] == 0
    # Sent and executing commands: delivered once, lease already expired: redelivered.
    for name in ("cmd_sent", "cmd_executing"):
        cmd = rows[name]
        assert cmd["status"] == ids[name[4:]]["status"]
        assert cmd["attempts"] == 1
        assert cmd["lease_expires_at"] is not None and cmd["lease_expires_at"] <= now
        assert cmd["sent_at"] is not None
        assert cmd["agent_id"] == ids["agent_a"]
        assert queue[name][1:] == (True, cmd["lease_expires_at"])
    # Finished commands have no queue row and keep their outcome.
    assert rows["cmd_completed"]["result"] == {"status": "ok", "container_state": "running"}
    assert rows["cmd_failed"]["error"] == {"message": "boom"}
    # audit_log.created_at is timestamptz, the old naive values read as UTC.
    assert audit_at == (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), "timestamp with time zone")

    # migrate afterwards has nothing to do; status agrees.
    again = Installer(empty_db.conninfo, "public").migrate()
    assert not again.changed, again.summary()
    assert again.summary().startswith("Nothing to do")
    assert Installer(empty_db.conninfo, "public").status().up_to_date


@pytest.mark.parametrize("state", ["broken", "latest"])
def test_adopt_twice_is_a_no_op(empty_db: Database, role: str, state: str) -> None:
    _stacker(empty_db, role, state)
    Adopter(empty_db.conninfo, "public").adopt()
    before = dump(empty_db)

    second = Adopter(empty_db.conninfo, "public").adopt()

    assert not second.changed, second.statements
    assert second.summary().startswith("Nothing to do")
    assert dump(empty_db) == before


@pytest.mark.parametrize("state", sf.STATES)
def test_dry_run_prints_the_sql_and_changes_nothing(
    empty_db: Database, role: str, state: str
) -> None:
    _stacker(empty_db, role, state)
    before = dump(empty_db)

    proc = subprocess.run(
        [*CLI, "adopt", "--dsn", empty_db.url, "--schema", "public", "--dry-run"],
        capture_output=True,
        text=True,
    )

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert 'ALTER TABLE "public"."command_queue"' in out
    assert 'CREATE OR REPLACE FUNCTION "public".claim_commands(' in out
    assert "-- Would adopt schema public" in out
    assert "queue rows created for queued commands that had none (lost commands): 1" in out
    assert "-- dry run: rolled back, nothing was changed" in out
    assert dump(empty_db) == before

    as_json = subprocess.run(
        [*CLI, "adopt", "--dsn", empty_db.url, "--schema", "public", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(as_json.stdout)
    assert data["dry_run"] is True and data["changed"] is True
    assert (
        data["counts"]["queue rows created for queued commands that had none (lost commands)"] == 1
    )
    assert data["marked_migrations"][0] == "0001_command_queue"
    assert dump(empty_db) == before


def test_cli_adopt_reports_and_then_migrate_has_nothing_to_do(
    empty_db: Database, role: str
) -> None:
    _stacker(empty_db, role, "fixed")
    proc = subprocess.run(
        [*CLI, "adopt", "--dsn", empty_db.url, "--schema", "public"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Adopted schema public")
    assert f"old binary's role {role}" in proc.stdout
    assert (
        "kept (not the package's): " in proc.stdout
        and "commands_deployment_hash_fkey" in proc.stdout
    )
    migrate = subprocess.run(
        [*CLI, "migrate", "--dsn", empty_db.url, "--schema", "public"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert migrate.stdout.startswith("Nothing to do:"), migrate.stdout


@pytest.mark.parametrize("state", ["broken", "fixed"])
def test_unmappable_queue_rows_refused_unless_drop_orphans(
    empty_db: Database, role: str, state: str
) -> None:
    stacker = _stacker(empty_db, role, state)
    orphan = sf.add_orphan_queue_row(stacker)
    before = dump(empty_db)

    with pytest.raises(AdoptError) as refused:
        Adopter(empty_db.conninfo, "public").adopt()
    assert orphan in str(refused.value) and "--drop-orphans" in str(refused.value)
    assert "Nothing was changed" in str(refused.value)
    assert dump(empty_db) == before

    report = Adopter(empty_db.conninfo, "public", drop_orphans=True).adopt()
    assert report.counts["unmappable queue rows dropped (--drop-orphans)"] == 1
    with empty_db.connect() as conn:
        assert orphan not in queue_rows(conn)
        # every command is still there
        assert len(commands(conn)) == 10


def test_cli_refusal_is_one_clear_failure(empty_db: Database, role: str) -> None:
    stacker = _stacker(empty_db, role, "broken")
    sf.add_orphan_queue_row(stacker)
    proc = subprocess.run(
        [*CLI, "adopt", "--dsn", empty_db.url, "--schema", "public"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("stacker-queue: 1 command_queue rows name no command")
    assert "Traceback" not in proc.stderr


def test_unknown_schemas_are_refused(empty_db: Database, role: str) -> None:
    with empty_db.connect() as conn:
        conn.execute("CREATE SCHEMA empty_one")
        conn.execute("CREATE SCHEMA half")
        conn.execute("CREATE TABLE half.commands (id uuid PRIMARY KEY, command_id text)")
    with pytest.raises(AdoptError, match="does not exist"):
        Adopter(empty_db.conninfo, "no_such_schema").adopt()
    with pytest.raises(
        AdoptError, match=r"has none of Stacker's tables .* use stacker-queue migrate"
    ):
        Adopter(empty_db.conninfo, "empty_one").adopt()
    with pytest.raises(AdoptError, match="tables command_queue, agents, audit_log are missing"):
        Adopter(empty_db.conninfo, "half").adopt()

    stacker = _stacker(empty_db, role, "latest")
    with stacker.admin() as conn:
        conn.execute("ALTER TABLE public.command_queue ALTER COLUMN priority TYPE text")
    before = dump(empty_db)
    with pytest.raises(AdoptError, match=r"command_queue\.priority is text"):
        Adopter(empty_db.conninfo, "public").adopt()
    assert dump(empty_db) == before


def test_rows_that_break_a_new_check_are_refused(empty_db: Database, role: str) -> None:
    stacker = _stacker(empty_db, role, "latest")
    with stacker.binary() as app:
        app.insert_command("dep-a", "health", parameters=["not", "an", "object"])  # type: ignore[arg-type]
    before = dump(empty_db)
    with pytest.raises(
        AdoptError, match=r"1 rows of public\.commands violate commands_parameters_check"
    ):
        Adopter(empty_db.conninfo, "public").adopt()
    assert dump(empty_db) == before


def test_nulls_in_columns_that_become_not_null_are_filled(empty_db: Database, role: str) -> None:
    stacker = _stacker(empty_db, role, "latest")
    with stacker.binary() as app:
        app.conn.execute(
            "INSERT INTO agents (deployment_hash, last_heartbeat, created_at, updated_at) "
            "VALUES ('dep-c', '2026-01-11 00:00+00', NULL, NULL)"
        )
        app.conn.execute("INSERT INTO audit_log (action, created_at) VALUES ('x', NULL)")
    report = Adopter(empty_db.conninfo, "public").adopt()
    assert (
        report.counts[
            "agents.created_at NULLs filled (coalesce(updated_at, last_heartbeat, now()))"
        ]
        == 1
    )
    with empty_db.connect() as conn:
        row = conn.execute(
            "SELECT created_at, updated_at FROM public.agents WHERE deployment_hash = 'dep-c'"
        ).fetchone()
        epoch = conn.execute(
            "SELECT created_at FROM public.audit_log WHERE action = 'x'"
        ).fetchone()
    assert row == (datetime(2026, 1, 11, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))
    assert epoch == (datetime(1970, 1, 1, tzinfo=UTC),)


def test_the_adopting_role_must_not_be_the_old_binarys(empty_db: Database) -> None:
    # Stacker's tables owned by the adopting role itself (root): the default
    # legacy role is then the adopter, whose functions must not be fenced.
    with empty_db.connect() as conn:
        for step in sf.state_ddl("latest"):
            conn.execute(step)  # type: ignore[arg-type]
    with pytest.raises(AdoptError, match=r"is running as .*, the role of Stacker's old binary"):
        Adopter(empty_db.conninfo, "public").adopt()
    # A legacy role that bypasses row-level security cannot be fenced by it.
    bypass = f"sq_bypass_{empty_db.dbname}"
    with empty_db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN BYPASSRLS").format(sql.Identifier(bypass)))
    try:
        with pytest.raises(AdoptError, match="is a superuser or has BYPASSRLS"):
            Adopter(empty_db.conninfo, "public", legacy_role=bypass).adopt()
    finally:
        with empty_db.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(bypass)))
    # When the old binary no longer runs, no fence is needed.
    report = Adopter(empty_db.conninfo, "public", legacy_guard=False).adopt()
    assert report.legacy_role is None
    with empty_db.connect() as conn:
        rls = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.command_queue'::regclass"
        ).fetchone()
    assert rls == (False,)


def test_adopt_gives_up_clearly_when_the_tables_stay_locked(empty_db: Database, role: str) -> None:
    stacker = _stacker(empty_db, role, "latest")
    before = dump(empty_db)
    with stacker.binary() as app, app.conn.transaction(force_rollback=True):
        # The old binary mid-transaction (its cancel: DELETE, then UPDATE).
        app.conn.execute(sf.CANCEL_DELETE, ["cmd_queued_high"])  # type: ignore[arg-type]
        with pytest.raises(
            AdoptError, match="could not lock schema public's tables within lock_timeout 200ms"
        ):
            Adopter(empty_db.conninfo, "public", lock_timeout="200ms").adopt()
    assert dump(empty_db) == before


def test_adopt_a_schema_of_its_own_name(empty_db: Database, role: str) -> None:
    """Stacker's tables in another schema (here one needing quotes)."""
    stacker = sf.build(empty_db, role, "fixed", schema="Stacker Prod")
    sf.fill(stacker)
    report = Adopter(empty_db.conninfo, "Stacker Prod").adopt()
    assert report.changed
    with empty_db.connect() as conn:
        assert len(queue_rows(conn, "Stacker Prod")) == 7
        swept = conn.execute(
            sql.SQL("SELECT {}.requeue_expired()").format(sql.Identifier("Stacker Prod"))
        ).fetchone()
    assert swept == (2,)  # the sent and the executing command, due for redelivery
    assert not Installer(empty_db.conninfo, "Stacker Prod").migrate().changed


def test_stacker_cleanup_jobs_are_warned_about(empty_db: Database, role: str) -> None:
    stacker = _stacker(empty_db, role, "latest")
    with stacker.binary() as app:
        app.conn.execute(
            "CREATE FUNCTION stacker_cleanup_audit_logs(retention interval DEFAULT '90 days', "
            "p_dry_run boolean DEFAULT true) RETURNS void LANGUAGE plpgsql AS "
            "$$ BEGIN DELETE FROM audit_log WHERE created_at < now() - retention; END $$"
        )
    report = Adopter(empty_db.conninfo, "public").adopt()
    assert any("stacker_cleanup_audit_logs" in w for w in report.warnings)
    with stacker.binary() as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.conn.execute("SELECT stacker_cleanup_audit_logs('1 day', false)")


@pytest.mark.parametrize("command", ["adopt", "export", "migrate"])
def test_help_exits_zero(command: str) -> None:
    proc = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: stacker-queue {command}") and proc.stderr == ""
