"""What the reliability suites (faults, stress, model, bad input, security)
share: scratch databases, table snapshots, the queue invariant, audit
accounting and SQLSTATE helpers. A plain module, imported by name."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from conftest import SESSION_TAG, Database, new_database
from psycopg import sql

TERMINAL = ("completed", "failed", "cancelled")
PENDING = ("queued", "sent", "executing")
ROOT = Path(__file__).resolve().parents[1]


def unique(prefix: str) -> str:
    """A name no other session of this server uses (pid and random)."""
    return f"{prefix}_{SESSION_TAG}_{uuid.uuid4().hex[:8]}"


@contextmanager
def scratch_database(pg_server: Any, prefix: str = "sq5") -> Iterator[Database]:
    """A database of its own, copied from the session's installed template
    (for module-scoped fixtures); dropped afterwards."""
    with new_database(pg_server, unique(prefix), pg_server.template_dbname) as database:
        yield database


def sqlstate_of(call: Callable[[], Any]) -> tuple[str | None, str]:
    """(SQLSTATE, message) of the error ``call`` raises; fails when it raises none."""
    try:
        call()
    except psycopg.Error as exc:
        return exc.sqlstate, (exc.diag.message_primary or str(exc))
    raise AssertionError("no error was raised")


# -- snapshots ------------------------------------------------------------------------------
def table_snapshot(conn: psycopg.Connection[Any], schema: str = "stacker") -> dict[str, str]:
    """md5 and row count of every table of the schema (yoyo's and the installer's too)."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "WHERE c.relnamespace = pg_catalog.to_regnamespace(%s) AND c.relkind IN ('r', 'p') "
            "ORDER BY 1",
            [schema],
        ).fetchall()
    ]
    snap: dict[str, str] = {}
    for table in tables:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                "FROM {}.{} t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        assert row is not None
        snap[table] = f"{row[0]}:{row[1]}"
    return snap


# -- the queue invariant --------------------------------------------------------------------
def queue_invariant_violations(
    conn: psycopg.Connection[Any], schema: str = "stacker"
) -> list[tuple[Any, ...]]:
    """Rows breaking "a queue row exists exactly while its command is queued,
    sent or executing" (both directions), or a queue row out of step with its
    command (deployment, lease)."""
    return conn.execute(
        sql.SQL(
            """
            SELECT coalesce(c.command_id, q.command_id), c.status, q.command_id IS NOT NULL
              FROM {s}.commands c
              FULL JOIN {s}.command_queue q ON q.command_id = c.command_id
             WHERE (c.status IN ('queued', 'sent', 'executing')) IS DISTINCT FROM (q.id IS NOT NULL)
                OR c.command_id IS NULL
                OR (q.id IS NOT NULL AND (q.deployment_hash <> c.deployment_hash
                    OR (c.status = 'queued') <> (q.lease_expires_at IS NULL)
                    OR (c.status <> 'queued' AND q.lease_expires_at <> c.lease_expires_at)))
            """
        ).format(s=sql.Identifier(schema))
    ).fetchall()


def deadlock_count(conn: psycopg.Connection[Any]) -> int:
    """pg_stat_database.deadlocks of the connection's database (fresh snapshot)."""
    conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT deadlocks FROM pg_catalog.pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def settled_deadlock_count(conn: psycopg.Connection[Any], wait: float = 1.2) -> int:
    """Backends flush their statistics at most once a second: wait, then read."""
    time.sleep(wait)
    return deadlock_count(conn)


# -- audit accounting -----------------------------------------------------------------------
@dataclass
class AuditCheck:
    """Expected audit rows of each command, derived from its history, against
    the rows audit_log holds. ``starts`` and ``requeues`` come from what the
    clients observed; attempts and terminal status from the commands table."""

    starts: dict[str, set[datetime]] = field(default_factory=lambda: defaultdict(set))
    requeues: Counter[str] = field(default_factory=Counter)

    def mismatches(
        self, conn: psycopg.Connection[Any], command_ids: set[str], schema: str = "stacker"
    ) -> tuple[int, int, list[tuple[str, dict[str, int], dict[str, int]]]]:
        final = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                sql.SQL("SELECT command_id, status, attempts FROM {}.commands").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
        }
        actual: dict[str, Counter[str]] = defaultdict(Counter)
        for command_id, action in conn.execute(
            sql.SQL(
                "SELECT details ->> 'command_id', action FROM {}.audit_log "
                "WHERE action LIKE 'command.%'"
            ).format(sql.Identifier(schema))
        ).fetchall():
            actual[command_id][action] += 1
        expected_total = actual_total = 0
        bad: list[tuple[str, dict[str, int], dict[str, int]]] = []
        for command_id in sorted(command_ids | set(actual)):
            status, attempts = final.get(command_id, (None, 0))
            want: Counter[str] = Counter(
                {
                    "command.created": 1,
                    "command.sent": attempts,
                    "command.executing": len(self.starts.get(command_id, ())),
                    "command.requeued": self.requeues.get(command_id, 0),
                }
            )
            if status in TERMINAL:
                want[f"command.{status}"] += 1
            want = +want
            got = +actual.get(command_id, Counter())
            expected_total += sum(want.values())
            actual_total += sum(got.values())
            if want != got:
                bad.append((command_id, dict(want), dict(got)))
        return expected_total, actual_total, bad


def premature_redeliveries(
    conn: psycopg.Connection[Any], command_ids: set[str] | None = None
) -> list[tuple[Any, ...]]:
    """Deliveries (command.sent, or a sweep's command.requeued) that happened
    while the previous delivery's lease was still running. The lease of each
    delivery is in its command.sent audit row; pass only commands whose lease
    was never extended (extend_lease writes no audit row)."""
    rows = conn.execute(
        """
        WITH d AS (
            SELECT details ->> 'command_id' AS command_id, action, created_at,
                   (details ->> 'attempts')::int AS attempts,
                   (details ->> 'lease_expires_at')::timestamptz AS lease
              FROM stacker.audit_log
             WHERE action IN ('command.sent', 'command.requeued')
        )
        SELECT nxt.command_id, nxt.action, nxt.attempts, nxt.created_at, prev.lease
          FROM d nxt
          JOIN d prev ON prev.command_id = nxt.command_id AND prev.action = 'command.sent'
                     AND ((nxt.action = 'command.sent' AND prev.attempts = nxt.attempts - 1)
                       OR (nxt.action = 'command.requeued' AND prev.attempts = nxt.attempts))
         WHERE nxt.created_at < prev.lease
        """
    ).fetchall()
    if command_ids is None:
        return rows
    return [r for r in rows if r[0] in command_ids]


def write_figures(name: str, figures: dict[str, Any]) -> None:
    """Print the figures of a run and keep them in $STACKER_QUEUE_FIGURES_DIR
    (when set) as JSON, for docs/reliability.md."""
    print(f"\n{name}: {json.dumps(figures, sort_keys=True, default=str)}")
    folder = os.environ.get("STACKER_QUEUE_FIGURES_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(
            json.dumps(figures, indent=2, sort_keys=True, default=str)
        )
