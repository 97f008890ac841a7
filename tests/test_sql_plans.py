"""Plans that stay on their indexes whatever the statistics say.

A fresh install has empty, never-analyzed tables, and servers run with
autovacuum off (this CI's does): a pooled session then caches the plans it made
while the tables were tiny. The functions pin enable_seqscan off, so a claim or
a report keeps using its indexes as the commands table grows underneath.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from conftest import Database, nested_plans


def _cycle(conn: psycopg.Connection[Any], agent: str) -> int:
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT command_id FROM stacker.claim_commands('dep-plan', %s, 10)", [agent]
        )
    ]
    conn.execute(
        "SELECT count(*) FROM stacker.report_results(%s, %s)",
        [agent, json.dumps([{"command_id": i, "status": "completed"} for i in ids])],
    )
    conn.execute("SELECT stacker.report_result(%s, %s, 'completed')", [ids[0], agent])
    return len(ids)


def test_claim_and_report_keep_their_indexes_as_a_fresh_table_grows(db: Database) -> None:
    conn = db.connect()
    agent = conn.execute("SELECT id FROM stacker.register_agent('dep-plan')").fetchone()[0]
    batch = json.dumps([{"deployment_hash": "dep-plan", "command_type": "health"}] * 200)
    conn.execute("SELECT count(*) FROM stacker.create_commands(%s)", [batch])
    for _ in range(8):  # past plpgsql's five custom plans: generic plans are now cached
        assert _cycle(conn, agent) == 10

    # The table grows tenfold behind the session's back (nobody analyzes it).
    with db.connect() as other:
        other.execute(
            "INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by) "
            "SELECT 'bulk-' || g, 'dep-other', 'logs', 'test' FROM generate_series(1, 20000) g"
        )

    with nested_plans(conn) as plans:
        assert _cycle(conn, agent) == 10

    assert any("commands" in p for p in plans)
    seq = [p.splitlines()[0:12] for p in plans if "Seq Scan on commands" in p]
    assert seq == []
