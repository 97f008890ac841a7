"""The shared listener: one LISTEN connection fanning wake-ups out to every
waiting agent of every deployment, reconnection after pg_terminate_backend
with no command missed, and 1,000 concurrent asyncio waiters over one
listener and a small pool."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from helpers_queue import backends, new_hash

from stacker_queue import (
    Agent,
    AsyncAgent,
    AsyncClient,
    AsyncListener,
    Client,
    Command,
    Listener,
    async_connection_pool,
    connection_pool,
)

LONG_POLL = 60.0  # so long that only a wake-up can explain a prompt return


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def terminate(conn: psycopg.Connection[Any], pid: int) -> None:
    assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


# -- basics -------------------------------------------------------------------------------
def test_start_fails_loudly_and_subscribe_needs_start(db: Any) -> None:
    with pytest.raises(psycopg.OperationalError):
        Listener("host=127.0.0.1 port=1 connect_timeout=2").start()
    listener = Listener(db.conninfo)
    with pytest.raises(RuntimeError, match="start"):
        listener.subscribe("x")


def test_subscription_is_woken_only_by_its_deployment(db: Any, client: Client) -> None:
    with Listener(db.conninfo) as listener:
        assert listener.connected and listener.channel == "stacker_commands"
        mine, other = new_hash(), new_hash()
        with listener.subscribe(mine) as sub:
            assert listener.waiting == 1
            client.create_command(other, "health")
            assert not sub.wait(0.3)
            client.create_command(mine, "health")
            assert sub.wait(5)
            assert not sub.wait(0.05)  # consumed
        assert listener.waiting == 0
        assert listener.notifications >= 2
    assert not listener.running


def test_cancel_wakes_too(db: Any, client: Client) -> None:
    dep = new_hash()
    cmd = client.create_command(dep, "deploy")
    with Listener(db.conninfo) as listener, listener.subscribe(dep) as sub:
        client.cancel_command(cmd.command_id)
        assert sub.wait(5)


def test_one_listener_serves_many_agents_of_many_deployments(db: Any, client: Client) -> None:
    """40 agents in threads, 20 deployments (two waiters each), one LISTEN
    connection, claims through a pool of 4."""
    pool = connection_pool(db.conninfo, max_size=4)
    listener = Listener(db.conninfo).start()
    try:
        deployments = [new_hash() for _ in range(20)]
        for dep in deployments:
            Agent(pool, dep).register()
        results: dict[int, list[Command]] = {}

        def wait(i: int, dep: str, agent_id: Any) -> None:
            agent = Agent(pool, dep, agent_id, listener=listener, poll_interval=LONG_POLL)
            results[i] = agent.wait_for_commands(timeout=30)

        ids = {d: Agent(pool, d).register().id for d in deployments}
        threads = [
            threading.Thread(target=wait, args=(i, dep, ids[dep]))
            for i, dep in enumerate(deployments * 2)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: listener.waiting == 40)
        time.sleep(0.2)
        started = time.monotonic()
        created = client.create_commands(
            [{"deployment_hash": d, "command_type": "health"} for d in deployments for _ in (1, 2)]
        )
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - started
        got = sorted(c.command_id for r in results.values() for c in r)
        assert got == sorted(c.command_id for c in created)  # each exactly once
        assert elapsed < 10 < LONG_POLL
        assert listener.waiting == 0
    finally:
        listener.close()
        pool.close()


# -- reconnection -------------------------------------------------------------------------
def test_sync_listener_reconnects_and_nothing_is_missed(db: Any, client: Client) -> None:
    admin = db.connect()
    pool = connection_pool(db.conninfo, max_size=2)
    listener = Listener(db.conninfo, reconnect_max_delay=0.5).start()
    try:
        dep = new_hash()
        agent_id = Agent(pool, dep).register().id
        agent = Agent(pool, dep, agent_id, listener=listener, poll_interval=LONG_POLL)
        box: dict[str, Any] = {}

        def wait() -> None:
            box["got"] = agent.wait_for_commands(timeout=30)
            box["at"] = time.monotonic()

        thread = threading.Thread(target=wait)
        thread.start()
        wait_until(lambda: listener.waiting == 1)
        old_pid = listener.backend_pid
        assert old_pid is not None
        terminate(admin, old_pid)
        # Created while nobody listens: its notification is lost for good.
        cmd = client.create_command(dep, "health")
        created_at = time.monotonic()
        thread.join(30)
        assert [c.command_id for c in box["got"]] == [cmd.command_id]
        assert box["at"] - created_at < 10 < LONG_POLL  # not the polling fallback
        wait_until(lambda: listener.connected)
        assert listener.reconnects >= 1 and listener.backend_pid not in (None, old_pid)

        # And wake-ups flow again on the new connection.
        box.clear()
        thread = threading.Thread(target=wait)
        thread.start()
        wait_until(lambda: listener.waiting == 1)
        time.sleep(0.1)
        cmd2 = client.create_command(dep, "health")
        thread.join(30)
        assert [c.command_id for c in box["got"]] == [cmd2.command_id]
    finally:
        listener.close()
        pool.close()


def test_agents_private_listener_reconnects(db: Any, client: Client) -> None:
    admin = db.connect()
    with Agent.connect(db.conninfo, new_hash(), poll_interval=LONG_POLL) as agent:
        agent.register()
        assert agent.wait_for_commands(timeout=0) == []
        listener = agent.listener
        assert listener is not None
        terminate(admin, listener.backend_pid or 0)
        cmd = client.create_command(agent.deployment_hash, "logs")
        started = time.monotonic()
        (got,) = agent.wait_for_commands(timeout=30)
        assert got.command_id == cmd.command_id
        assert time.monotonic() - started < 10
        wait_until(lambda: listener.connected and listener.reconnects >= 1)


async def test_async_listener_reconnects_and_nothing_is_missed(db: Any) -> None:
    admin = db.connect()
    pool = await async_connection_pool(db.conninfo, max_size=2)
    listener = await AsyncListener(db.conninfo, reconnect_max_delay=0.5).start()
    try:
        dep = new_hash()
        agent_id = (await AsyncAgent(pool, dep).register()).id
        agent = AsyncAgent(pool, dep, agent_id, listener=listener, poll_interval=LONG_POLL)
        service = AsyncClient(pool)
        for round_ in range(2):
            task = asyncio.create_task(agent.wait_for_commands(timeout=30))
            while listener.waiting == 0:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            old_pid = listener.backend_pid
            terminate(admin, old_pid or 0)
            cmd = await service.create_command(dep, "health", {"round": round_})
            started = time.monotonic()
            (got,) = await asyncio.wait_for(task, 30)
            assert got.command_id == cmd.command_id
            assert time.monotonic() - started < 10 < LONG_POLL
            assert await listener.wait_connected(10)
            assert listener.backend_pid not in (None, old_pid)
        assert listener.reconnects >= 2
    finally:
        await listener.close()
        await pool.close()


# -- scale: 1,000 asyncio waiters, one listener, one pool -----------------------------------
async def test_thousand_async_waiters_share_one_listener_and_a_pool(
    db: Any, postgresql: psycopg.Connection[Any]
) -> None:
    n, pool_max = 1000, 10
    admin = db.connect()
    fixture_pids = {postgresql.info.backend_pid, admin.info.backend_pid}
    pool = await async_connection_pool(db.conninfo, min_size=2, max_size=pool_max)
    listener = await AsyncListener(db.conninfo).start()
    try:
        deployments = [new_hash("scale") for _ in range(n)]
        registered = await asyncio.gather(*(AsyncAgent(pool, d).register() for d in deployments))
        agents = [
            AsyncAgent(pool, r.deployment_hash, r.id, listener=listener, poll_interval=LONG_POLL)
            for r in registered
        ]
        tasks = [asyncio.create_task(a.wait_for_commands(timeout=60)) for a in agents]
        deadline = time.monotonic() + 30
        while listener.waiting < n:
            assert time.monotonic() < deadline, f"only {listener.waiting} waiting"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # every first claim done: all are waiting now

        sessions = await asyncio.to_thread(backends, admin, fixture_pids)
        assert len(sessions) <= pool_max + 1, sessions
        assert sum(s["application_name"] == "stacker-queue listener" for s in sessions) == 1

        started = time.monotonic()
        created = await AsyncClient(pool).create_commands(
            [{"deployment_hash": d, "command_type": "health"} for d in deployments]
        )
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - started
        sessions = await asyncio.to_thread(backends, admin, fixture_pids)
        assert len(sessions) <= pool_max + 1, sessions

        by_dep = {c.deployment_hash: c.command_id for c in created}
        assert all(len(r) == 1 for r in results)
        assert {r[0].deployment_hash: r[0].command_id for r in results} == by_dep
        assert elapsed < 30 < LONG_POLL
        print(f"\n{n} waiters woken and served in {elapsed:.2f} s over one listener")
    finally:
        await listener.close()
        await pool.close()
