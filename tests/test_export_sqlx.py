"""stacker-queue export --format sqlx: the install as sqlx migration files.

Applied with psql in version order (each file in one transaction, as sqlx
runs it) to an empty database, they give the same catalog as stacker-queue
migrate (normalised pg_dump --schema-only, yoyo's bookkeeping tables aside);
their down files, in reverse order, take it all away again; versions follow
Stacker's latest migration in _sqlx_migrations."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from adopt_helpers import dump
from conftest import Database, new_database

from stacker_queue.export import SQLX_BASE_VERSION, export_sqlx
from stacker_queue.migrate import Installer
from stacker_queue.templates import Renderer

CLI = [str(Path(sys.executable).with_name("stacker-queue"))]
FILE = re.compile(r"^(\d+)_(stacker_queue_\w+)\.(up|down)\.sql$")
SQLX_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)
"""


@pytest.fixture
def other_db(pg_server: Any, empty_db: Database) -> Iterator[Database]:
    with new_database(pg_server, f"{empty_db.dbname}_other") as other:
        yield other


def _files(directory: Path, kind: str) -> list[Path]:
    found = [p for p in directory.iterdir() if (m := FILE.match(p.name)) and m.group(3) == kind]
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[0]))


def _psql(database: Database, path: Path) -> None:
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-1",
            "-d",
            database.conninfo,
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("schema", ["public", "stacker"])
def test_export_applies_with_psql_and_equals_a_migrate_install(
    empty_db: Database, other_db: Database, tmp_path: Path, schema: str
) -> None:
    report = export_sqlx(tmp_path, schema)

    migrations = [up.name for up, _ in Renderer(schema).migrations()]
    names = [FILE.match(p.name) for p in _files(tmp_path, "up")]
    assert [(int(m.group(1)), m.group(2)) for m in names if m] == [
        (SQLX_BASE_VERSION + i + 1, f"stacker_queue_{name}")
        for i, name in enumerate([*migrations, "repeatables"])
    ]
    assert len(report.written) == 2 * (len(migrations) + 1)
    for path in tmp_path.iterdir():
        text = path.read_text()
        assert "{{" not in text and "{%" not in text, path.name  # rendered, no jinja left
        assert f'"{schema}"' in text

    for path in _files(tmp_path, "up"):
        _psql(empty_db, path)
    Installer(other_db.conninfo, schema).migrate()

    yoyo = [f"--exclude-table={schema}._yoyo*", f"--exclude-table={schema}.yoyo_lock"]
    exported = dump(empty_db, "--schema-only", "-n", schema, *yoyo)
    installed = dump(other_db, "--schema-only", "-n", schema, *yoyo)
    assert f"CREATE TABLE {schema}.commands" in exported
    assert exported == installed


def test_down_files_in_reverse_order_remove_the_install(empty_db: Database, tmp_path: Path) -> None:
    export_sqlx(tmp_path, "public")
    for path in _files(tmp_path, "up"):
        _psql(empty_db, path)
    for path in reversed(_files(tmp_path, "down")):
        _psql(empty_db, path)
    with empty_db.connect() as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'v')), (SELECT count(*) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace)"
        ).fetchone()
    assert left == (0, 0)


def test_versions_follow_stackers_latest_and_applied_files_are_left_out(
    empty_db: Database, tmp_path: Path
) -> None:
    with empty_db.connect() as conn:
        conn.execute(SQLX_TABLE)
        conn.execute(
            "INSERT INTO _sqlx_migrations VALUES "
            "(20261010120000, 'server host key fingerprint', now(), true, '\\x00', 1)"
        )
    first = export_sqlx(tmp_path / "first", "public", conninfo=empty_db.conninfo)
    assert first.first_version == 20261010120001
    assert first.after == 20261010120000

    # sqlx migrate run applies them and records each with its checksum.
    with empty_db.connect() as conn:
        for path in _files(tmp_path / "first", "up"):
            _psql(empty_db, path)
            m = FILE.match(path.name)
            assert m is not None
            conn.execute(
                "INSERT INTO _sqlx_migrations VALUES (%s, %s, now(), true, %s, 1)",
                [
                    int(m.group(1)),
                    m.group(2).replace("_", " "),
                    hashlib.sha384(path.read_bytes()).digest(),
                ],
            )
    again = export_sqlx(tmp_path / "again", "public", conninfo=empty_db.conninfo)
    assert again.written == [] and len(again.skipped) == len(first.written) // 2
    assert "nothing to export" in again.summary()


def test_export_never_overwrites_other_content(tmp_path: Path) -> None:
    export_sqlx(tmp_path, "public")
    same = export_sqlx(tmp_path, "public")
    assert same.written == [] and len(same.unchanged) == len(list(tmp_path.iterdir()))
    with pytest.raises(FileExistsError, match="exists with other content"):
        export_sqlx(tmp_path, "stacker", after=SQLX_BASE_VERSION)


def test_cli_export(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "export", "--format", "sqlx", "--schema", "public", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"sqlx migrations in {tmp_path / 'out'} (versions after")
    assert len(list((tmp_path / "out").glob("*.up.sql"))) == len(Renderer().migrations()) + 1
