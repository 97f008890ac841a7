"""Adopt a live Stacker database (``stacker-queue adopt``).

Stacker's command tables (``commands``, ``command_queue``, ``agents``,
``audit_log``), at any of the states its migrations left them in, are
converged in place, in one transaction, to what ``stacker-queue migrate``
installs, so that afterwards ``migrate`` has nothing to do:

1. Checks that refuse before anything changes: the four tables exist with
   Stacker's columns and types this module knows how to convert; the role the
   old binary uses (``legacy_role``, by default the owner of ``commands``) can
   be fenced by row-level security and is not the adopting role.
2. The tables are locked (``lock_timeout``: adoption fails clearly instead of
   queueing behind the running binary). A scratch install of the package in a
   temporary schema gives the target catalog.
3. Table convergence, planned from the difference of the two catalogs: the
   queue's foreign key moves from ``commands(id)`` to ``commands(command_id)``
   with its rows remapped, ``timestamp`` columns become ``timestamptz`` (read
   as UTC), ``deployment_hash`` is widened, the package's columns, defaults,
   NOT NULLs, constraints, indexes and storage options are added, Stacker's
   equivalent constraints and indexes are renamed to the package's names,
   tables Stacker lacks are created from migration 0001.
4. Data: duplicate queue rows and rows of finished commands removed, queued
   commands without a row (the seed's lost commands) and in-flight commands
   given one, sent and executing commands given an already expired lease
   (attempts at least 1) so that they are redelivered.
5. Migrations after 0001 are run as written unless yoyo has them; all are
   marked applied in yoyo's tables; the repeatable objects are applied and
   their hashes recorded (``schema_repeatables``).
6. The old binary's guard: row-level security enabled and forced on
   ``command_queue`` (the policies come from migration 0003), the legacy role
   made a member of ``stacker_legacy`` and allowed to run
   ``stacker_command_queue_cleanup`` (its pg_cron job).
7. The result is compared with the scratch install; anything missing or
   different aborts the transaction. Then commit (or, for a dry run, rollback).

Nothing that is not the package's is dropped: Stacker's extra columns,
constraints to its other tables, triggers, indexes (but four redundant or
harmful ones) and grants stay, and are listed. Queue rows are the package's
(they are derived from commands), but a queue row that names no command is
dropped only with ``drop_orphans``.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors

from .catalog import Catalog, Column, Constraint, Table, compare, read_catalog
from .migrate import MIGRATION_TABLE, Installer
from .templates import Renderer, quote_ident, quote_literal

log = logging.getLogger("stacker_queue")

STACKER_TABLES = ("commands", "command_queue", "agents", "audit_log")
LEGACY_GROUP = "stacker_legacy"
BASELINE_MIGRATION = "0001_command_queue"
PENDING = "('queued', 'sent', 'executing')"

# Stacker's columns that must be there (commands.updated_at came later and is added).
STACKER_COLUMNS = {
    "commands": (
        "id command_id deployment_hash type status priority parameters result error created_by "
        "created_at scheduled_for sent_at started_at completed_at timeout_seconds metadata"
    ),
    "command_queue": "id command_id deployment_hash priority created_at",
    "agents": (
        "id deployment_hash capabilities version system_info last_heartbeat status created_at "
        "updated_at"
    ),
    "audit_log": (
        "id agent_id deployment_hash action status details ip_address user_agent created_at"
    ),
}

# Stacker's indexes that adoption drops: each duplicates one of the package's
# or, for idx_commands_status, turns every status change into a non-HOT update.
REDUNDANT_INDEXES = {
    ("command_queue", "idx_queue_command_id"): "duplicates UNIQUE (command_id)",
    ("commands", "idx_commands_command_id"): "duplicates UNIQUE (command_id)",
    ("agents", "idx_agents_deployment_hash"): "duplicates UNIQUE (deployment_hash)",
    ("commands", "idx_commands_status"): "a btree on status makes every transition non-HOT",
}

# Values for NULLs in columns that become NOT NULL (Stacker's agents and audit
# timestamps were nullable).
NULL_FILLS = {
    ("agents", "created_at"): "coalesce(updated_at, last_heartbeat, now())",
    ("agents", "updated_at"): "coalesce(created_at, last_heartbeat, now())",
    ("audit_log", "created_at"): "'epoch'::timestamptz",
    ("commands", "updated_at"): "coalesce(completed_at, sent_at, created_at)",
}

_VARCHAR = re.compile(r"^character varying\((\d+)\)$")


class AdoptError(RuntimeError):
    """Adoption refused or failed; nothing was changed."""


@dataclass
class AdoptReport:
    schema: str
    dry_run: bool
    state: str = ""
    legacy_role: str | None = None
    statements: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    marked_migrations: list[str] = field(default_factory=list)
    applied_repeatables: list[str] = field(default_factory=list)
    terminated_sessions: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.statements)

    def count(self, key: str, value: int) -> None:
        if value:
            self.counts[key] = self.counts.get(key, 0) + value

    def summary(self) -> str:
        verb = "Would adopt" if self.dry_run else "Adopted"
        if not self.changed:
            lines = [
                f"Nothing to do: schema {self.schema} is already adopted "
                f"(recognised: {self.state})."
            ]
        else:
            lines = [f"{verb} schema {self.schema} (recognised: {self.state}) in one transaction:"]
            lines += [f"  {key}: {value}" for key, value in self.counts.items()]
            if self.marked_migrations:
                lines.append("  migrations marked applied: " + ", ".join(self.marked_migrations))
            if self.applied_repeatables:
                lines.append(f"  repeatable objects applied: {len(self.applied_repeatables)}")
            lines.append(f"  SQL statements: {len(self.statements)}")
        if self.legacy_role:
            lines.append(
                f"  old binary's role {self.legacy_role}: member of {LEGACY_GROUP}, sees only "
                "claimable command_queue rows (row-level security)"
            )
        if self.terminated_sessions:
            lines.append(f"  old binary's sessions ended: {self.terminated_sessions}")
        if self.kept:
            lines.append("  kept (not the package's): " + "; ".join(self.kept))
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  took {self.seconds:.2f} s" + (", rolled back" if self.dry_run else ""))
        return "\n".join(lines)


def split_sql(text: str) -> list[str]:
    """Split SQL text into statements (quotes, dollar quotes and comments aware)."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            buf.append("\n")
            continue
        if ch == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if ch in "'\"":
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            buf.append(text[i : j + 1])
            i = j + 1
            continue
        if ch == "$":
            m = re.match(r"\$[A-Za-z_]*\$", text[i:])
            if m:
                tag = m.group(0)
                j = text.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                buf.append(text[i:j])
                i = j
                continue
        if ch == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    stmt = "".join(buf).strip()
    if stmt:
        statements.append(stmt)
    return statements


def _yoyo_hash(migration_id: str) -> str:
    return hashlib.sha256(migration_id.encode()).hexdigest()


class Adopter:
    """Adopts Stacker's tables in ``schema`` of the database at ``conninfo``."""

    def __init__(
        self,
        conninfo: str,
        schema: str,
        *,
        legacy_role: str | None = None,
        legacy_guard: bool = True,
        drop_orphans: bool = False,
        lock_timeout: str = "5s",
        terminate_legacy_sessions: bool = False,
        renderer: Renderer | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.renderer = renderer or Renderer(schema)
        self.schema = self.renderer.schema
        self.s = quote_ident(self.schema)
        self.legacy_role = legacy_role
        self.legacy_guard = legacy_guard
        self.drop_orphans = drop_orphans
        self.lock_timeout = lock_timeout
        self.terminate_legacy_sessions = terminate_legacy_sessions
        self.installer = Installer(conninfo, self.schema, self.renderer)
        self._conn: psycopg.Connection[Any] | None = None
        self._report = AdoptReport(self.schema, dry_run=False)

    # -- plumbing -----------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None
        return self._conn

    def q(self, table: str) -> str:
        return f"{self.s}.{quote_ident(table)}"

    def run(self, stmt: str, count: str | None = None) -> int:
        """Execute one change, record its SQL, count its rows under ``count``."""
        log.info("adopt: %s", stmt)
        self._report.statements.append(stmt)
        cur = self.conn.execute(stmt)
        rows = cur.rowcount if cur.rowcount >= 0 else 1  # DDL: one change
        if count:
            self._report.count(count, rows)
        return rows

    def value(self, query: str, params: list[Any] | None = None) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.conninfo, autocommit=False) as conn:
            self._conn = conn
            try:
                yield conn
            finally:
                self._conn = None

    # -- entry point -------------------------------------------------------------------------
    def adopt(self, dry_run: bool = False) -> AdoptReport:
        report = self._report = AdoptReport(self.schema, dry_run=dry_run)
        started = time.monotonic()
        with self._transaction() as conn:
            try:
                self._adopt()
            except psycopg.errors.LockNotAvailable as exc:
                conn.rollback()
                raise AdoptError(
                    f"could not lock schema {self.schema}'s tables within lock_timeout "
                    f"{self.lock_timeout} (another session holds them: the old binary mid-"
                    "statement, or an open transaction); nothing was changed: retry, or raise "
                    f"--lock-timeout ({str(exc).strip().splitlines()[0]})"
                ) from None
            except psycopg.errors.DeadlockDetected:
                conn.rollback()
                raise AdoptError(
                    "a deadlock with another session (the old binary) aborted adoption; "
                    "nothing was changed: retry"
                ) from None
            except BaseException:
                conn.rollback()
                raise
            if dry_run:
                conn.rollback()
            else:
                legacy = report.legacy_role
                if self.terminate_legacy_sessions and legacy:
                    self._terminate_sessions(legacy, before_commit=True)
                conn.commit()
                if self.terminate_legacy_sessions and legacy:
                    self._terminate_sessions(legacy, before_commit=False)
        report.seconds = time.monotonic() - started
        return report

    # -- the steps -------------------------------------------------------------------------
    def _adopt(self) -> None:
        conn, report = self.conn, self._report
        conn.execute(f"SET LOCAL lock_timeout = {quote_literal(self.lock_timeout)}")
        # Read old timestamp values as UTC (and convert them without a rewrite).
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        self._began = self.value("SELECT now()")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"stacker-queue:{self.schema}"])
        current = read_catalog(conn, self.schema)
        self._recognise(current)
        legacy = self._check_roles(current)
        report.legacy_role = legacy
        self._lock(current)
        current = read_catalog(conn, self.schema)
        baseline, target = self._target_catalogs()

        marked = self._marked_migrations(current)
        if BASELINE_MIGRATION not in marked:
            self._converge_tables(baseline, current)
            self._fix_queue_rows()
        self._migrations(marked)
        self._replace_stacker_cleanup()
        self._repeatables()
        if legacy:
            self._guard_legacy_role(legacy)

        final = read_catalog(conn, self.schema)
        result = compare(target, final, legacy_guard=legacy is not None)
        report.kept = result.extra
        report.allowed = result.allowed
        conn.execute(f"DROP SCHEMA {quote_ident(self._scratch)} CASCADE")
        if not result.equal:
            raise AdoptError(
                f"after adoption schema {self.schema} would still differ from a fresh install "
                "(nothing was changed): " + "; ".join(result.missing)
            )
        self._warn_about_stacker_jobs()

    # 1. recognise -----------------------------------------------------------------------
    def _recognise(self, current: Catalog) -> None:
        if not current.exists:
            raise AdoptError(f"schema {self.schema} does not exist")
        missing_tables = [t for t in STACKER_TABLES if t not in current.tables]
        if len(missing_tables) == len(STACKER_TABLES):
            raise AdoptError(
                f"schema {self.schema} has none of Stacker's tables ({', '.join(STACKER_TABLES)}): "
                "nothing to adopt; for a new install use stacker-queue migrate"
            )
        if missing_tables:
            raise AdoptError(
                f"schema {self.schema} is not a Stacker schema this version recognises: "
                f"tables {', '.join(missing_tables)} are missing"
            )
        problems: list[str] = []
        for table, columns in STACKER_COLUMNS.items():
            have = current.tables[table]
            if have.kind != "r":
                problems.append(f"{table} is not a table")
                continue
            problems += [
                f"{table}.{c} is missing" for c in columns.split() if c not in have.columns
            ]
        if problems:
            raise AdoptError(
                f"schema {self.schema} is not a Stacker schema this version recognises: "
                + "; ".join(problems)
            )
        queue_id = current.tables["command_queue"].columns["command_id"].type
        audit_at = current.tables["audit_log"].columns["created_at"].type
        hash_type = current.tables["commands"].columns["deployment_hash"].type
        created = current.tables["commands"].columns["created_at"].type
        if "_yoyo_migration" in current.tables:
            state = "a stacker-queue install"
        elif queue_id == "uuid":
            state = "Stacker before the seed's fixes (queue FK to commands.id"
            state += ", timestamp columns)" if "without" in created else ")"
        elif "without" in audit_at:
            state = "Stacker with the queue FK fixed, audit_log.created_at still timestamp"
        elif hash_type == "character varying(64)":
            state = "Stacker after the seed's two fixes (deployment_hash varchar(64))"
        elif any(f.name == "stacker_command_queue_cleanup" for f in current.functions.values()):
            state = "Stacker's latest (stacker_command_queue_cleanup)"
        else:
            state = "Stacker with deployment_hash varchar(128)"
        self._report.state = state

    def _check_roles(self, current: Catalog) -> str | None:
        me, superuser, bypass = self.conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or ("", False, False)
        if not self.legacy_guard:
            return None
        legacy = self.legacy_role or current.tables["commands"].owner
        row = self.conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [legacy]
        ).fetchone()
        if row is None:
            raise AdoptError(f"legacy role {legacy} does not exist")
        if legacy == me:
            raise AdoptError(
                f"adopt is running as {me}, the role of Stacker's old binary (the owner of "
                f"{self.schema}.commands, or --legacy-role): the stored functions it installs "
                "must not be subject to the row-level security that fences the old binary. Run "
                "adopt as another role (a superuser), or pass --legacy-role with the role the old "
                "binary logs in as, or --no-legacy-role if the old binary no longer runs"
            )
        if row[0] or row[1]:
            raise AdoptError(
                f"legacy role {legacy} is a superuser or has BYPASSRLS: row-level security cannot "
                "hide in-flight commands from it, so Stacker's fetch-next SELECT would hand them "
                "out again and again. Run Stacker's binary as an ordinary role and pass "
                "--legacy-role, or --no-legacy-role if the old binary no longer runs"
            )
        member = self.value("SELECT pg_has_role(current_user, %s, 'USAGE')", [legacy])
        if member and not (superuser or bypass):
            raise AdoptError(
                f"adopt is running as {me}, which has the privileges of legacy role {legacy} "
                "without BYPASSRLS: the stored functions it owns would be fenced like the old "
                "binary. Run adopt as a superuser or a role with BYPASSRLS"
            )
        return str(legacy)

    def _lock(self, current: Catalog) -> None:
        tables = [t for t in (*STACKER_TABLES, "app_status", "schema_repeatables")]
        tables = [t for t in tables if t in current.tables and current.tables[t].kind == "r"]
        self.conn.execute(
            f"LOCK TABLE {', '.join(self.q(t) for t in tables)} IN ACCESS EXCLUSIVE MODE"
        )

    # 2. the target -------------------------------------------------------------------------
    def _target_catalogs(self) -> tuple[Catalog, Catalog]:
        """A scratch install of the package: its catalog after migration 0001
        (what the tables converge to; later migrations then run as written,
        as they would on any install) and after everything (what the result
        must equal)."""
        self._scratch = f"_stacker_queue_adopt_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        scratch = Renderer(self._scratch, root=self.renderer.root)
        self.conn.execute(f"CREATE SCHEMA {quote_ident(self._scratch)}")
        migrations = scratch.migrations()
        assert migrations[0][0].name == BASELINE_MIGRATION, migrations[0][0].name
        self.conn.execute(migrations[0][0].text)
        baseline = read_catalog(self.conn, self._scratch)
        for up, _ in migrations[1:]:
            self.conn.execute(up.text)
        for template in scratch.repeatables():
            self.conn.execute(template.text)
        return baseline, read_catalog(self.conn, self._scratch)

    def _marked_migrations(self, current: Catalog) -> set[str]:
        if MIGRATION_TABLE not in current.tables:
            return set()
        rows = self.conn.execute(f"SELECT migration_id FROM {self.q(MIGRATION_TABLE)}").fetchall()
        return {r[0] for r in rows}

    # 3. tables ---------------------------------------------------------------------------------
    def _converge_tables(self, target: Catalog, current: Catalog) -> None:
        baseline = {
            name: table for name, table in target.tables.items() if name in self._baseline_tables()
        }
        assert baseline, "migration 0001 creates no table"
        existing = [name for name in baseline if name in current.tables]
        # Stacker's redundant indexes and the queue's foreign keys go first: the
        # type changes below would otherwise rebuild or refuse them.
        for name in existing:
            for (table, index), why in REDUNDANT_INDEXES.items():
                found = current.tables[name].indexes.get(index) if table == name else None
                if found is not None and not found.backs_constraint:
                    self.run(f"DROP INDEX {self.q(index)}", f"Stacker indexes dropped ({why})")
        queue = current.tables["command_queue"]
        want_fk = baseline["command_queue"].constraints["command_queue_command_id_fkey"]
        for con in list(queue.constraints.values()):
            if con.kind == "f" and con.columns == ("command_id",) and con != want_fk:
                self.run(
                    f"ALTER TABLE {self.q('command_queue')} "
                    f"DROP CONSTRAINT {quote_ident(con.name)}",
                    "queue foreign keys replaced (to commands.command_id)",
                )
        for name in existing:
            self._convert_columns(name, baseline[name], current.tables[name])
        self._remap_queue()
        for name in existing:
            self._add_columns(name, baseline[name], current.tables[name])
        current = read_catalog(self.conn, self.schema)
        for name in existing:
            self._converge_constraints(name, baseline[name], current.tables[name])
            self._converge_indexes(name, baseline[name], current.tables[name])
            have_options = set(current.tables[name].options)
            want_options = [o for o in baseline[name].options if o not in have_options]
            if want_options:  # in the fresh install's order (pg_dump shows it)
                self.run(
                    f"ALTER TABLE {self.q(name)} SET ({', '.join(want_options)})",
                    "storage options set",
                )
        for name in baseline:
            if name not in current.tables:
                self._create_table(name)

    def _baseline_tables(self) -> list[str]:
        up = self.renderer.migrations()[0][0]
        assert up.name == BASELINE_MIGRATION, up.name
        return re.findall(rf"CREATE TABLE {re.escape(self.s)}\.(\w+) \(", up.text)

    def _convert_columns(self, name: str, want: Table, have: Table) -> None:
        for col in sorted(want.columns.values(), key=lambda c: c.position):
            got = have.columns.get(col.name)
            if got is None or got.type == col.type:
                continue
            using = self._conversion(name, got, col)
            if using is None:
                raise AdoptError(
                    f"schema {self.schema} is not a Stacker schema this version recognises: "
                    f"column {name}.{col.name} is {got.type}, and this version converts only "
                    f"to {col.type} from timestamp, a shorter varchar or "
                    "(command_queue.command_id) uuid"
                )
            key = {
                "timestamp with time zone": "timestamp columns made timestamptz (read as UTC)",
            }.get(col.type, "columns widened or retyped")
            self.run(
                f"ALTER TABLE {self.q(name)} ALTER COLUMN {quote_ident(col.name)} "
                f"TYPE {col.type}{using}",
                key,
            )
            if name == "audit_log" and col.name == "created_at":
                rows = self.value(
                    f"SELECT count(*) FROM {self.q('audit_log')} WHERE created_at IS NOT NULL"
                )
                self._report.count("audit_log.created_at values read as UTC", int(rows))

    @staticmethod
    def _conversion(table: str, got: Column, want: Column) -> str | None:
        if (got.type, want.type) == ("timestamp without time zone", "timestamp with time zone"):
            return ""  # TimeZone is UTC in this transaction: no rewrite
        old, new = _VARCHAR.match(got.type), _VARCHAR.match(want.type)
        if old and new and int(old.group(1)) <= int(new.group(1)):
            return ""
        if (table, want.name, got.type) == ("command_queue", "command_id", "uuid") and new:
            return f" USING {quote_ident(want.name)}::text"
        return None

    def _remap_queue(self) -> None:
        """Queue rows naming commands.id (the broken uuid FK) get commands.command_id."""
        q, c = self.q("command_queue"), self.q("commands")
        self.run(
            f"UPDATE {q} q SET command_id = c.command_id FROM {c} c "
            f"WHERE c.id::text = q.command_id "
            f"AND NOT EXISTS (SELECT FROM {c} k WHERE k.command_id = q.command_id)",
            "queue rows remapped from commands.id to commands.command_id",
        )
        orphans = self.conn.execute(
            f"SELECT q.command_id FROM {q} q "
            f"WHERE NOT EXISTS (SELECT FROM {c} k WHERE k.command_id = q.command_id) "
            "ORDER BY q.created_at"
        ).fetchall()
        if orphans and not self.drop_orphans:
            shown = ", ".join(str(r[0]) for r in orphans[:10])
            raise AdoptError(
                f"{len(orphans)} command_queue rows name no command (neither a commands.id nor a "
                f"commands.command_id): {shown}{' ...' if len(orphans) > 10 else ''}. Nothing was "
                "changed. Rerun with --drop-orphans to delete them (they cannot be delivered)"
            )
        if orphans:
            self.run(
                f"DELETE FROM {q} q WHERE NOT EXISTS "
                f"(SELECT FROM {c} k WHERE k.command_id = q.command_id)",
                "unmappable queue rows dropped (--drop-orphans)",
            )
        self.run(
            f"DELETE FROM {q} q USING {q} k WHERE k.command_id = q.command_id "
            "AND (k.created_at, k.id) < (q.created_at, q.id)",
            "duplicate queue rows removed",
        )
        self.run(
            f"DELETE FROM {q} q USING {c} c WHERE c.command_id = q.command_id "
            f"AND c.status NOT IN {PENDING}",
            "queue rows of finished commands removed",
        )

    def _add_columns(self, name: str, want: Table, have: Table) -> None:
        for col in sorted(want.columns.values(), key=lambda c: c.position):
            got = have.columns.get(col.name)
            if got is None:
                default = f" DEFAULT {col.default}" if col.default is not None else ""
                not_null = " NOT NULL" if col.not_null else ""
                self.run(
                    f"ALTER TABLE {self.q(name)} ADD COLUMN {quote_ident(col.name)} "
                    f"{col.type}{default}{not_null}",
                    "columns added",
                )
                continue
            if got.default != col.default:
                action = "DROP DEFAULT" if col.default is None else f"SET DEFAULT {col.default}"
                self.run(
                    f"ALTER TABLE {self.q(name)} ALTER COLUMN {quote_ident(col.name)} {action}",
                    "column defaults set",
                )
            if col.not_null and not got.not_null:
                nulls = int(
                    self.value(
                        f"SELECT count(*) FROM {self.q(name)} WHERE {quote_ident(col.name)} IS NULL"
                    )
                )
                if nulls:
                    fill = NULL_FILLS.get((name, col.name))
                    if fill is None:
                        raise AdoptError(
                            f"{nulls} rows of {self.schema}.{name} have no {col.name}, which "
                            "becomes NOT NULL; nothing was changed: fill them first"
                        )
                    self.run(
                        f"UPDATE {self.q(name)} SET {quote_ident(col.name)} = {fill} "
                        f"WHERE {quote_ident(col.name)} IS NULL",
                        f"{name}.{col.name} NULLs filled ({fill})",
                    )
                self.run(
                    f"ALTER TABLE {self.q(name)} ALTER COLUMN {quote_ident(col.name)} SET NOT NULL",
                    "columns made NOT NULL",
                )
            elif got.not_null and not col.not_null:
                self.run(
                    f"ALTER TABLE {self.q(name)} ALTER COLUMN {quote_ident(col.name)} "
                    "DROP NOT NULL",
                    "columns made nullable",
                )

    def _converge_constraints(self, name: str, want: Table, have: Table) -> None:
        order = {"p": 0, "u": 1, "c": 2, "f": 3, "x": 4}
        taken = dict(have.constraints)
        for con in sorted(want.constraints.values(), key=lambda k: (order[k.kind], k.name)):
            got = taken.get(con.name)
            if got is not None and (got.kind, got.definition) == (con.kind, con.definition):
                continue
            if got is not None:
                self.run(
                    f"ALTER TABLE {self.q(name)} DROP CONSTRAINT {quote_ident(con.name)}",
                    "constraints replaced",
                )
                del taken[con.name]
            same = [
                k
                for k in taken.values()
                if (k.kind, k.definition) == (con.kind, con.definition)
                and k.name not in want.constraints
            ]
            if same:
                self.run(
                    f"ALTER TABLE {self.q(name)} RENAME CONSTRAINT {quote_ident(same[0].name)} "
                    f"TO {quote_ident(con.name)}",
                    "Stacker constraints renamed to the package's names",
                )
                del taken[same[0].name]
                continue
            self._check_constraint_holds(name, con)
            definition = con.definition.replace("@schema@.", f"{self.s}.")
            self.run(
                f"ALTER TABLE {self.q(name)} ADD CONSTRAINT {quote_ident(con.name)} {definition}",
                "constraints added",
            )

    def _check_constraint_holds(self, name: str, con: Constraint) -> None:
        if con.kind != "c":
            return
        expr = con.definition.removeprefix("CHECK ")
        bad = int(self.value(f"SELECT count(*) FROM {self.q(name)} WHERE NOT {expr}"))
        if bad:
            raise AdoptError(
                f"{bad} rows of {self.schema}.{name} violate {con.name} {con.definition}; "
                "nothing was changed: fix or remove them first "
                f"(SELECT * FROM {self.schema}.{name} WHERE NOT {expr})"
            )

    def _converge_indexes(self, name: str, want: Table, have: Table) -> None:
        taken = {k: v for k, v in have.indexes.items() if not v.backs_constraint}
        for index in want.indexes.values():
            if index.backs_constraint:
                continue
            got = taken.get(index.name)
            if got is not None and got.definition == index.definition:
                continue
            if got is not None:
                self.run(f"DROP INDEX {self.q(index.name)}", "indexes replaced")
                del taken[index.name]
            same = [
                k
                for k in taken.values()
                if k.definition == index.definition and k.name not in want.indexes
            ]
            if same:
                self.run(
                    f"ALTER INDEX {self.q(same[0].name)} RENAME TO {quote_ident(index.name)}",
                    "Stacker indexes renamed to the package's names",
                )
                del taken[same[0].name]
                continue
            definition = index.definition.replace(
                "INDEX @index@ ON ", f"INDEX {quote_ident(index.name)} ON "
            ).replace("@schema@.", f"{self.s}.")
            self.run(definition, "indexes created")

    def _create_table(self, name: str) -> None:
        """A table Stacker lacks (app_status, schema_repeatables): migration
        0001's own statements for it."""
        up = self.renderer.migrations()[0][0]
        pattern = re.compile(
            rf"^(CREATE TABLE {re.escape(self.s)}\.{name} \(|CREATE (UNIQUE )?INDEX \S+\s+ON "
            rf"{re.escape(self.s)}\.{name} )"
        )
        statements = [s for s in split_sql(up.text) if pattern.match(s)]
        if not statements:
            raise AdoptError(f"migration {up.name} has no CREATE TABLE for {name}")
        for stmt in statements:
            self.run(stmt, "tables created" if stmt.startswith("CREATE TABLE") else None)

    # 4. data ---------------------------------------------------------------------------------
    def _fix_queue_rows(self) -> None:
        q, c, a = self.q("command_queue"), self.q("commands"), self.q("agents")
        rank = self.renderer.macro("priority_rank", "c.priority")
        visible = self.renderer.macro("queue_visible_at", "c")
        lease = self.renderer.macro("queue_lease", "c")
        # Sent or executing under Stacker: delivered once, nobody knows whether
        # the agent got it. An already expired lease makes it due for redelivery.
        self.run(
            f"UPDATE {c} c SET lease_expires_at = now(), attempts = greatest(c.attempts, 1), "
            "sent_at = coalesce(c.sent_at, c.updated_at), "
            f"agent_id = coalesce(c.agent_id, (SELECT a.id FROM {a} a "
            "WHERE a.deployment_hash = c.deployment_hash)) "
            "WHERE c.status IN ('sent', 'executing') AND c.lease_expires_at IS NULL",
            "sent or executing commands given an expired lease (redelivered)",
        )
        self.run(
            f"INSERT INTO {q} (command_id, deployment_hash, priority, created_at, visible_at, "
            f"lease_expires_at) SELECT c.command_id, c.deployment_hash, {rank}, c.created_at, "
            f"{visible}, {lease} FROM {c} c WHERE c.status = 'queued' "
            f"AND NOT EXISTS (SELECT FROM {q} q WHERE q.command_id = c.command_id)",
            "queue rows created for queued commands that had none (lost commands)",
        )
        self.run(
            f"INSERT INTO {q} (command_id, deployment_hash, priority, created_at, visible_at, "
            f"lease_expires_at) SELECT c.command_id, c.deployment_hash, {rank}, c.created_at, "
            f"{visible}, {lease} FROM {c} c WHERE c.status IN ('sent', 'executing') "
            f"AND NOT EXISTS (SELECT FROM {q} q WHERE q.command_id = c.command_id)",
            "queue rows created for in-flight commands",
        )
        self.run(
            f"UPDATE {q} q SET deployment_hash = c.deployment_hash, priority = {rank}, "
            f"created_at = c.created_at, visible_at = {visible}, lease_expires_at = {lease} "
            f"FROM {c} c WHERE c.command_id = q.command_id "
            "AND (q.deployment_hash, q.priority, q.created_at, q.visible_at, q.lease_expires_at) "
            f"IS DISTINCT FROM (c.deployment_hash, {rank}, c.created_at, {visible}, {lease})",
            "queue rows re-derived from their commands",
        )

    # 5. migrations and repeatables ---------------------------------------------------------
    def _migrations(self, marked: set[str]) -> None:
        q = self.q
        if MIGRATION_TABLE not in self._tables():
            for stmt in (
                f"CREATE TABLE IF NOT EXISTS {q('yoyo_lock')} (locked INT DEFAULT 1, "
                "ctime TIMESTAMP, pid INT NOT NULL, PRIMARY KEY (locked))",
                f"CREATE TABLE IF NOT EXISTS {q('_yoyo_log')} (id VARCHAR(36), "
                "migration_hash VARCHAR(64), migration_id VARCHAR(255), operation VARCHAR(10), "
                "username VARCHAR(255), hostname VARCHAR(255), comment VARCHAR(255), "
                "created_at_utc TIMESTAMP, PRIMARY KEY (id))",
                f"CREATE TABLE IF NOT EXISTS {q('_yoyo_version')} (version INT NOT NULL PRIMARY "
                "KEY, installed_at_utc TIMESTAMP)",
                f"INSERT INTO {q('_yoyo_version')} VALUES (2, now() AT TIME ZONE 'utc')",
                f"CREATE TABLE {q(MIGRATION_TABLE)} (migration_hash VARCHAR(64), "
                "migration_id VARCHAR(255), applied_at_utc TIMESTAMP, "
                "PRIMARY KEY (migration_hash))",
            ):
                self.run(stmt)
        user, host = quote_literal(getpass.getuser()), quote_literal(socket.getfqdn())
        for up, _ in self.renderer.migrations():
            if up.name in marked:
                continue
            if up.name != BASELINE_MIGRATION:
                self.run(up.text.strip(), "migrations run")
            migration_hash = quote_literal(_yoyo_hash(up.name))
            self.run(
                f"INSERT INTO {q(MIGRATION_TABLE)} (migration_hash, migration_id, applied_at_utc) "
                f"VALUES ({migration_hash}, {quote_literal(up.name)}, "
                "clock_timestamp() AT TIME ZONE 'utc')"
            )
            self.run(
                f"INSERT INTO {q('_yoyo_log')} (id, migration_hash, migration_id, operation, "
                "username, hostname, comment, created_at_utc) VALUES "
                f"({quote_literal(str(uuid.uuid1()))}, {migration_hash}, {quote_literal(up.name)}, "
                f"'mark', {user}, {host}, 'stacker-queue adopt', "
                "clock_timestamp() AT TIME ZONE 'utc')"
            )
            self._report.marked_migrations.append(up.name)

    def _tables(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v')",
            [self.schema],
        ).fetchall()
        return {r[0] for r in rows}

    def _replace_stacker_cleanup(self) -> None:
        """Stacker's stacker_command_queue_cleanup (RETURNS void, deletes the
        queue rows of sent commands) gives way to the package's."""
        row = self.conn.execute(
            "SELECT p.oid::regprocedure::text, p.prosecdef FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = 'stacker_command_queue_cleanup' "
            "AND p.proargtypes = '1186'::oidvector AND p.prorettype <> 'jsonb'::regtype",
            [self.schema],
        ).fetchone()
        if row is not None:
            self.run(
                f"DROP FUNCTION {self.q('stacker_command_queue_cleanup')}(interval)",
                "Stacker's stacker_command_queue_cleanup(interval) replaced",
            )

    def _repeatables(self) -> None:
        applied = [up.name for up, _ in self.renderer.migrations()]
        for template, digest in self.installer._stale(self.conn, applied):
            self.run(template.text.strip())
            self.run(
                f"INSERT INTO {self.q('schema_repeatables')} (kind, name, sha256, applied_at) "
                f"VALUES ({quote_literal(template.kind)}, {quote_literal(template.name)}, "
                f"{quote_literal(digest)}, now()) ON CONFLICT (kind, name) DO UPDATE "
                "SET sha256 = excluded.sha256, applied_at = excluded.applied_at"
            )
            self._report.applied_repeatables.append(f"{template.kind}:{template.name}")

    # 6. the old binary -----------------------------------------------------------------------
    def _guard_legacy_role(self, legacy: str) -> None:
        # The package's functions must see every queue row: none may belong to
        # a role the guard fences (a later migrate run as the old binary's role).
        fenced = self.conn.execute(
            "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner "
            "WHERE n.nspname = %s AND p.proname = ANY (%s) AND NOT (r.rolsuper OR r.rolbypassrls) "
            "AND pg_has_role(p.proowner, %s, 'USAGE')",
            [self.schema, [t.path.stem for t in self.renderer.functions()], legacy],
        ).fetchall()
        if fenced:
            raise AdoptError(
                f"functions {', '.join(f for f, _ in fenced)} belong to {fenced[0][1]}, which "
                f"the old binary's guard fences (it has the privileges of {legacy}): they would "
                "not see in-flight queue rows. Give them to the adopting role (ALTER FUNCTION ... "
                "OWNER TO) and run stacker-queue migrate and adopt as that role"
            )
        rls = self.conn.execute(
            "SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'command_queue'",
            [self.schema],
        ).fetchone()
        assert rls is not None
        if not rls[0]:
            self.run(f"ALTER TABLE {self.q('command_queue')} ENABLE ROW LEVEL SECURITY")
        if not rls[1]:
            self.run(f"ALTER TABLE {self.q('command_queue')} FORCE ROW LEVEL SECURITY")
        member = self.value(
            "SELECT EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = %s::regrole "
            "AND m.member = %s::regrole)",
            [LEGACY_GROUP, quote_ident(legacy)],
        )
        if not member:
            self.run(f"GRANT {LEGACY_GROUP} TO {quote_ident(legacy)}")
        cleanup = f"{self.q('stacker_command_queue_cleanup')}(interval)"
        if not self.value(
            "SELECT has_function_privilege(%s, %s::regprocedure, 'EXECUTE')", [legacy, cleanup]
        ):
            self.run(f"GRANT EXECUTE ON FUNCTION {cleanup} TO {quote_ident(legacy)}")

    def _terminate_sessions(self, legacy: str, before_commit: bool) -> None:
        """End the old binary's sessions that predate adoption, once idle.

        PostgreSQL refuses a prepared statement whose result columns changed type
        ("cached plan must not change result type", 0A000), and sqlx keeps its
        statements prepared per connection; a new connection prepares them again.
        Before the commit the idle ones go; after it, for up to ten seconds, each
        one that was mid-statement goes as soon as it is idle.
        """
        query = (
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a "
            "WHERE a.usename = %s AND a.datname = current_database() "
            "AND a.pid <> pg_backend_pid() AND a.backend_start < %s AND a.state LIKE 'idle%%'"
        )
        if before_commit:
            self._report.terminated_sessions += int(self.value(query, [legacy, self._began]) or 0)
            return
        deadline = time.monotonic() + 10
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while True:
                row = conn.execute(query, [legacy, self._began]).fetchone()
                self._report.terminated_sessions += int(row[0]) if row else 0
                left = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                    "AND datname = current_database() AND backend_start < %s",
                    [legacy, self._began],
                ).fetchone()
                if not left or not left[0] or time.monotonic() > deadline:
                    return
                time.sleep(0.1)

    def _warn_about_stacker_jobs(self) -> None:
        row = self.conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = 'stacker_cleanup_audit_logs'",
            [self.schema],
        ).fetchone()
        if row and row[0]:
            self._report.warnings.append(
                "Stacker's stacker_cleanup_audit_logs() deletes from audit_log, which is now "
                "append-only: its pg_cron job will fail. Unschedule it and schedule "
                f"{self.schema}.purge_audit_log(interval) instead (docs/adopting-stacker.md)"
            )
