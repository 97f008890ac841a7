"""Install and upgrade the schema: yoyo migrations, then repeatable objects.

Migrations (``migrations/NNNN_name.sql`` with ``.rollback.sql``) are versioned
and applied once, by yoyo, whose bookkeeping tables live in the target schema.
Repeatable objects (``functions/*.sql``, then ``sql/*.sql``) are re-applied
after every migrate whose rendered text changed, like Flyway's repeatable
migrations: the sha256 of each rendered file is stored in
``<schema>.schema_repeatables``. A ``sql/`` file's hash also covers everything
applied before it (functions, migrations, earlier ``sql/`` files), so grants and
comments are re-applied whenever an object they refer to may have changed.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend

from .templates import DEFAULT_SCHEMA, Renderer, Template, function_name, quote_ident

log = logging.getLogger("stacker_queue")

MIGRATION_TABLE = "_yoyo_migration"


@dataclass(frozen=True)
class _Target:
    """What yoyo calls the database URI: a libpq conninfo and the schema.

    yoyo pickles it to cache per-database facts, so it is a plain dataclass.
    """

    conninfo: str
    schema: str

    @property
    def database(self) -> str:
        return str(psycopg.conninfo.conninfo_to_dict(self.conninfo).get("dbname") or "")


class _Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]
    """yoyo's psycopg 3 backend, connected from a libpq conninfo string (URL,
    key=value or empty for the PG* environment) with the schema as search_path,
    so yoyo keeps its bookkeeping tables in the schema it installs."""

    def connect(self, dburi: _Target) -> psycopg.Connection[Any]:
        return psycopg.connect(dburi.conninfo, autocommit=True)

    def init_connection(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.uri.schema)))


@dataclass
class MigrateReport:
    applied_migrations: list[str] = field(default_factory=list)
    applied_repeatables: list[str] = field(default_factory=list)
    unchanged_repeatables: int = 0
    total_migrations: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.applied_migrations or self.applied_repeatables)

    def summary(self) -> str:
        if not self.changed:
            return (
                f"Nothing to do: all {self.total_migrations} migrations are applied and "
                f"{self.unchanged_repeatables} repeatable objects are unchanged."
            )
        parts = []
        if self.applied_migrations:
            parts.append("applied migrations " + ", ".join(self.applied_migrations))
        if self.applied_repeatables:
            parts.append(
                f"re-applied {len(self.applied_repeatables)} repeatable objects "
                f"({self.unchanged_repeatables} unchanged)"
            )
        return "Migrated: " + "; ".join(parts) + "."


@dataclass
class Status:
    applied: list[str]
    pending: list[str]
    changed_repeatables: list[str]

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.changed_repeatables


class Installer:
    """Applies the package's SQL to one schema of one database."""

    def __init__(
        self, conninfo: str = "", schema: str = DEFAULT_SCHEMA, renderer: Renderer | None = None
    ) -> None:
        self.conninfo = conninfo
        self.renderer = renderer or Renderer(schema)
        self.schema = self.renderer.schema

    # -- plumbing ---------------------------------------------------------------
    def _connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, **kwargs)

    @contextmanager
    def _locked(self) -> Iterator[psycopg.Connection[Any]]:
        """Serialise installers of this schema with a session advisory lock."""
        with self._connect(autocommit=True) as conn:
            key = f"stacker-queue:{self.schema}"
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
            try:
                yield conn
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])

    @contextmanager
    def _yoyo(self) -> Iterator[tuple[_Backend, Any]]:
        pairs = self.renderer.migrations()
        with tempfile.TemporaryDirectory(prefix="stacker-queue-migrations-") as tmp:
            folder = Path(tmp)
            for up, down in pairs:
                (folder / up.path.name).write_text(up.text)
                (folder / down.path.name).write_text(down.text)
            migrations = read_migrations(str(folder))
            backend = _Backend(_Target(self.conninfo, self.schema), MIGRATION_TABLE)
            try:
                backend.init_database()
                yield backend, migrations
            finally:
                backend.connection.close()

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            log.info("created schema %s", self.schema)

    def _schema_exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
        ).fetchone()
        return row is not None

    def _table_exists(self, conn: psycopg.Connection[Any], table: str) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{quote_ident(self.schema)}.{table}"]
        ).fetchone()
        return bool(row and row[0])

    # -- repeatables --------------------------------------------------------------
    def _planned_hashes(self, applied_ids: list[str]) -> list[tuple[Template, str]]:
        """Each repeatable with the hash that decides whether it is re-applied."""
        functions = self.renderer.functions()
        planned = [(t, t.sha256) for t in functions]
        upstream = hashlib.sha256()
        for migration_id in applied_ids:
            upstream.update(f"migration:{migration_id}\n".encode())
        for t in functions:
            upstream.update(f"function:{t.name}:{t.sha256}\n".encode())
        previous = upstream.hexdigest()
        for t in self.renderer.repeatable_sql():
            previous = hashlib.sha256(f"{previous}\n{t.sha256}".encode()).hexdigest()
            planned.append((t, previous))
        return planned

    def _stored_hashes(self, conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
        if not self._table_exists(conn, "schema_repeatables"):
            return {}
        rows = conn.execute(
            sql.SQL("SELECT kind, name, sha256 FROM {}.schema_repeatables").format(
                sql.Identifier(self.schema)
            )
        ).fetchall()
        return {(kind, name): sha for kind, name, sha in rows}

    def _existing_functions(self, conn: psycopg.Connection[Any]) -> set[str]:
        rows = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            [self.schema],
        ).fetchall()
        return {r[0] for r in rows}

    def _stale(
        self, conn: psycopg.Connection[Any], applied_ids: list[str]
    ) -> list[tuple[Template, str]]:
        stored = self._stored_hashes(conn)
        existing = self._existing_functions(conn)
        stale = []
        for template, digest in self._planned_hashes(applied_ids):
            name = function_name(template) if template.kind == "function" else None
            missing = name is not None and name not in existing
            if stored.get((template.kind, template.name)) != digest or missing:
                stale.append((template, digest))
        return stale

    def _apply_repeatables(self, applied_ids: list[str]) -> tuple[list[str], int]:
        with self._connect() as conn, conn.transaction():
            stale = self._stale(conn, applied_ids)
            total = len(self._planned_hashes(applied_ids))
            for template, digest in stale:
                log.info("applying %s %s", template.kind, template.name)
                try:
                    conn.execute(template.text)
                except psycopg.Error as exc:
                    raise RuntimeError(
                        f"{template.kind} {template.path.name} failed to apply: {exc}"
                    ) from exc
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.schema_repeatables (kind, name, sha256, applied_at) "
                        "VALUES (%s, %s, %s, now()) ON CONFLICT (kind, name) DO UPDATE "
                        "SET sha256 = excluded.sha256, applied_at = excluded.applied_at"
                    ).format(sql.Identifier(self.schema)),
                    [template.kind, template.name, digest],
                )
            return [f"{t.kind}:{t.name}" for t, _ in stale], total - len(stale)

    # -- public API -----------------------------------------------------------------
    def migrate(self) -> MigrateReport:
        report = MigrateReport()
        with self._locked() as conn:
            self._ensure_schema(conn)
            with self._yoyo() as (backend, migrations):
                report.total_migrations = len(migrations)
                pending = backend.to_apply(migrations)
                if pending:
                    with backend.lock():
                        for migration in pending:
                            log.info("applying migration %s", migration.id)
                            backend.apply_one(migration)
                            report.applied_migrations.append(migration.id)
                applied_ids = [m.id for m in migrations if backend.is_applied(m)]
            report.applied_repeatables, report.unchanged_repeatables = self._apply_repeatables(
                applied_ids
            )
        log.info("%s", report.summary())
        return report

    def rollback(self, count: int = 1) -> list[str]:
        """Undo the last ``count`` applied migrations (all of them if count <= 0)."""
        undone: list[str] = []
        with self._locked() as conn:
            if not self._schema_exists(conn):
                return undone
            with self._yoyo() as (backend, migrations):
                to_undo = list(backend.to_rollback(migrations))
                if count > 0:
                    to_undo = to_undo[:count]
                if to_undo:
                    with backend.lock():
                        for migration in to_undo:
                            log.info("rolling back migration %s", migration.id)
                            backend.rollback_one(migration)
                            undone.append(migration.id)
            if undone and self._table_exists(conn, "schema_repeatables"):
                # The next migrate re-applies every repeatable object.
                conn.execute(
                    sql.SQL("DELETE FROM {}.schema_repeatables").format(sql.Identifier(self.schema))
                )
        return undone

    def status(self) -> Status:
        with self._connect(autocommit=True) as conn:
            if not self._schema_exists(conn):
                pairs = self.renderer.migrations()
                return Status(
                    applied=[],
                    pending=[up.name for up, _ in pairs],
                    changed_repeatables=[f"{t.kind}:{t.name}" for t in self.renderer.repeatables()],
                )
            with self._yoyo() as (backend, migrations):
                applied = [m.id for m in migrations if backend.is_applied(m)]
                pending = [m.id for m in backend.to_apply(migrations)]
            stale = self._stale(conn, applied)
            return Status(
                applied=applied,
                pending=pending,
                changed_repeatables=[f"{t.kind}:{t.name}" for t, _ in stale],
            )
