"""Stacker-shaped databases for the adoption tests, built from Stacker's own
migrations (trydirect/stacker: the commands/command_queue creation migration,
20251222160219_create_agents_and_audit_log, the December updated_at/FK fix,
20251222225538_timestamptz_for_agents_deployments_commands, the seed's
20260113000001/2 fixes, the varchar(128) widening and
20260312210000_command_queue_cleanup_cron), and the SQL statements of its
running binary (src/db/command.rs, src/db/agent.rs), kept verbatim but for
psycopg's %s placeholders. Reference only: this is what adoption must accept
and keep working, not code of this package.

States (``STATES``):

- ``initial``: the first migrations as written: every timestamp naive,
  deployment_hash varchar(64) with foreign keys to Stacker's deployment table,
  command_queue.command_id uuid REFERENCES commands(id), updated_at appended.
- ``broken``: the seed's production state: timestamps of commands, queue and
  agents moved to timestamptz, but the queue FK still uuid -> commands(id) and
  audit_log.created_at still timestamp.
- ``fixed``: after the seed's two fixes (queue FK to commands(command_id),
  audit_log.created_at timestamptz); deployment_hash still varchar(64).
- ``latest``: deployment_hash varchar(128) everywhere, no foreign keys to
  deployment, Stacker's stacker_command_queue_cleanup(interval), and the later
  agents.token_hash columns (a column adoption does not know and must keep).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from conftest import Database, conninfo_of
from psycopg import sql
from psycopg.types.json import Jsonb

STATES = ("initial", "broken", "fixed", "latest")

# -- Stacker's DDL ------------------------------------------------------------------------
DEPLOYMENT = """
CREATE TABLE deployment (
    id serial PRIMARY KEY,
    deployment_hash VARCHAR(64) UNIQUE NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
"""

COMMANDS_AND_QUEUE = """
CREATE TABLE commands (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    command_id VARCHAR(64) UNIQUE NOT NULL,
    deployment_hash VARCHAR(64) NOT NULL REFERENCES deployment(deployment_hash) ON DELETE CASCADE,
    type VARCHAR(100) NOT NULL,
    status VARCHAR(50) DEFAULT 'queued' NOT NULL,
    priority VARCHAR(20) DEFAULT 'normal' NOT NULL,
    parameters JSONB DEFAULT '{}'::jsonb,
    result JSONB,
    error JSONB,
    created_by VARCHAR(255) NOT NULL,
    created_at TIMESTAMP DEFAULT NOW() NOT NULL,
    scheduled_for TIMESTAMP,
    sent_at TIMESTAMP,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    timeout_seconds INTEGER DEFAULT 300,
    metadata JSONB DEFAULT '{}'::jsonb,
    CONSTRAINT chk_command_status CHECK (status IN ('queued', 'sent', 'executing', 'completed', 'failed', 'cancelled')),
    CONSTRAINT chk_command_priority CHECK (priority IN ('low', 'normal', 'high', 'critical'))
);

CREATE INDEX idx_commands_deployment_hash ON commands(deployment_hash);
CREATE INDEX idx_commands_status ON commands(status);
CREATE INDEX idx_commands_created_by ON commands(created_by);
CREATE INDEX idx_commands_created_at ON commands(created_at);
CREATE INDEX idx_commands_command_id ON commands(command_id);

CREATE TABLE command_queue (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    command_id UUID NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    deployment_hash VARCHAR(64) NOT NULL,
    priority INTEGER DEFAULT 0 NOT NULL,
    created_at TIMESTAMP DEFAULT NOW() NOT NULL
);

CREATE INDEX idx_queue_deployment ON command_queue(deployment_hash, priority DESC, created_at ASC);
CREATE INDEX idx_queue_command_id ON command_queue(command_id);
"""  # noqa: E501

AGENTS_AND_AUDIT_LOG = """
CREATE TABLE agents (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_hash VARCHAR(64) UNIQUE NOT NULL REFERENCES deployment(deployment_hash) ON DELETE CASCADE,
    capabilities JSONB DEFAULT '[]'::jsonb,
    version VARCHAR(50),
    system_info JSONB DEFAULT '{}'::jsonb,
    last_heartbeat TIMESTAMP,
    status VARCHAR(50) DEFAULT 'offline',
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),
    CONSTRAINT chk_agent_status CHECK (status IN ('online', 'offline', 'degraded'))
);

CREATE INDEX idx_agents_deployment_hash ON agents(deployment_hash);
CREATE INDEX idx_agents_status ON agents(status);
CREATE INDEX idx_agents_last_heartbeat ON agents(last_heartbeat);

CREATE TABLE audit_log (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id UUID REFERENCES agents(id) ON DELETE SET NULL,
    deployment_hash VARCHAR(64),
    action VARCHAR(100) NOT NULL,
    status VARCHAR(50),
    details JSONB DEFAULT '{}'::jsonb,
    ip_address INET,
    user_agent TEXT,
    created_at TIMESTAMP DEFAULT NOW()
);

CREATE INDEX idx_audit_log_agent_id ON audit_log(agent_id);
CREATE INDEX idx_audit_log_deployment_hash ON audit_log(deployment_hash);
CREATE INDEX idx_audit_log_action ON audit_log(action);
CREATE INDEX idx_audit_log_created_at ON audit_log(created_at);
"""  # noqa: E501

# The December migration's first half (its FK half never reached the seed's database).
ADD_UPDATED_AT = (
    "ALTER TABLE commands ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP DEFAULT NOW() NOT NULL;"
)

TIMESTAMPTZ = """
ALTER TABLE commands
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC',
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING updated_at AT TIME ZONE 'UTC',
    ALTER COLUMN scheduled_for TYPE TIMESTAMPTZ USING scheduled_for AT TIME ZONE 'UTC',
    ALTER COLUMN sent_at TYPE TIMESTAMPTZ USING sent_at AT TIME ZONE 'UTC',
    ALTER COLUMN started_at TYPE TIMESTAMPTZ USING started_at AT TIME ZONE 'UTC',
    ALTER COLUMN completed_at TYPE TIMESTAMPTZ USING completed_at AT TIME ZONE 'UTC';
ALTER TABLE command_queue
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC';
ALTER TABLE agents
    ALTER COLUMN last_heartbeat TYPE TIMESTAMPTZ USING last_heartbeat AT TIME ZONE 'UTC',
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC',
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING updated_at AT TIME ZONE 'UTC';
"""

# 20260113000001_fix_command_queue_fk and 20260113000002_fix_audit_log_timestamp (the seed).
SEED_FIXES = """
ALTER TABLE command_queue DROP CONSTRAINT command_queue_command_id_fkey;
ALTER TABLE command_queue ALTER COLUMN command_id TYPE VARCHAR(64);
ALTER TABLE command_queue ADD CONSTRAINT command_queue_command_id_fkey
  FOREIGN KEY (command_id) REFERENCES commands(command_id) ON DELETE CASCADE;
ALTER TABLE audit_log ALTER COLUMN created_at TYPE TIMESTAMPTZ;
"""

WIDEN = """
ALTER TABLE commands DROP CONSTRAINT commands_deployment_hash_fkey;
ALTER TABLE agents DROP CONSTRAINT agents_deployment_hash_fkey;
ALTER TABLE commands ALTER COLUMN deployment_hash TYPE VARCHAR(128);
ALTER TABLE command_queue ALTER COLUMN deployment_hash TYPE VARCHAR(128);
ALTER TABLE agents ALTER COLUMN deployment_hash TYPE VARCHAR(128);
ALTER TABLE audit_log ALTER COLUMN deployment_hash TYPE VARCHAR(128);
"""

# 20260312210000_command_queue_cleanup_cron (without its pg_cron scheduling).
STACKER_CLEANUP = """
CREATE OR REPLACE FUNCTION stacker_command_queue_cleanup(
    queue_ttl INTERVAL DEFAULT INTERVAL '48 hours'
)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE commands
    SET status = 'cancelled', updated_at = NOW()
    WHERE status = 'queued'
      AND COALESCE(scheduled_for, created_at) < NOW() - queue_ttl;
    DELETE FROM command_queue q
    USING commands c
    WHERE q.command_id = c.command_id
      AND c.status <> 'queued';
    DELETE FROM command_queue q
    WHERE NOT EXISTS (
        SELECT 1 FROM commands c WHERE c.command_id = q.command_id
    );
    DELETE FROM command_queue
    WHERE created_at < NOW() - queue_ttl;
END;
$$;
"""

# 20260907120000_agents_token_hash: columns Stacker added later, unknown to adoption.
TOKEN_HASH = """
ALTER TABLE agents ADD COLUMN IF NOT EXISTS token_hash TEXT;
ALTER TABLE agents ADD COLUMN IF NOT EXISTS token_hash_updated_at TIMESTAMPTZ;
COMMENT ON COLUMN agents.token_hash IS
  'Algorithm-tagged digest of the agent bearer token, e.g. sha256:<64 hex>. Never the token itself.';
"""  # noqa: E501


def state_ddl(state: str) -> list[str]:
    steps = [DEPLOYMENT, COMMANDS_AND_QUEUE, AGENTS_AND_AUDIT_LOG, ADD_UPDATED_AT]
    if state in ("broken", "fixed", "latest"):
        steps.append(TIMESTAMPTZ)
    if state in ("fixed", "latest"):
        steps.append(SEED_FIXES)
    if state == "latest":
        steps += [WIDEN, STACKER_CLEANUP, TOKEN_HASH]
    return steps


# -- Stacker's statements (src/db/command.rs, src/db/agent.rs) ----------------------------
INSERT_COMMAND = """
        INSERT INTO commands (
            id, command_id, deployment_hash, type, status, priority,
            parameters, result, error, created_by, created_at, updated_at,
            timeout_seconds, metadata
        )
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING id, command_id, deployment_hash, type, status, priority,
                  parameters, result, error, created_by, created_at, updated_at,
                  timeout_seconds, metadata
"""
ADD_TO_QUEUE = """
        INSERT INTO command_queue (command_id, deployment_hash, priority)
        VALUES (%s, %s, %s)
"""
FETCH_NEXT = """
        SELECT c.id, c.command_id, c.deployment_hash, c.type, c.status, c.priority,
               c.parameters, c.result, c.error, c.created_by, c.created_at, c.updated_at,
               c.timeout_seconds, c.metadata
        FROM commands c
        INNER JOIN command_queue q ON c.command_id = q.command_id
        WHERE q.deployment_hash = %s
        ORDER BY q.priority DESC, q.created_at ASC
        LIMIT 1
"""
REMOVE_FROM_QUEUE = """
        DELETE FROM command_queue
        WHERE command_id = %s
"""
UPDATE_STATUS = """
        UPDATE commands
        SET status = %s, updated_at = NOW()
        WHERE command_id = %s
        RETURNING id, command_id, deployment_hash, type, status, priority,
                  parameters, result, error, created_by, created_at, updated_at,
                  timeout_seconds, metadata
"""
UPDATE_RESULT = """
        UPDATE commands
        SET status = %s, result = %s, error = %s, updated_at = NOW()
        WHERE command_id = %s
        RETURNING id, command_id, deployment_hash, type, status, priority,
                  parameters, result, error, created_by, created_at, updated_at,
                  timeout_seconds, metadata
"""
CANCEL_DELETE = """
        DELETE FROM command_queue
        WHERE command_id = %s
"""
CANCEL_UPDATE = """
        UPDATE commands
        SET status = 'cancelled', updated_at = NOW()
        WHERE command_id = %s
        RETURNING id, command_id, deployment_hash, type, status, priority,
                  parameters, result, error, created_by, created_at, updated_at,
                  timeout_seconds, metadata
"""
FETCH_BY_COMMAND_ID = """
        SELECT id, command_id, deployment_hash, type, status, priority,
               parameters, result, error, created_by, created_at, updated_at,
               timeout_seconds, metadata
        FROM commands
        WHERE command_id = %s
"""
INSERT_AGENT = """
        INSERT INTO agents (id, deployment_hash, capabilities, version, system_info,
                           last_heartbeat, status, created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING id, deployment_hash, capabilities, version, system_info,
                  last_heartbeat, status, created_at, updated_at
"""
UPDATE_HEARTBEAT = """
        UPDATE agents
        SET last_heartbeat = NOW(), status = %s, updated_at = NOW()
        WHERE id = %s
"""
LOG_AUDIT = """
        INSERT INTO audit_log (id, agent_id, deployment_hash, action, status, details,
                              ip_address, user_agent, created_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s::INET, %s, %s)
        RETURNING id, agent_id, deployment_hash, action, status, details,
                  ip_address, user_agent, created_at
"""

PRIORITY_INT = {"low": 0, "normal": 1, "high": 2, "critical": 3}


class StackerBinary:
    """Stacker's binary as the database sees it: one connection of its role,
    server-side prepared statements (like sqlx), TimeZone UTC (like sqlx)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def _one(self, query: str, params: list[Any]) -> dict[str, Any] | None:
        cur = self.conn.execute(query, params, prepare=True)  # type: ignore[arg-type]
        row = cur.fetchone()
        if row is None:
            return None
        assert cur.description is not None
        return {d.name: v for d, v in zip(cur.description, row, strict=True)}

    def insert_command(
        self,
        deployment_hash: str,
        command_type: str = "health",
        *,
        status: str = "queued",
        priority: str = "normal",
        parameters: dict[str, Any] | None = None,
        created_at: datetime | None = None,
        command_id: str | None = None,
        timeout_seconds: int = 300,
    ) -> dict[str, Any]:
        now = created_at or datetime.now(UTC)
        row = self._one(
            INSERT_COMMAND,
            [
                uuid.uuid4(),
                command_id or f"cmd_{uuid.uuid4()}",
                deployment_hash,
                command_type,
                status,
                priority,
                Jsonb(parameters if parameters is not None else {"app_code": "fastapi"}),
                None,
                None,
                "user-42",
                now,
                now,
                timeout_seconds,
                Jsonb({}),
            ],
        )
        assert row is not None
        return row

    def add_to_queue(self, command_id: str, deployment_hash: str, priority: str) -> int:
        cur = self.conn.execute(
            ADD_TO_QUEUE,  # type: ignore[arg-type]
            [command_id, deployment_hash, PRIORITY_INT[priority]],
            prepare=True,
        )
        return cur.rowcount

    def create(self, deployment_hash: str, command_type: str = "health", **kw: Any) -> str:
        """The create route: insert, then add_to_queue (rows_affected ignored)."""
        row = self.insert_command(deployment_hash, command_type, **kw)
        self.add_to_queue(row["command_id"], deployment_hash, row["priority"])
        return str(row["command_id"])

    def fetch_next(self, deployment_hash: str) -> dict[str, Any] | None:
        return self._one(FETCH_NEXT, [deployment_hash])

    def update_status(self, command_id: str, status: str) -> dict[str, Any] | None:
        return self._one(UPDATE_STATUS, [status, command_id])

    def remove_from_queue(self, command_id: str) -> int:
        cur = self.conn.execute(REMOVE_FROM_QUEUE, [command_id], prepare=True)  # type: ignore[arg-type]
        return cur.rowcount

    def poll(self, deployment_hash: str) -> dict[str, Any] | None:
        """One check of the wait route: fetch, mark sent, remove from the queue."""
        command = self.fetch_next(deployment_hash)
        if command is None:
            return None
        updated = self.update_status(command["command_id"], "sent")
        self.remove_from_queue(command["command_id"])
        return updated

    def report(
        self, command_id: str, status: str, result: Any = None, error: Any = None
    ) -> dict[str, Any] | None:
        row = self._one(
            UPDATE_RESULT,
            [
                status,
                None if result is None else Jsonb(result),
                None if error is None else Jsonb(error),
                command_id,
            ],
        )
        self.remove_from_queue(command_id)
        return row

    def cancel(self, command_id: str) -> dict[str, Any] | None:
        with self.conn.transaction():
            self.conn.execute(CANCEL_DELETE, [command_id], prepare=True)  # type: ignore[arg-type]
            return self._one(CANCEL_UPDATE, [command_id])

    def fetch(self, command_id: str) -> dict[str, Any] | None:
        return self._one(FETCH_BY_COMMAND_ID, [command_id])

    def insert_agent(self, deployment_hash: str, at: datetime | None = None) -> uuid.UUID:
        at = at or datetime.now(UTC)
        row = self._one(
            INSERT_AGENT,
            [
                uuid.uuid4(),
                deployment_hash,
                Jsonb(["docker", "health"]),
                "0.1.0",
                Jsonb({"os": "linux"}),
                at,
                "online",
                at,
                at,
            ],
        )
        assert row is not None
        return uuid.UUID(str(row["id"]))

    def heartbeat(self, agent_id: uuid.UUID) -> None:
        self.conn.execute(UPDATE_HEARTBEAT, ["online", agent_id], prepare=True)  # type: ignore[arg-type]

    def log_audit(
        self, agent_id: uuid.UUID | None, deployment_hash: str, action: str, at: datetime
    ) -> uuid.UUID:
        row = self._one(
            LOG_AUDIT,
            [
                uuid.uuid4(),
                agent_id,
                deployment_hash,
                action,
                "success",
                Jsonb({}),
                "10.0.0.1",
                "status-panel/1.0",
                at,
            ],
        )
        assert row is not None
        return uuid.UUID(str(row["id"]))


@dataclass
class StackerDatabase:
    """A database holding Stacker's tables in ``schema``, owned by ``app_role``
    (the login role Stacker's binary uses)."""

    db: Database
    schema: str
    app_role: str
    state: str
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def app_conninfo(self) -> str:
        return conninfo_of(self.db.host, self.db.port, self.app_role, self.db.dbname)

    @contextmanager
    def binary(self) -> Iterator[StackerBinary]:
        conn = psycopg.connect(self.app_conninfo, autocommit=True, options="-c TimeZone=UTC")
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.schema)))
        try:
            yield StackerBinary(conn)
        finally:
            conn.close()

    def admin(self) -> psycopg.Connection[Any]:
        return self.db.connect()


def create_app_role(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(name))
    )


def build(db: Database, app_role: str, state: str, schema: str = "public") -> StackerDatabase:
    """Stacker's tables at ``state`` in ``schema``, created by ``app_role``."""
    with db.connect() as admin:
        admin.execute(
            sql.SQL("GRANT CREATE, CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db.dbname), sql.Identifier(app_role)
            )
        )
        if schema == "public":
            admin.execute(
                sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(app_role))
            )
        else:
            admin.execute(
                sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                    sql.Identifier(schema), sql.Identifier(app_role)
                )
            )
    stacker = StackerDatabase(db, schema, app_role, state)
    with psycopg.connect(stacker.app_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        for step in state_ddl(state):
            conn.execute(step)  # type: ignore[arg-type]
        conn.execute("INSERT INTO deployment (deployment_hash) VALUES ('dep-a'), ('dep-b')")
    return stacker


def fill(stacker: StackerDatabase) -> dict[str, Any]:
    """Rows in every table and status, through Stacker's own statements where
    its binary could have written them, plus the anomalies adoption must
    repair: a queued command with no queue row (the seed's lost command),
    duplicate queue rows, a queue row of a finished command, queue rows naming
    commands.id (states with the uuid FK). Returns what each row means."""
    t0 = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
    ids: dict[str, Any] = {}
    uuid_queue = stacker.state in ("initial", "broken")
    with stacker.binary() as app:
        agent_a = app.insert_agent("dep-a", t0)
        ids["agent_a"] = agent_a
        app.insert_agent("dep-b", t0)

        def queue(command: dict[str, Any]) -> None:
            if uuid_queue:  # the broken FK: only commands.id fits (what the seed saw fail)
                app.add_to_queue(
                    str(command["id"]), command["deployment_hash"], command["priority"]
                )
            else:
                app.add_to_queue(
                    command["command_id"], command["deployment_hash"], command["priority"]
                )

        def command(name: str, minutes: int, **kw: Any) -> dict[str, Any]:
            row = app.insert_command(
                kw.pop("deployment_hash", "dep-a"),
                kw.pop("type", "health"),
                created_at=t0 + timedelta(minutes=minutes),
                command_id=f"cmd_{name}",
                **kw,
            )
            ids[name] = row
            return row

        queue(command("queued_high", 1, priority="high"))
        queue(command("queued_normal", 2))
        dup = command("queued_dup", 3, priority="low")
        queue(dup)
        queue(dup)  # Stacker's queue has no UNIQUE: a retried add_to_queue
        command("lost", 4, parameters={"app_code": "nginx"})  # the seed's lost command
        command("sent", 5, status="sent")  # the wait route removed its row
        command("executing", 6, status="executing", type="restart")
        done = command("completed", 7, status="completed")
        queue(done)  # a finished command whose row was never removed
        command("failed", 8, status="failed")
        command("cancelled", 9, status="cancelled")
        queue(command("other_deployment", 10, deployment_hash="dep-b", priority="critical"))
        # completed and failed commands carry results
        app.conn.execute(
            "UPDATE commands SET result = %s, completed_at = %s WHERE command_id = 'cmd_completed'",
            [Jsonb({"status": "ok", "container_state": "running"}), t0],
        )
        app.conn.execute(
            "UPDATE commands SET error = %s WHERE command_id = 'cmd_failed'",
            [Jsonb({"message": "boom"})],
        )
        for i in range(3):
            app.log_audit(agent_a, "dep-a", "agent.command_polled", t0 + timedelta(seconds=i))
        app.log_audit(None, "dep-b", "agent.command_reported", t0 + timedelta(hours=1))
    stacker.expected = ids
    return ids


def add_orphan_queue_row(stacker: StackerDatabase) -> str:
    """A queue row naming no command: only possible with the foreign key
    bypassed (a DBA's hand repair, replica mode), but adoption must not guess."""
    orphan = str(uuid.uuid4())
    with stacker.admin() as admin, admin.transaction():
        admin.execute("SET LOCAL session_replication_role = replica")
        admin.execute(
            sql.SQL(
                "INSERT INTO {}.command_queue (command_id, deployment_hash, priority) "
                "VALUES (%s, 'dep-a', 1)"
            ).format(sql.Identifier(stacker.schema)),
            [orphan],
        )
    return orphan


def snapshot(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[dict[str, Any]]]:
    """Stacker's columns of every row, as UTC text, for before/after comparison."""
    conn.execute("SET TimeZone = 'UTC'")
    columns = {
        "commands": "id, command_id, deployment_hash, type, status, priority, parameters, "
        "result, error, created_by, created_at, updated_at, scheduled_for, sent_at, "
        "started_at, completed_at, timeout_seconds, metadata",
        "agents": "id, deployment_hash, capabilities, version, system_info, last_heartbeat, "
        "status, created_at, updated_at",
        "audit_log": "id, agent_id, deployment_hash, action, status, details, ip_address, "
        "user_agent, created_at",
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for table, cols in columns.items():
        rows = conn.execute(
            sql.SQL("SELECT to_jsonb(t) FROM (SELECT {} FROM {}.{} ORDER BY id) t").format(
                sql.SQL(cols), sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchall()
        out[table] = [json.loads(json.dumps(r[0]).replace("+00:00", "")) for r in rows]
    return out
