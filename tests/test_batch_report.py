"""Agent.report_results / AsyncAgent.report_results (one call for many reports)
and the pool's connection check (no round trip for a quiet idle connection, a
dead one replaced)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from helpers_queue import new_hash

from stacker_queue import Client, Conflict, InvalidInput, NotFound, PermissionDenied
from stacker_queue.pool import check_connection, connection_pool


def test_report_results_records_every_report_in_order(
    client: Client, make_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    created = client.create_commands(
        [{"deployment_hash": agent.deployment_hash, "command_type": "logs"} for _ in range(3)]
    )
    claimed = agent.claim(3)
    assert {c.command_id for c in claimed} == {c.command_id for c in created}
    ids = [c.command_id for c in created]
    with caplog.at_level(logging.INFO, logger="stacker_queue"):
        done = agent.report_results(
            [
                {"command_id": ids[2], "status": "failed", "error": {"reason": "boom"}},
                {"command_id": ids[0], "status": "completed", "result": {"lines": ["a"]}},
                {"command_id": ids[1], "status": "completed"},
            ]
        )
    assert [(c.command_id, c.status) for c in done] == [
        (ids[2], "failed"),
        (ids[0], "completed"),
        (ids[1], "completed"),
    ]
    assert done[0].error == {"reason": "boom"} and done[1].result == {"lines": ["a"]}
    assert all(c.is_terminal and c.lease_expires_at is None for c in done)
    assert "Successfully reported 3 commands" in caplog.text
    # the same reports again change nothing
    again = agent.report_results([{"command_id": ids[1], "status": "completed"}])
    assert again[0].completed_at == done[2].completed_at


def test_report_results_is_all_or_none_with_the_sqlstate_errors(
    client: Client, make_agent: Any
) -> None:
    agent = make_agent()
    other = make_agent()
    a = client.create_command(agent.deployment_hash, "deploy")
    b = client.create_command(agent.deployment_hash, "deploy")
    agent.claim(2)
    with pytest.raises(InvalidInput, match=r"reports\[1\]"):
        agent.report_results(
            [{"command_id": a.command_id, "status": "completed"}, {"command_id": b.command_id}]
        )
    with pytest.raises(NotFound, match=r"reports\[1\]"):
        agent.report_results(
            [
                {"command_id": a.command_id, "status": "completed"},
                {"command_id": "cmd-nope", "status": "completed"},
            ]
        )
    with pytest.raises(PermissionDenied):
        other.report_results([{"command_id": a.command_id, "status": "completed"}])
    client.cancel_command(b.command_id)
    with pytest.raises(Conflict, match="cancelled"):
        agent.report_results(
            [
                {"command_id": a.command_id, "status": "completed"},
                {"command_id": b.command_id, "status": "completed"},
            ]
        )
    assert client.get_command(a.command_id).status == "sent"  # nothing was recorded


async def test_async_report_results(aclient: Any, make_async_agent: Any) -> None:
    agent = await make_async_agent()
    cmds = await aclient.create_commands(
        [{"deployment_hash": agent.deployment_hash, "command_type": "health"} for _ in range(2)]
    )
    await agent.claim(2)
    done = await agent.report_results(
        [
            {
                "command_id": c.command_id,
                "status": "completed",
                "result": {"app_code": "web", "status": "running"},
            }
            for c in cmds
        ]
    )
    assert [c.status for c in done] == ["completed", "completed"]
    panel = await aclient.app_status(agent.deployment_hash)
    assert [(s.app_code, s.status) for s in panel] == [("web", "running")]


def test_quiet_pooled_connection_needs_no_round_trip(db: Any) -> None:
    pool = connection_pool(db.conninfo, min_size=1, max_size=1)
    try:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        # a quiet idle connection passes the check without a query
        with pool.connection() as conn:
            calls_before = conn.pgconn.transaction_status
            check_connection(conn)
            assert conn.pgconn.transaction_status == calls_before
        # a terminated backend leaves its socket readable: the pool replaces it
        with db.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        client = Client(pool)
        assert client.stats(new_hash()) == []
        with pool.connection() as conn:
            assert conn.info.backend_pid != pid
    finally:
        pool.close()


def test_check_connection_raises_for_a_dead_connection(db: Any) -> None:
    conn = psycopg.connect(db.conninfo, autocommit=True)
    try:
        with db.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        import time

        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)
    finally:
        conn.close()
