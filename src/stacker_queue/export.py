"""Export the install as sqlx migrations (``stacker-queue export --format sqlx``).

Stacker's Rust service applies its schema with ``sqlx migrate run``; this writes
the same SQL as ``stacker-queue migrate`` applies, rendered for one schema, as
sqlx reversible migrations in a folder:

- each yoyo migration ``NNNN_name`` becomes
  ``<version>_stacker_queue_NNNN_name.up.sql`` (its SQL) and ``.down.sql`` (its
  rollback);
- the repeatable objects (functions/, then sql/, in migrate's order) become a
  final ``<version>_stacker_queue_repeatables`` pair, whose down drops the
  package's view and functions (and with them its triggers).

Versions follow Stacker's latest migration: with a connection, the highest
version in ``_sqlx_migrations``; without one, ``SQLX_BASE_VERSION``. sqlx
records a checksum of every file it applied and refuses a folder where an
applied file changed, so with a connection the migrations sqlx already applied
(matched by description, and for the repeatables by checksum) are left out and
the others numbered after the latest; an existing file is never overwritten
with other content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .templates import Renderer, function_name, quote_ident, quote_literal

# After Stacker's latest migration known when this was written (20261010120000,
# itself after the 20260719120000 this package first targeted).
SQLX_BASE_VERSION = 20270101000000
PREFIX = "stacker_queue"


@dataclass(frozen=True)
class SqlxMigration:
    version: int
    name: str  # after the version: stacker_queue_0001_command_queue
    up: str
    down: str

    @property
    def description(self) -> str:
        """What sqlx stores in _sqlx_migrations.description."""
        return self.name.replace("_", " ")

    @property
    def checksum(self) -> bytes:
        """sqlx's checksum of the up file (SHA-384 of its text)."""
        return hashlib.sha384(self.up.encode()).digest()

    def files(self) -> dict[str, str]:
        return {
            f"{self.version}_{self.name}.up.sql": self.up,
            f"{self.version}_{self.name}.down.sql": self.down,
        }


@dataclass
class AppliedSqlx:
    """What _sqlx_migrations says: the latest version, the applied migrations."""

    latest: int | None = None
    checksums: dict[str, bytes] = field(default_factory=dict)  # description -> checksum


@dataclass
class ExportReport:
    directory: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # applied already (per _sqlx_migrations)
    first_version: int | None = None
    after: int = SQLX_BASE_VERSION
    source: str = ""

    def summary(self) -> str:
        lines = [
            f"sqlx migrations in {self.directory} (versions after {self.after}, {self.source}):"
        ]
        lines += [f"  wrote {name}" for name in self.written]
        lines += [f"  unchanged {name}" for name in self.unchanged]
        lines += [f"  already applied, left out: {name}" for name in self.skipped]
        if not (self.written or self.unchanged):
            lines.append("  nothing to export: every migration is applied")
        return "\n".join(lines)


def read_applied(conninfo: str) -> AppliedSqlx:
    """_sqlx_migrations of the database (where sqlx keeps it: the search_path)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return AppliedSqlx()
        rows = conn.execute(
            "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version"
        ).fetchall()
    applied = AppliedSqlx(latest=max((int(r[0]) for r in rows), default=None))
    for _version, description, checksum, success in rows:
        if success:
            applied.checksums[str(description)] = bytes(checksum)
    return applied


def _header(what: str, schema: str, direction: str) -> str:
    return (
        f"-- stacker-queue {what} for schema {quote_ident(schema)}, {direction},\n"
        "-- exported for sqlx (stacker-queue export --format sqlx).\n"
        "-- Do not edit: sqlx checksums the files it applied.\n"
    )


def _repeatables_down(renderer: Renderer) -> str:
    s = quote_ident(renderer.schema)
    lines = [f"DROP VIEW IF EXISTS {s}.queue_stats;"]
    for template in reversed(renderer.functions()):
        name = function_name(template)
        if name:
            lines.append(f"DROP FUNCTION IF EXISTS {s}.{quote_ident(name)} CASCADE;")
    return "\n".join(lines) + "\n"


def sqlx_migrations(renderer: Renderer, after: int) -> list[SqlxMigration]:
    """Every migration pair, then the repeatables pair, numbered after ``after``."""
    schema = renderer.schema
    out: list[SqlxMigration] = []
    for i, (up, down) in enumerate(renderer.migrations()):
        up_text = _header(f"migration {up.name}", schema, "up")
        if i == 0:  # like migrate: create the schema only when it is missing (public is not)
            up_text += (
                "DO $schema$\nBEGIN\n"
                "    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace "
                f"WHERE nspname = {quote_literal(schema)}) THEN\n"
                f"        CREATE SCHEMA {quote_ident(schema)};\n"
                "    END IF;\nEND\n$schema$;\n\n"
            )
        up_text += up.text.strip() + "\n"
        down_text = _header(f"migration {up.name}", schema, "down")
        if i == 0:
            down_text += (
                "-- Reverting this drops the command tables with their rows, and, as written for\n"
                "-- a schema of its own, every function and view left in the schema.\n"
            )
        down_text += down.text.strip() + "\n"
        out.append(SqlxMigration(after + i + 1, f"{PREFIX}_{up.name}", up_text, down_text))
    parts = [
        _header("repeatable objects (functions, triggers, view, grants, comments)", schema, "up")
    ]
    for template in renderer.repeatables():
        parts.append(f"-- {template.kind} {template.name}\n{template.text.strip()}\n")
    drops = _header("repeatable objects", schema, "down") + _repeatables_down(renderer)
    out.append(
        SqlxMigration(after + len(out) + 1, f"{PREFIX}_repeatables", "\n".join(parts), drops)
    )
    return out


def export_sqlx(
    directory: Path,
    schema: str,
    *,
    conninfo: str | None = None,
    after: int | None = None,
    renderer: Renderer | None = None,
) -> ExportReport:
    """Write the sqlx migration files of ``schema``'s install into ``directory``."""
    renderer = renderer or Renderer(schema)
    applied = read_applied(conninfo) if conninfo else AppliedSqlx()
    if after is not None:
        base, source = after, "--after"
    elif applied.latest is not None:
        base, source = applied.latest, "the latest version in _sqlx_migrations"
    else:
        base, source = SQLX_BASE_VERSION, "stacker-queue's fixed base"
    report = ExportReport(directory, after=base, source=source)

    pending: list[SqlxMigration] = []
    for migration in sqlx_migrations(renderer, 0):
        checksum = applied.checksums.get(migration.description)
        if migration.name.endswith("_repeatables"):
            same = [
                c
                for d, c in applied.checksums.items()
                if d == migration.description and c == migration.checksum
            ]
            if same:
                report.skipped.append(migration.name)
                continue
        elif checksum is not None:
            report.skipped.append(migration.name)
            continue
        pending.append(migration)

    files: dict[str, str] = {}
    for i, migration in enumerate(pending):
        numbered = SqlxMigration(base + i + 1, migration.name, migration.up, migration.down)
        if report.first_version is None:
            report.first_version = numbered.version
        files.update(numbered.files())

    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        if path.exists():
            if path.read_text() == text:
                report.unchanged.append(name)
                continue
            raise FileExistsError(
                f"{path} exists with other content; sqlx refuses a changed migration it applied. "
                "Export into an empty folder, or with --dsn so that versions follow "
                "_sqlx_migrations"
            )
        path.write_text(text)
        report.written.append(name)
    return report
