"""Agent and AsyncAgent: register, claim, wait (woken by NOTIFY, or polling),
start, extend_lease, report_result, their errors and their logs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers_queue import median_ms, new_hash

from stacker_queue import (
    Agent,
    AgentRecord,
    AsyncAgent,
    Client,
    Command,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
)

POLL = 5.0  # the polling fallback in the latency tests: wake-ups must beat it by far


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class Waiter(threading.Thread):
    """Runs agent.wait_for_commands in a thread, noting when it returned."""

    def __init__(self, agent: Agent, timeout: float = 10, limit: int = 1) -> None:
        super().__init__(daemon=True)
        self.agent, self.timeout, self.limit = agent, timeout, limit
        self.result: list[Command] | None = None
        self.error: BaseException | None = None
        self.returned_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.agent.wait_for_commands(timeout=self.timeout, limit=self.limit)
        except BaseException as exc:
            self.error = exc
        self.returned_at = time.perf_counter()

    def finish(self) -> list[Command]:
        self.join(30)
        assert not self.is_alive()
        if self.error:
            raise self.error
        assert self.result is not None
        return self.result


def listening(agent: Agent, count: int = 1) -> None:
    """Wait until the agent's wait has subscribed (and its first claim is done)."""
    wait_until(lambda: agent.listener is not None and agent.listener.waiting >= count)
    time.sleep(0.05)


# -- register -----------------------------------------------------------------------------
def test_register_fills_agent_id_and_keeps_it(db: Any, make_agent: Any) -> None:
    dep = new_hash()
    agent = make_agent(dep, register=False)
    assert agent.agent_id is None
    record = agent.register("1.2.3", ["docker", "health"], {"os": "linux"})
    assert isinstance(record, AgentRecord)
    assert agent.agent_id == record.id and record.deployment_hash == dep
    assert record.version == "1.2.3" and record.capabilities == ["docker", "health"]
    assert record.status == "online" and record.last_heartbeat is not None
    again = make_agent(dep, register=False)
    assert again.register().id == record.id  # one agent per deployment


def test_connect_with_a_chosen_agent_id(db: Any) -> None:
    chosen = uuid.uuid4()
    with Agent.connect(db.conninfo, deployment_hash=new_hash(), agent_id=str(chosen)) as agent:
        assert agent.agent_id == chosen
        assert agent.register().id == chosen
    with pytest.raises(InvalidInput, match="not-a-uuid"):
        Agent.connect(db.conninfo, deployment_hash=new_hash(), agent_id="not-a-uuid")


def test_register_rejects_bad_input(make_agent: Any) -> None:
    agent = make_agent("", register=False)
    with pytest.raises(InvalidInput):
        agent.register()
    agent = make_agent(register=False)
    with pytest.raises(InvalidInput, match="capabilities"):
        agent.register(capabilities={"not": "an array"})


# -- claim / start / extend / report -------------------------------------------------------
def test_claim_priority_limit_and_lease(client: Client, make_agent: Any) -> None:
    agent = make_agent()
    dep = agent.deployment_hash
    low = client.create_command(dep, "logs", priority="low")
    crit = client.create_command(dep, "restart", priority="critical")
    normal = client.create_command(dep, "health")
    first = agent.claim(limit=2, lease_seconds=30)
    assert [c.command_id for c in first] == [crit.command_id, normal.command_id]
    assert all(c.status == "sent" and c.attempts == 1 for c in first)
    assert all(c.agent_id == agent.agent_id for c in first)
    lease = first[0].lease_expires_at
    assert lease is not None and 25 < (lease - datetime.now(UTC)).total_seconds() <= 31
    assert [c.command_id for c in agent.claim(limit=5)] == [low.command_id]
    assert agent.claim() == []
    with pytest.raises(InvalidInput):
        agent.claim(limit=0)


def test_full_lifecycle_and_health_report(client: Client, make_agent: Any) -> None:
    agent = make_agent()
    dep = agent.deployment_hash
    cmd = client.create_command(dep, "health", {"app_code": "fastapi"})
    (claimed,) = agent.claim()
    started = agent.start(cmd.command_id)
    assert started.status == "executing" and started.started_at is not None
    assert agent.start(cmd.command_id).status == "executing"  # again: unchanged
    new_end = agent.extend_lease(cmd.command_id, 600)
    assert isinstance(new_end, datetime)
    assert claimed.lease_expires_at is not None and new_end > claimed.lease_expires_at
    result = {"app_code": "fastapi", "status": "running", "logs": ["uvicorn up", "200 OK"]}
    done = agent.report_result(cmd.command_id, "completed", result)
    assert done.status == "completed" and done.result == result and done.completed_at
    # the same report again returns the row unchanged; another outcome conflicts
    assert agent.report_result(cmd.command_id, "completed", result) == done
    with pytest.raises(Conflict) as info:
        agent.report_result(cmd.command_id, "failed", error={"oops": 1})
    assert info.value.sqlstate == "55000"
    with pytest.raises(Conflict):
        agent.extend_lease(cmd.command_id)
    (panel,) = client.app_status(dep)
    assert (panel.app_code, panel.status, panel.state) == ("fastapi", "running", "reported")
    assert panel.logs == ["uvicorn up", "200 OK"]


def test_report_failed_and_cancelled(client: Client, make_agent: Any) -> None:
    agent = make_agent()
    dep = agent.deployment_hash
    a = client.create_command(dep, "deploy")
    b = client.create_command(dep, "deploy")
    agent.claim(limit=2)
    failed = agent.report_result(a.command_id, "failed", error={"message": "disk full"})
    assert failed.status == "failed" and failed.error == {"message": "disk full"}
    client.cancel_command(b.command_id)
    with pytest.raises(Conflict, match="cancelled"):
        agent.report_result(b.command_id, "completed", {})
    with pytest.raises(InvalidInput, match="done"):
        agent.report_result(a.command_id, "done")
    never = client.create_command(dep, "logs", scheduled_for=None)
    with pytest.raises(Conflict, match="never delivered"):
        agent.report_result(never.command_id, "completed")


def test_wrong_agent_and_unknown_command(client: Client, make_agent: Any, db: Any) -> None:
    agent = make_agent()
    cmd = client.create_command(agent.deployment_hash, "health")
    intruder = Agent(client.source, agent.deployment_hash, uuid.uuid4())
    with pytest.raises(PermissionDenied) as info:
        intruder.claim()
    assert info.value.sqlstate == "42501" and info.value.hint
    agent.claim()
    for call in (
        lambda: intruder.start(cmd.command_id),
        lambda: intruder.extend_lease(cmd.command_id),
        lambda: intruder.report_result(cmd.command_id, "completed"),
    ):
        with pytest.raises(PermissionDenied):
            call()
    with pytest.raises(NotFound):
        agent.start("cmd_unknown")
    unregistered = make_agent(register=False)
    with pytest.raises(InvalidInput, match="agent_id"):
        unregistered.claim()


def test_agent_logs(client: Client, make_agent: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stacker_queue")
    agent = make_agent()
    dep = agent.deployment_hash
    cmd = client.create_command(dep, "health")
    agent.claim()
    agent.report_result(cmd.command_id, "completed", {"ok": True})
    with pytest.raises(Conflict):
        agent.report_result(cmd.command_id, "failed")
    messages = [r.getMessage() for r in caplog.records if r.name == "stacker_queue"]
    assert any(m.startswith(f"Attempting to claim commands for deployment {dep}") for m in messages)
    assert f"Claimed 1 commands for deployment {dep}: {cmd.command_id}" in messages
    assert f"Attempting to report command {cmd.command_id} as completed" in messages
    assert f"Successfully reported command {cmd.command_id} as completed" in messages
    assert any(m.startswith(f"Failed to report command {cmd.command_id}: ") for m in messages)


# -- wait_for_commands --------------------------------------------------------------------
def test_wait_returns_at_once_when_commands_are_there(client: Client, make_agent: Any) -> None:
    agent = make_agent(poll_interval=POLL)
    client.create_command(agent.deployment_hash, "logs")
    client.create_command(agent.deployment_hash, "logs")
    started = time.monotonic()
    assert len(agent.wait_for_commands(timeout=10, limit=5)) == 2
    assert time.monotonic() - started < 1


def test_wait_times_out_with_an_empty_list(make_agent: Any) -> None:
    agent = make_agent(poll_interval=0.2)
    started = time.monotonic()
    assert agent.wait_for_commands(timeout=0.7) == []
    assert 0.6 < time.monotonic() - started < 3
    assert agent.wait_for_commands(timeout=0) == []
    with pytest.raises(InvalidInput, match="timeout"):
        agent.wait_for_commands(timeout=-1)


def test_wait_is_woken_by_a_new_command(client: Client, make_agent: Any) -> None:
    agent = make_agent(poll_interval=POLL)
    other = make_agent(poll_interval=POLL)
    waiter = Waiter(agent)
    waiter.start()
    listening(agent)
    client.create_command(other.deployment_hash, "health")  # another deployment: no wake
    time.sleep(0.3)
    assert waiter.is_alive()
    cmd = client.create_command(agent.deployment_hash, "health")
    (got,) = waiter.finish()
    assert got.command_id == cmd.command_id and got.status == "sent"


def test_wake_up_latency_is_far_below_the_poll_interval(
    client: Client, make_agent: Any, record_property: Any
) -> None:
    """create_command commit -> the agent holding the command, several times."""
    agent = make_agent(poll_interval=POLL)
    samples = []
    for _ in range(7):
        waiter = Waiter(agent, timeout=3 * POLL)
        waiter.start()
        listening(agent)
        client.create_command(agent.deployment_hash, "health", {"app_code": "fastapi"})
        committed = time.perf_counter()
        (got,) = waiter.finish()
        samples.append(waiter.returned_at - committed)
        agent.report_result(got.command_id, "completed", {"app_code": "fastapi"})
    median = median_ms(samples)
    record_property("wakeup_median_ms", round(median, 2))
    print(f"\nwake-up latency: median {median:.1f} ms over {len(samples)} wake-ups (sync)")
    assert median < 0.1 * POLL * 1000


def test_wait_polls_without_a_listener(client: Client, make_agent: Any) -> None:
    agent = make_agent(poll_interval=0.2, listen=False)
    waiter = Waiter(agent, timeout=10)
    waiter.start()
    time.sleep(0.3)
    cmd = client.create_command(agent.deployment_hash, "logs")
    (got,) = waiter.finish()
    assert got.command_id == cmd.command_id
    assert agent.listener is None


def test_unreachable_listen_dsn_falls_back_to_polling(
    db: Any, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stacker_queue")
    dead = "host=127.0.0.1 port=1 connect_timeout=2"
    with Agent.connect(db.conninfo, new_hash(), listen_conninfo=dead, poll_interval=0.2) as agent:
        agent.register()
        waiter = Waiter(agent, timeout=10)
        waiter.start()
        time.sleep(0.5)
        cmd = client.create_command(agent.deployment_hash, "logs")
        (got,) = waiter.finish()
    assert got.command_id == cmd.command_id
    assert any("Cannot LISTEN for wake-ups" in r.getMessage() for r in caplog.records)


def test_a_scheduled_command_is_found_by_polling(client: Client, make_agent: Any) -> None:
    """No NOTIFY when a scheduled command becomes due: the poll finds it."""
    from datetime import timedelta

    agent = make_agent(poll_interval=0.3)
    at = datetime.now(UTC) + timedelta(seconds=1)
    cmd = client.create_command(agent.deployment_hash, "logs", scheduled_for=at)
    (got,) = agent.wait_for_commands(timeout=10)
    assert got.command_id == cmd.command_id
    assert datetime.now(UTC) >= at


# -- async --------------------------------------------------------------------------------
async def test_async_agent_lifecycle(db: Any, make_async_agent: Any) -> None:
    agent: AsyncAgent = await make_async_agent(poll_interval=POLL)
    dep = agent.deployment_hash
    assert agent.agent_id is not None
    c = Client.connect(db.conninfo)
    try:
        cmd = c.create_command(dep, "health", {"app_code": "api"})
        (claimed,) = await agent.claim()
        assert claimed.command_id == cmd.command_id
        assert (await agent.start(cmd.command_id)).status == "executing"
        assert await agent.extend_lease(cmd.command_id, 120) > datetime.now(UTC)
        done = await agent.report_result(
            cmd.command_id, "completed", {"app_code": "api", "container_state": "exited"}
        )
        assert done.status == "completed"
        assert [a.status for a in c.app_status(dep)] == ["stopped"]
        with pytest.raises(Conflict):
            await agent.report_result(cmd.command_id, "failed")
        with pytest.raises(NotFound):
            await agent.start("cmd_none")
        intruder = AsyncAgent(agent._runner.source, dep, uuid.uuid4())
        with pytest.raises(PermissionDenied):
            await intruder.claim()
    finally:
        c.close()


async def test_async_wait_is_woken_fast(db: Any, make_async_agent: Any) -> None:
    agent: AsyncAgent = await make_async_agent(poll_interval=POLL)
    c = Client.connect(db.conninfo)
    samples = []
    try:
        assert await agent.wait_for_commands(timeout=0) == []
        for _ in range(5):
            task = asyncio.create_task(agent.wait_for_commands(timeout=3 * POLL))
            while agent.listener is None or agent.listener.waiting == 0:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            cmd = await asyncio.to_thread(c.create_command, agent.deployment_hash, "health")
            committed = time.perf_counter()
            (got,) = await task
            samples.append(time.perf_counter() - committed)
            assert got.command_id == cmd.command_id
    finally:
        c.close()
    median = median_ms(samples)
    print(f"\nwake-up latency: median {median:.1f} ms over {len(samples)} wake-ups (async)")
    assert median < 0.1 * POLL * 1000


async def test_async_wait_times_out_and_polls(db: Any, make_async_agent: Any) -> None:
    agent: AsyncAgent = await make_async_agent(poll_interval=0.2, listen=False)
    started = time.monotonic()
    assert await agent.wait_for_commands(timeout=0.5) == []
    assert time.monotonic() - started >= 0.45
    with pytest.raises(InvalidInput):
        await agent.wait_for_commands(timeout=-0.1)
