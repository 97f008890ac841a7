"""Client and AsyncClient against a real database: every method, every error
class, the actor in audit_log, and the ways to build a client."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers_queue import audit_rows, new_hash
from psycopg_pool import ConnectionPool

from stacker_queue import (
    AppStatus,
    AsyncClient,
    Client,
    Command,
    Conflict,
    Installer,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QueueStats,
    StackerQueueError,
    connection_pool,
)


# -- create / get / list ----------------------------------------------------------------
def test_create_command_uses_the_database_defaults(client: Client) -> None:
    dep = new_hash()
    cmd = client.create_command(dep, "health", {"app_code": "fastapi"})
    assert isinstance(cmd, Command)
    assert cmd.command_id.startswith("cmd_")
    assert (cmd.deployment_hash, cmd.type, cmd.command_type) == (dep, "health", "health")
    assert cmd.status == "queued" and not cmd.is_terminal
    assert cmd.priority == "normal"
    assert cmd.parameters == {"app_code": "fastapi"}
    assert cmd.timeout_seconds == 300 and cmd.max_attempts == 3 and cmd.attempts == 0
    assert cmd.metadata == {}
    assert cmd.created_by == "postgres" or cmd.created_by  # session_user
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.status = "sent"  # type: ignore[misc]


def test_create_command_passes_every_argument(client: Client) -> None:
    dep = new_hash()
    at = datetime.now(UTC) + timedelta(hours=1)
    cmd = client.create_command(
        dep,
        "restart",
        {"service": "web"},
        "critical",
        "ui:bob",
        "key-1",
        60,
        at,
        5,
        "cmd_custom_1",
        {"source": "test"},
    )
    assert cmd.command_id == "cmd_custom_1"
    assert cmd.priority == "critical" and cmd.created_by == "ui:bob"
    assert cmd.idempotency_key == "key-1" and cmd.timeout_seconds == 60
    assert cmd.scheduled_for == at and cmd.max_attempts == 5
    assert cmd.metadata == {"source": "test"}


def test_idempotency_key_returns_the_existing_command_or_conflicts(client: Client) -> None:
    dep = new_hash()
    first = client.create_command(dep, "deploy", {"v": 1}, idempotency_key="k")
    again = client.create_command(dep, "deploy", {"v": 1}, idempotency_key="k")
    assert again.command_id == first.command_id
    with pytest.raises(Conflict) as info:
        client.create_command(dep, "deploy", {"v": 2}, idempotency_key="k")
    assert info.value.sqlstate == "23505"
    assert "'k'" in str(info.value)


def test_duplicate_command_id_is_a_conflict(client: Client) -> None:
    client.create_command(new_hash(), "logs", command_id="cmd_dup")
    with pytest.raises(Conflict, match="cmd_dup"):
        client.create_command(new_hash(), "logs", command_id="cmd_dup")


def test_create_commands_batch(client: Client) -> None:
    dep = new_hash()
    made = client.create_commands(
        [
            {"deployment_hash": dep, "command_type": "health", "parameters": {"app_code": "a"}},
            {"deployment_hash": dep, "command_type": "logs", "priority": "high"},
            {
                "deployment_hash": dep,
                "command_type": "restart",
                "scheduled_for": datetime.now(UTC) + timedelta(minutes=5),
                "command_id": "cmd_batch_3",
            },
        ]
    )
    assert [c.type for c in made] == ["health", "logs", "restart"]
    assert made[1].priority == "high" and made[2].command_id == "cmd_batch_3"
    assert all(c.status == "queued" for c in made)
    with pytest.raises(InvalidInput, match=r"commands\[1\]"):
        client.create_commands(
            [
                {"deployment_hash": dep, "command_type": "ok"},
                {"deployment_hash": dep, "command_type": "x", "priority": "urgent"},
            ]
        )
    assert len(client.list_commands(dep)) == 3  # the rejected batch changed nothing


def test_get_command_and_not_found(client: Client) -> None:
    cmd = client.create_command(new_hash(), "health")
    assert client.get_command(cmd.command_id) == cmd
    with pytest.raises(NotFound) as info:
        client.get_command("cmd_missing")
    assert info.value.sqlstate == "P0002"
    assert "cmd_missing" in info.value.message
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_list_commands_newest_first_by_status_and_limit(client: Client) -> None:
    dep = new_hash()
    ids = [client.create_command(dep, "logs").command_id for _ in range(3)]
    client.cancel_command(ids[0])
    assert [c.command_id for c in client.list_commands(dep)] == ids[::-1]
    assert [c.command_id for c in client.list_commands(dep, "cancelled")] == [ids[0]]
    assert [c.command_id for c in client.list_commands(dep, limit=1)] == [ids[2]]
    assert client.list_commands(new_hash()) == []
    with pytest.raises(InvalidInput, match="bogus"):
        client.list_commands(dep, "bogus")
    with pytest.raises(InvalidInput):
        client.list_commands(dep, limit=0)


# -- cancel ----------------------------------------------------------------------------
def test_cancel_command(client: Client, make_agent: Any) -> None:
    dep = new_hash()
    cmd = client.create_command(dep, "deploy")
    cancelled = client.cancel_command(cmd.command_id, "operator changed their mind", "ops:eve")
    assert cancelled.status == "cancelled" and cancelled.is_terminal
    assert cancelled.error["reason"] == "cancelled"
    assert cancelled.error["cancelled_by"] == "ops:eve"
    assert client.cancel_command(cmd.command_id).status == "cancelled"  # again: unchanged
    with pytest.raises(NotFound):
        client.cancel_command("cmd_nothing_here")

    agent = make_agent(dep)
    done = client.create_command(dep, "logs")
    agent.claim()
    agent.report_result(done.command_id, "completed", {"lines": 3})
    with pytest.raises(Conflict) as info:
        client.cancel_command(done.command_id)
    assert info.value.sqlstate == "55000"


# -- app status and stats -------------------------------------------------------------
def test_update_app_status_and_panel(client: Client) -> None:
    dep = new_hash()
    row = client.update_app_status(dep, "fastapi", "running", ["started", "healthy"])
    assert isinstance(row, AppStatus)
    assert (row.deployment_hash, row.app_code, row.status) == (dep, "fastapi", "running")
    assert row.logs == ["started", "healthy"] and row.updated_at is not None

    older = datetime.now(UTC) - timedelta(hours=1)
    kept = client.update_app_status(dep, "fastapi", "stopped", [], checked_at=older)
    assert kept.status == "running"  # an older report leaves the row as it is

    client.create_command(dep, "health", {"app_code": "redis"})
    panel = {a.app_code: a for a in client.app_status(dep)}
    assert panel["fastapi"].state == "reported" and panel["fastapi"].status == "running"
    assert panel["redis"].status == "unknown" and panel["redis"].state == "awaiting_agent"
    assert panel["redis"].pending_command_id is not None
    assert all(a.deployment_hash == dep for a in panel.values())
    assert client.app_status(new_hash()) == []


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"status": "green"}, "green"),
        ({"logs": ["ok", 3]}, "logs"),
        ({"app_code": ""}, "app_code"),
        ({"command_id": "cmd_none"}, "cmd_none"),
    ],
)
def test_update_app_status_rejects(client: Client, kwargs: dict[str, Any], words: str) -> None:
    args: dict[str, Any] = {"app_code": "web", "status": "running", "logs": []}
    args.update(kwargs)
    expected = NotFound if "command_id" in kwargs else InvalidInput
    with pytest.raises(expected, match=words):
        client.update_app_status(new_hash(), **args)


def test_stats(client: Client, make_agent: Any) -> None:
    dep, other = new_hash(), new_hash()
    agent = make_agent(dep)
    for _ in range(3):
        client.create_command(dep, "logs")
    client.create_command(other, "logs")
    agent.claim()
    rows = {s.deployment_hash: s for s in client.stats()}
    assert isinstance(rows[dep], QueueStats)
    assert (rows[dep].queued, rows[dep].in_flight, rows[dep].expired_leases) == (2, 1, 0)
    assert rows[dep].agent_last_seen is not None and rows[dep].oldest_queued_at is not None
    assert rows[other].queued == 1 and rows[other].agent_last_seen is None
    assert [s.deployment_hash for s in client.stats(other)] == [other]


# -- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "sqlstate"),
    [
        (lambda c: c.create_command("", "health"), "22023"),
        (lambda c: c.create_command("d" * 129, "health"), "22023"),
        (lambda c: c.create_command("d", "health", priority="urgent"), "22023"),
        (lambda c: c.create_command("d", "health", timeout_seconds=0), "22023"),
        (lambda c: c.create_command("d", "health", timeout_seconds=10**12), "22023"),
        (lambda c: c.create_command("d", "health", max_attempts=0), "22023"),
        (lambda c: c.create_command("d", "health", parameters=[1, 2]), "22023"),  # type: ignore[arg-type]
        (lambda c: c.create_command("d", "health", {"x": "a\u0000b"}), "22023"),  # checked
        (lambda c: c.create_command("d\x00", "health"), "22023"),  # before sending
        (lambda c: c.create_command(None, "health"), "22023"),  # type: ignore[arg-type]
        (lambda c: c.get_command(""), "22023"),
    ],
)
def test_invalid_input(client: Client, call: Any, sqlstate: str | None) -> None:
    with pytest.raises(InvalidInput) as info:
        call(client)
    assert info.value.sqlstate == sqlstate
    assert isinstance(info.value, StackerQueueError) and info.value.message
    assert str(info.value) == info.value.message


def test_permission_denied_for_a_role_without_the_grant(db: Any) -> None:
    conn = db.connect()
    conn.execute("SET ROLE stacker_agent")  # may not create commands
    with pytest.raises(PermissionDenied) as info:
        Client(conn).create_command(new_hash(), "health")
    assert info.value.sqlstate == "42501"
    assert "create_command" in info.value.message


def test_unmapped_errors_stay_psycopg_errors(db: Any) -> None:
    """An uninstalled schema is not one of the contract's errors."""
    with Client.connect(db.conninfo, schema="not_installed") as c:
        with pytest.raises(psycopg.errors.InvalidSchemaName) as info:
            c.get_command("cmd_x")
        assert not isinstance(info.value, StackerQueueError)


def test_schema_name_is_checked() -> None:
    with pytest.raises(InvalidInput):
        Client.connect("", schema="")


# -- logging ---------------------------------------------------------------------------
def test_logs_in_the_seeds_words(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stacker_queue")
    cmd = client.create_command(new_hash(), "health", command_id="cmd_logged")
    with pytest.raises(InvalidInput):
        client.create_command(new_hash(), "health", priority="nope", command_id="cmd_bad")
    messages = [r.getMessage() for r in caplog.records if r.name == "stacker_queue"]
    assert f"Attempting to add command {cmd.command_id} to queue" in messages
    assert f"Successfully added command {cmd.command_id} to queue" in messages
    assert "Attempting to add command cmd_bad to queue" in messages
    failed = [m for m in messages if m.startswith("Failed to add command cmd_bad to queue: ")]
    assert failed and "nope" in failed[0]
    assert all(r.levelno >= logging.INFO for r in caplog.records if "command" in r.getMessage())


# -- the actor -------------------------------------------------------------------------
def test_actor_reaches_audit_log_and_created_by(db: Any) -> None:
    dep = new_hash()
    check = db.connect()
    with Client.connect(db.conninfo, actor="alice") as alice:
        cmd = alice.create_command(dep, "health")
        assert cmd.created_by == "alice"
        alice.cancel_command(cmd.command_id, actor="bob")  # per call
        other = alice.create_command(dep, "logs", actor=None)  # explicitly nobody
    rows = audit_rows(check, dep)
    actors = {(r[0], r[1]) for r in rows}
    assert ("command.created", "alice") in actors
    assert ("command.cancelled", "bob") in actors
    session_user = check.execute("SELECT session_user").fetchone()[0]
    assert other.created_by == session_user
    assert [r[1] for r in rows if r[3].get("command_id") == other.command_id] == [session_user]


def test_actor_is_local_to_the_call_transaction(db: Any) -> None:
    """Nothing stays set on the session: safe behind a transaction-pooling PgBouncer."""
    conn = db.connect()
    c = Client(conn, actor="carol")
    c.create_command(new_hash(), "health")
    assert conn.execute("SELECT current_setting('stacker.actor', true)").fetchone()[0] in (
        None,
        "",
    )
    # and a later call without an actor is not attributed to carol
    cmd = Client(conn).create_command(new_hash(), "health")
    assert cmd.created_by != "carol"


def test_actor_with_a_non_autocommit_connection(db: Any) -> None:
    conn = db.connect(autocommit=False)
    cmd = Client(conn, actor="dave").create_command(new_hash(), "health")
    assert cmd.created_by == "dave"
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert Client(db.connect()).get_command(cmd.command_id).created_by == "dave"


# -- sources: connection, pool, connect(), custom schema --------------------------------
def test_client_on_a_pool_and_prepare_threshold_none(db: Any) -> None:
    pool = connection_pool(db.conninfo, max_size=2, prepare_threshold=None)
    try:
        c = Client(pool, actor="pooled")
        for _ in range(8):  # past psycopg's prepare threshold: nothing is prepared
            cmd = c.create_command(new_hash(), "health")
        assert c.get_command(cmd.command_id).created_by == "pooled"
        with pool.connection() as conn:
            assert conn.prepare_threshold is None
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
            assert prepared == (0,)
        c.close()  # not owned: the pool stays open
        assert not pool.closed
    finally:
        pool.close()


def test_client_on_a_plain_psycopg_pool(db: Any) -> None:
    with ConnectionPool(db.conninfo, min_size=1, max_size=1, kwargs={"autocommit": False}) as pool:
        c = Client(pool)
        cmd = c.create_command(new_hash(), "health")
        assert c.get_command(cmd.command_id).status == "queued"


def test_custom_schema_name_is_quoted(empty_db: Any) -> None:
    schema = 'Odd "Q" schema'
    Installer(empty_db.conninfo, schema).migrate()
    with Client.connect(empty_db.conninfo, schema=schema, actor="x") as c:
        cmd = c.create_command("d1", "health")
        assert c.get_command(cmd.command_id).command_id == cmd.command_id
        assert [s.deployment_hash for s in c.stats()] == ["d1"]


# -- async -----------------------------------------------------------------------------
async def test_async_client_every_method(aclient: AsyncClient, make_agent: Any) -> None:
    dep = new_hash()
    cmd = await aclient.create_command(dep, "health", {"app_code": "fastapi"}, actor="amy")
    assert cmd.created_by == "amy"
    assert (await aclient.get_command(cmd.command_id)) == cmd
    batch = await aclient.create_commands([{"deployment_hash": dep, "command_type": "logs"}])
    assert [c.command_id for c in await aclient.list_commands(dep)] == [
        batch[0].command_id,
        cmd.command_id,
    ]
    assert (await aclient.cancel_command(batch[0].command_id)).status == "cancelled"
    row = await aclient.update_app_status(dep, "fastapi", "stopped", ["exited 0"])
    assert row.status == "stopped"
    panel = await aclient.app_status(dep)
    assert [(a.app_code, a.state) for a in panel] == [("fastapi", "reported")]
    assert [s.queued for s in await aclient.stats(dep)] == [1]
    with pytest.raises(NotFound):
        await aclient.get_command("cmd_nope")
    with pytest.raises(InvalidInput):
        await aclient.create_command(dep, "x", priority="meh")
    with pytest.raises(Conflict):
        await aclient.create_command(dep, "x", command_id=cmd.command_id)


async def test_async_client_on_a_connection(db: Any) -> None:
    conn = await psycopg.AsyncConnection.connect(db.conninfo, autocommit=True)
    try:
        c = AsyncClient(conn, actor="async-actor")
        cmd = await c.create_command(new_hash(), "health")
        assert cmd.created_by == "async-actor"
        setting = await conn.execute("SELECT current_setting('stacker.actor', true)")
        assert (await setting.fetchone())[0] in (None, "")
        await c.close()
        assert not conn.closed
    finally:
        await conn.close()


async def test_async_permission_denied(db: Any) -> None:
    conn = await psycopg.AsyncConnection.connect(db.conninfo, autocommit=True)
    try:
        await conn.execute("SET ROLE stacker_agent")
        with pytest.raises(PermissionDenied):
            await AsyncClient(conn).cancel_command("cmd_x")
    finally:
        await conn.close()
