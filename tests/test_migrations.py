"""Install, upgrade, rollback and render, against real empty databases."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import Database

from stacker_queue.migrate import Installer
from stacker_queue.templates import Renderer, sql_root

CLI = [str(Path(sys.executable).with_name("stacker-queue"))]


def schema_dump(database: Database, schema: str = "stacker", *exclude: str) -> str:
    """pg_dump --schema-only of one schema, with volatile lines removed."""
    cmd = ["pg_dump", "--schema-only", "--no-comments", "-n", schema, "-d", database.conninfo]
    cmd[2:2] = [f"--exclude-table={schema}.{t}" for t in exclude]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lines = [
        line
        for line in out.splitlines()
        if not line.startswith("-- Dumped")
        and not line.startswith("\\restrict")
        and not line.startswith("\\unrestrict")
    ]
    return "\n".join(lines)


def comments(database: Database, schema: str = "stacker") -> list[tuple[str, str]]:
    """Every comment on the schema's objects (pg_dump above leaves them out)."""
    with database.connect() as conn:
        rows = conn.execute(
            """
            SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
              FROM pg_description d
              LEFT JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid
              LEFT JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND p.oid = d.objoid
              LEFT JOIN pg_trigger t ON d.classoid = 'pg_trigger'::regclass AND t.oid = d.objoid
              LEFT JOIN pg_class tc ON tc.oid = t.tgrelid
             WHERE coalesce(c.relnamespace, p.pronamespace, tc.relnamespace) = %s::regnamespace
             ORDER BY 1
            """,
            [schema],
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_migrate_installs_then_has_nothing_to_do(empty_db: Database) -> None:
    installer = Installer(empty_db.conninfo)
    first = installer.migrate()
    assert first.changed
    assert first.applied_migrations == [up.name for up, _ in Renderer().migrations()]

    second = installer.migrate()
    assert not second.changed
    assert second.summary().startswith("Nothing to do")
    assert installer.status().up_to_date


def test_cli_migrate_twice_says_nothing_to_do(empty_db: Database) -> None:
    first = subprocess.run(
        [*CLI, "migrate", "--dsn", empty_db.url], capture_output=True, text=True, check=True
    )
    assert first.stdout.startswith("Migrated:")
    second = subprocess.run(
        [*CLI, "migrate", "--dsn", empty_db.url], capture_output=True, text=True, check=True
    )
    assert second.stdout.startswith("Nothing to do:"), second.stdout


def test_cli_migrate_fails_with_one_line(empty_db: Database) -> None:
    bad = empty_db.url.rsplit("/", 1)[0] + "/no_such_database_here"
    proc = subprocess.run([*CLI, "migrate", "--dsn", bad], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("stacker-queue: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def _copy_sql_root(tmp_path: Path) -> Path:
    root = tmp_path / "sqlroot"
    for folder in ("migrations", "functions", "sql"):
        shutil.copytree(sql_root() / folder, root / folder)
    return root


def test_functions_reapplied_only_when_their_text_changed(
    empty_db: Database, tmp_path: Path
) -> None:
    root = _copy_sql_root(tmp_path)
    Installer(empty_db.conninfo, renderer=Renderer(root=root)).migrate()

    target = root / "functions" / "get_command.sql"
    target.write_text(
        target.read_text().replace("Returns one command", "Returns exactly one command")
    )
    report = Installer(empty_db.conninfo, renderer=Renderer(root=root)).migrate()

    functions = [r for r in report.applied_repeatables if r.startswith("function:")]
    assert functions == ["function:get_command"]
    # grants and comments depend on every function, so they follow
    assert "sql:800_grants" in report.applied_repeatables
    with empty_db.connect() as conn:
        comment = conn.execute(
            "SELECT obj_description('stacker.get_command(text)'::regprocedure)"
        ).fetchone()
    assert comment is not None and comment[0].startswith("Returns exactly one command")

    again = Installer(empty_db.conninfo, renderer=Renderer(root=root)).migrate()
    assert not again.changed


def test_dropped_function_is_restored_by_migrate(empty_db: Database) -> None:
    installer = Installer(empty_db.conninfo)
    installer.migrate()
    with empty_db.connect() as conn:
        conn.execute("DROP FUNCTION stacker.requeue_expired()")
    assert "function:requeue_expired" in installer.status().changed_repeatables
    report = installer.migrate()
    assert "function:requeue_expired" in report.applied_repeatables
    with empty_db.connect() as conn:
        assert conn.execute("SELECT stacker.requeue_expired()").fetchone() == (0,)


def test_rollback_to_zero_and_migrate_again_leaves_the_same_catalog(empty_db: Database) -> None:
    installer = Installer(empty_db.conninfo)
    installer.migrate()
    before = schema_dump(empty_db)
    before_comments = comments(empty_db)
    assert "CREATE TABLE stacker.commands" in before

    undone = installer.rollback(0)
    assert undone == [up.name for up, _ in reversed(Renderer().migrations())]
    with empty_db.connect() as conn:
        left = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'stacker'::regnamespace "
            "AND relkind IN ('r', 'v') AND relname NOT LIKE '%yoyo%' ORDER BY 1"
        ).fetchall()
        procs = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'stacker'::regnamespace"
        ).fetchone()
    assert left == []
    assert procs == (0,)
    assert installer.status().pending

    installer.migrate()
    assert schema_dump(empty_db) == before
    assert comments(empty_db) == before_comments


def test_rollback_one_then_migrate_restores_privileges(empty_db: Database) -> None:
    installer = Installer(empty_db.conninfo)
    installer.migrate()
    before = schema_dump(empty_db)

    # Undo everything after 0001 (0002 granted the privileges).
    later = [up.name for up, _ in Renderer().migrations()][1:]
    assert installer.rollback(len(later)) == list(reversed(later))
    with empty_db.connect() as conn:
        allowed = conn.execute(
            "SELECT has_function_privilege('stacker_service', "
            "'stacker.create_command(text, text, jsonb, text, text, text, integer, timestamptz, "
            "integer, text, jsonb)', 'EXECUTE')"
        ).fetchone()
    assert allowed == (False,)

    installer.migrate()
    assert schema_dump(empty_db) == before


def test_upgrade_through_every_migration_equals_fresh_install(
    empty_db: Database, pg_server: object, tmp_path: Path
) -> None:
    """procrastinate's check: a database upgraded one release at a time (each
    migration followed by the repeatables of that time) ends up identical to a
    fresh install of the latest release."""
    root = _copy_sql_root(tmp_path)
    ups = sorted(p for p in (root / "migrations").glob("*.sql") if ".rollback" not in p.name)
    held = tmp_path / "held"
    held.mkdir()
    for path in ups:
        shutil.move(path, held / path.name)
        shutil.move(
            path.with_name(path.stem + ".rollback.sql"), held / (path.stem + ".rollback.sql")
        )
    for path in ups:
        shutil.move(held / path.name, path)
        shutil.move(
            held / (path.stem + ".rollback.sql"), path.with_name(path.stem + ".rollback.sql")
        )
        report = Installer(empty_db.conninfo, renderer=Renderer(root=root)).migrate()
        assert report.applied_migrations == [path.stem]
    upgraded = schema_dump(empty_db)

    fresh_db = Database(empty_db.host, empty_db.port, empty_db.user, empty_db.dbname)
    with empty_db.connect() as conn:
        conn.execute("DROP SCHEMA stacker CASCADE")
    Installer(fresh_db.conninfo).migrate()
    assert schema_dump(fresh_db) == upgraded


def test_render_is_what_migrate_applies(empty_db: Database, tmp_path: Path) -> None:
    """The rendered install run with psql gives the same objects as migrate
    (migrate adds only its bookkeeping: yoyo's tables and the hashes)."""
    script = tmp_path / "install.sql"
    script.write_text(Renderer("rendered").full_install())
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db.conninfo, "-f", str(script)],
        check=True,
        capture_output=True,
    )
    Installer(empty_db.conninfo, schema="migrated").migrate()

    yoyo = ("_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock")
    rendered = schema_dump(empty_db, "rendered")
    migrated = schema_dump(empty_db, "migrated", *yoyo)
    assert rendered.replace("rendered", "X") == migrated.replace("migrated", "X")


def test_cli_render_prints_the_install(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "render", "--schema", "ops queue"], capture_output=True, text=True, check=True
    ).stdout
    assert out == Renderer("ops queue").full_install()
    assert 'CREATE TABLE "ops queue".commands' in out
    assert "'ops queue_commands'" in out  # the NOTIFY channel
    assert "{{" not in out and "{%" not in out


def test_render_refuses_a_bad_schema_name() -> None:
    proc = subprocess.run([*CLI, "render", "--schema", "x" * 60], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "longer than" in proc.stderr


def test_install_into_a_schema_that_needs_quoting(empty_db: Database) -> None:
    schema = 'Ops "Queue"'
    Installer(empty_db.conninfo, schema=schema).migrate()
    with empty_db.connect() as listener, empty_db.connect() as conn:
        listener.execute('LISTEN "Ops ""Queue""_commands"')
        agent = conn.execute(
            'SELECT id FROM "Ops ""Queue""".register_agent(%s)', ["dep-q"]
        ).fetchone()[0]
        cmd = conn.execute(
            'SELECT command_id FROM "Ops ""Queue""".create_command(%s, %s)', ["dep-q", "health"]
        ).fetchone()[0]
        note = next(listener.notifies(timeout=5))
        assert note.payload == "dep-q"
        claimed = conn.execute(
            'SELECT command_id FROM "Ops ""Queue""".claim_commands(%s, %s)', ["dep-q", agent]
        ).fetchall()
    assert claimed == [(cmd,)]


def test_concurrent_migrates_serialise(empty_db: Database) -> None:
    reports = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(Installer(empty_db.conninfo).migrate())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(1 for r in reports if r.applied_migrations) == 1
    assert sum(1 for r in reports if not r.changed) == 2


def test_every_migration_has_a_rollback() -> None:
    folder = sql_root() / "migrations"
    ups = {p.stem for p in folder.glob("*.sql") if not p.name.endswith(".rollback.sql")}
    downs = {p.name.removesuffix(".rollback.sql") for p in folder.glob("*.rollback.sql")}
    assert ups == downs
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+", name) for name in ups)


def test_status_lists_pending_and_changed(empty_db: Database) -> None:
    installer = Installer(empty_db.conninfo)
    fresh = installer.status()
    assert fresh.applied == [] and fresh.pending
    installer.migrate()
    with empty_db.connect() as conn:
        conn.execute(
            "UPDATE stacker.schema_repeatables SET sha256 = 'x' WHERE name = 'cancel_command'"
        )
    assert installer.status().changed_repeatables == ["function:cancel_command"]
    proc = subprocess.run([*CLI, "status", "--dsn", empty_db.url], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "function:cancel_command" in proc.stdout


@pytest.mark.parametrize("schema", ["stacker", "tenant_a"])
def test_two_installs_in_one_database_are_independent(empty_db: Database, schema: str) -> None:
    Installer(empty_db.conninfo, schema="other").migrate()
    report = Installer(empty_db.conninfo, schema=schema).migrate()
    assert report.applied_migrations  # tracked per schema, not shared
    with empty_db.connect() as conn:
        conn.execute(f'SELECT "{schema}".create_command(%s, %s)', ["d", "health"])
        counts = conn.execute(
            f'SELECT (SELECT count(*) FROM "{schema}".commands), '
            "(SELECT count(*) FROM other.commands)"
        ).fetchone()
    assert counts == (1, 0)


def test_rollback_in_a_shared_quoted_schema_drops_only_ours(empty_db: Database) -> None:
    schema = 'Shared "Schema"'
    with empty_db.connect() as conn:
        conn.execute('CREATE SCHEMA "Shared ""Schema"""')
        conn.execute(
            'CREATE FUNCTION "Shared ""Schema""".theirs() RETURNS int LANGUAGE sql AS $$SELECT 1$$'
        )
        conn.execute('CREATE VIEW "Shared ""Schema""".their_view AS SELECT 1 AS x')
    installer = Installer(empty_db.conninfo, schema=schema)
    installer.migrate()
    assert installer.rollback(0)
    with empty_db.connect() as conn:
        left = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            [schema],
        ).fetchall()
        views = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'v'",
            [schema],
        ).fetchall()
    assert left == [("theirs",)]
    assert views == [("their_view",)]
    installer.migrate()
