"""LISTEN/NOTIFY wake-ups: sent at commit, one per deployment per transaction."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from conftest import Database


def listen(db: Database, *channels: str) -> psycopg.Connection[Any]:
    conn = db.connect()
    for channel in channels:
        conn.execute(f"LISTEN {channel}")
    return conn


def drain(conn: psycopg.Connection[Any], timeout: float = 0.5) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout)]


def test_create_notifies_the_deployment_at_commit_only(db: Database) -> None:
    listener = listen(db, "stacker_commands")
    writer = db.connect(autocommit=False)
    writer.execute("SELECT stacker.create_command('dep-n', 'health')")
    assert drain(listener, 0.3) == []  # not before commit
    writer.commit()
    assert drain(listener) == [("stacker_commands", "dep-n")]

    writer.execute("SELECT stacker.create_command('dep-n', 'health')")
    writer.rollback()
    assert drain(listener, 0.3) == []  # never for a rolled-back create


def test_a_batch_for_one_deployment_sends_one_notification(db: Database) -> None:
    listener = listen(db, "stacker_commands")
    writer = db.connect(autocommit=False)
    for _ in range(5):
        writer.execute("SELECT stacker.create_command('dep-batch', 'health')")
    writer.execute("SELECT stacker.create_command('dep-other', 'health')")
    writer.commit()
    assert sorted(drain(listener)) == [
        ("stacker_commands", "dep-batch"),
        ("stacker_commands", "dep-other"),
    ]

    batch = [{"deployment_hash": "dep-batch", "command_type": "logs"} for _ in range(50)]
    writer.execute("SELECT stacker.create_commands(%s)", [json.dumps(batch)])
    writer.commit()
    assert drain(listener) == [("stacker_commands", "dep-batch")]


def test_scheduled_commands_wake_at_commit_too(db: Database) -> None:
    """The contract: every new command wakes its deployment at commit; one
    scheduled for later is then found by the agents' polling when it is due."""
    listener = listen(db, "stacker_commands")
    conn = db.connect()
    conn.execute(
        "SELECT stacker.create_command('dep-f', 'health', "
        "p_scheduled_for => now() + interval '1 hour')"
    )
    assert drain(listener) == [("stacker_commands", "dep-f")]


def test_terminal_statuses_are_announced_on_the_events_channel(db: Database) -> None:
    listener = listen(db, "stacker_commands", "stacker_command_events")
    conn = db.connect()
    agent = conn.execute("SELECT id FROM stacker.register_agent('dep-e')").fetchone()[0]
    a = conn.execute("SELECT command_id FROM stacker.create_command('dep-e', 'health')").fetchone()[
        0
    ]
    b = conn.execute("SELECT command_id FROM stacker.create_command('dep-e', 'logs')").fetchone()[0]
    drain(listener)
    conn.execute("SELECT stacker.claim_commands('dep-e', %s, 1)", [agent])
    conn.execute("SELECT stacker.report_result(%s, %s, 'completed')", [a, agent])
    conn.execute("SELECT stacker.cancel_command(%s, 'not needed')", [b])
    notes = drain(listener)
    events = [json.loads(p) for c, p in notes if c == "stacker_command_events"]
    assert events == [
        {"command_id": a, "deployment_hash": "dep-e", "status": "completed"},
        {"command_id": b, "deployment_hash": "dep-e", "status": "cancelled"},
    ]
    # the cancel also wakes the agent of the deployment
    assert ("stacker_commands", "dep-e") in notes


def test_requeue_wakes_the_deployment(db: Database) -> None:
    listener = listen(db, "stacker_commands")
    conn = db.connect()
    agent = conn.execute("SELECT id FROM stacker.register_agent('dep-r')").fetchone()[0]
    conn.execute("SELECT stacker.create_command('dep-r', 'health')")
    conn.execute("SELECT stacker.claim_commands('dep-r', %s, 1)", [agent])
    drain(listener)
    conn.execute("UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second'")
    assert conn.execute("SELECT stacker.requeue_expired()").fetchone() == (1,)
    assert drain(listener) == [("stacker_commands", "dep-r")]
