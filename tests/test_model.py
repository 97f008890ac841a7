"""The lifecycle against a model: Hypothesis drives create, claim, start,
extend, report, cancel, expire (a lease moved into the past), requeue_expired
and cleanup against the real database, through the Python wrapper where it
has the call, and checks after every step that statuses, attempts, queue rows,
leases and the audit trail match a small Python model, and that every
illegal step fails with the contract's SQLSTATE and changes nothing.

STACKER_QUEUE_MODEL_EXAMPLES sets the number of examples (default 30; each
is up to 40 steps)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from conftest import Database
from helpers_queue import new_hash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from reliability_helpers import queue_invariant_violations, write_figures

from stacker_queue import Agent, Client, StackerQueueError, connection_pool

PRIORITY = {"low": 0, "normal": 1, "high": 2, "critical": 3}
TERMINAL = {"completed", "failed", "cancelled"}
STEPS: Counter[str] = Counter()


@dataclass
class Cmd:
    command_id: str
    deployment: str
    priority: str
    max_attempts: int
    seq: int
    status: str = "queued"
    attempts: int = 0
    lease_expired: bool = False
    result: Any = None
    error: Any = None
    audit: Counter[str] = field(default_factory=Counter)

    @property
    def in_flight(self) -> bool:
        return self.status in ("sent", "executing")

    def to(self, status: str) -> None:
        self.audit["command.requeued" if status == "queued" else f"command.{status}"] += 1
        self.status = status


class Lifecycle(RuleBasedStateMachine):
    """One example: two deployments with an agent each, in a shared database."""

    commands = Bundle("commands")

    def __init__(self, pool: Any, owner: psycopg.Connection[Any]) -> None:
        super().__init__()
        self.client, self.owner = Client(pool), owner
        self.deps = [new_hash("model"), new_hash("model")]
        self.agents = {dep: Agent(pool, dep, listen=False) for dep in self.deps}
        for agent in self.agents.values():
            agent.register()
        self.model: dict[str, Cmd] = {}
        self.gone: set[str] = set()  # deleted by cleanup's retention
        self.seq = 0

    # -- helpers ---------------------------------------------------------------------------
    def expect_error(self, sqlstate: str, call: Any) -> None:
        before = self.snapshot()
        with pytest.raises(StackerQueueError) as info:
            call()
        assert info.value.sqlstate == sqlstate, (sqlstate, info.value.sqlstate, info.value.message)
        assert self.snapshot() == before, "a refused call changed something"

    def snapshot(self) -> list[tuple[Any, ...]]:
        return self.owner.execute(
            "SELECT command_id, status, attempts, lease_expires_at, result, error, updated_at "
            "FROM stacker.commands WHERE deployment_hash = ANY(%s) ORDER BY command_id",
            [self.deps],
        ).fetchall()

    def agent_of(self, cmd: Cmd) -> Agent:
        return self.agents[cmd.deployment]

    def other_agent(self, cmd: Cmd) -> Agent:
        return self.agents[next(d for d in self.deps if d != cmd.deployment)]

    # -- rules -----------------------------------------------------------------------------
    @initialize(target=commands, priority=st.sampled_from(list(PRIORITY)))
    def first(self, priority: str) -> str:
        return self.create(0, priority, 3)

    @rule(
        target=commands,
        dep=st.integers(0, 1),
        priority=st.sampled_from(list(PRIORITY)),
        max_attempts=st.integers(1, 3),
    )
    def create(self, dep: int, priority: str, max_attempts: int) -> str:
        STEPS["create"] += 1
        deployment = self.deps[dep]
        got = self.client.create_command(
            deployment, "restart", {"n": self.seq}, priority=priority, max_attempts=max_attempts
        )
        assert (got.status, got.attempts, got.priority) == ("queued", 0, priority)
        self.seq += 1
        cmd = Cmd(got.command_id, deployment, priority, max_attempts, self.seq)
        cmd.audit["command.created"] += 1
        self.model[cmd.command_id] = cmd
        return cmd.command_id

    @rule(dep=st.integers(0, 1), limit=st.integers(1, 4))
    def claim(self, dep: int, limit: int) -> None:
        STEPS["claim"] += 1
        deployment = self.deps[dep]
        # The model's claim: due rows best first (priority, then age); a due
        # in-flight row on its last attempt fails instead of taking a place.
        expected: list[str] = []
        remaining = limit
        while remaining > 0:
            due = sorted(
                (
                    c
                    for c in self.model.values()
                    if c.deployment == deployment
                    and c.command_id not in self.gone
                    and (c.status == "queued" or (c.in_flight and c.lease_expired))
                    and c.command_id not in expected
                ),
                key=lambda c: (-PRIORITY[c.priority], c.seq),
            )[:remaining]
            exhausted = [c for c in due if c.in_flight and c.attempts >= c.max_attempts]
            for c in exhausted:
                c.error = {"reason": "lease_expired", "attempts": c.attempts}
                c.lease_expired = False
                c.to("failed")
            taken = [c for c in due if c not in exhausted]
            expected += [c.command_id for c in taken]
            remaining -= len(taken)
            if not exhausted:
                break
        got = self.agents[deployment].claim(limit)
        assert [c.command_id for c in got] == expected
        for c in got:
            m = self.model[c.command_id]
            m.attempts += 1
            m.lease_expired = False
            m.to("sent")
            assert (c.status, c.attempts) == ("sent", m.attempts)

    @rule(command_id=commands, wrong_agent=st.booleans())
    def start(self, command_id: str, wrong_agent: bool) -> None:
        STEPS["start"] += 1
        cmd = self.model[command_id]
        if command_id in self.gone:
            return self.expect_error("P0002", lambda: self.agent_of(cmd).start(command_id))
        if wrong_agent:
            return self.expect_error("42501", lambda: self.other_agent(cmd).start(command_id))
        if cmd.status == "executing":
            assert self.agent_of(cmd).start(command_id).status == "executing"  # unchanged
        elif cmd.status == "sent" and not cmd.lease_expired:
            assert self.agent_of(cmd).start(command_id).status == "executing"
            cmd.to("executing")
        else:
            self.expect_error("55000", lambda: self.agent_of(cmd).start(command_id))

    @rule(command_id=commands, seconds=st.integers(1, 600))
    def extend(self, command_id: str, seconds: int) -> None:
        STEPS["extend"] += 1
        cmd = self.model[command_id]
        if command_id in self.gone:
            return self.expect_error(
                "P0002", lambda: self.agent_of(cmd).extend_lease(command_id, seconds)
            )
        if cmd.in_flight and not cmd.lease_expired:
            self.agent_of(cmd).extend_lease(command_id, seconds)
        else:
            self.expect_error("55000", lambda: self.agent_of(cmd).extend_lease(command_id, seconds))

    @rule(
        command_id=commands,
        status=st.sampled_from(["completed", "failed"]),
        value=st.integers(0, 1),
        wrong_agent=st.booleans(),
    )
    def report(self, command_id: str, status: str, value: int, wrong_agent: bool) -> None:
        STEPS["report"] += 1
        cmd = self.model[command_id]
        result = {"v": value}

        def call(agent: Agent) -> Any:
            return agent.report_result(command_id, status, result)

        if command_id in self.gone:
            return self.expect_error("P0002", lambda: call(self.agent_of(cmd)))
        if wrong_agent:
            return self.expect_error("42501", lambda: call(self.other_agent(cmd)))
        if cmd.status == "cancelled" or (cmd.status == "queued" and cmd.attempts == 0):
            return self.expect_error("55000", lambda: call(self.agent_of(cmd)))
        if cmd.status in TERMINAL:
            if cmd.status == status and cmd.result == result and cmd.error is None:
                assert call(self.agent_of(cmd)).status == status  # the same report again
                return None
            return self.expect_error("55000", lambda: call(self.agent_of(cmd)))
        # Pending and delivered at least once: accepted, even after the lease ran
        # out or the command was requeued.
        got = call(self.agent_of(cmd))
        assert (got.status, got.result) == (status, result)
        cmd.result, cmd.lease_expired = result, False
        cmd.to(status)
        return None

    @rule(command_id=commands)
    def cancel(self, command_id: str) -> None:
        STEPS["cancel"] += 1
        cmd = self.model[command_id]
        if command_id in self.gone:
            return self.expect_error("P0002", lambda: self.client.cancel_command(command_id))
        if cmd.status in ("completed", "failed"):
            return self.expect_error("55000", lambda: self.client.cancel_command(command_id))
        got = self.client.cancel_command(command_id, reason="model")
        assert got.status == "cancelled"
        if cmd.status != "cancelled":
            cmd.error = got.error
            cmd.lease_expired = False
            cmd.to("cancelled")
        return None

    @precondition(lambda self: any(c.in_flight for c in self.model.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """The holder went quiet: its lease is moved into the past."""
        STEPS["expire"] += 1
        # In creation order: the ids are random, and an order that changed from one
        # replay of the same draws to the next made Hypothesis report
        # FlakyStrategyDefinition (the same index named another command).
        flying = [
            c.command_id for c in sorted(self.model.values(), key=lambda c: c.seq) if c.in_flight
        ]
        command_id = data.draw(st.sampled_from(flying))
        self.owner.execute(
            "UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' "
            "WHERE command_id = %s",
            [command_id],
        )
        self.model[command_id].lease_expired = True

    @rule()
    def requeue_expired(self) -> None:
        STEPS["requeue_expired"] += 1
        moved = 0
        for cmd in self.model.values():
            if cmd.in_flight and cmd.lease_expired:
                moved += 1
                cmd.lease_expired = False
                if cmd.attempts >= cmd.max_attempts:
                    cmd.error = {"reason": "lease_expired", "attempts": cmd.attempts}
                    cmd.to("failed")
                else:
                    cmd.to("queued")
        row = self.owner.execute("SELECT stacker.requeue_expired()").fetchone()
        assert row == (moved,)

    @rule(retention=st.booleans())
    def cleanup(self, retention: bool) -> None:
        """Expire every queued command (a TTL of a microsecond); with retention,
        delete every finished one."""
        STEPS["cleanup"] += 1
        deleted = set()
        if retention:  # finished before this call (those it expires are not old enough)
            deleted = {c.command_id for c in self.model.values() if c.status in TERMINAL}
            deleted -= self.gone
        expired = [c for c in self.model.values() if c.status == "queued"]
        for cmd in expired:
            cmd.to("cancelled")
            cmd.error = {"reason": "expired"}
        row = self.owner.execute(
            "SELECT stacker.cleanup('1 microsecond', %s)",
            ["1 microsecond" if retention else None],
        ).fetchone()
        assert row is not None
        assert row[0] == {"expired": len(expired), "queue_rows_removed": 0, "deleted": len(deleted)}
        self.gone |= deleted

    # -- the checks ------------------------------------------------------------------------
    @invariant()
    def matches_the_model(self) -> None:
        rows = {
            r[0]: r[1:]
            for r in self.owner.execute(
                "SELECT c.command_id, c.status, c.attempts, q.id IS NOT NULL, "
                "q.lease_expires_at, c.lease_expires_at, c.lease_expires_at <= now() "
                "FROM stacker.commands c LEFT JOIN stacker.command_queue q USING (command_id) "
                "WHERE c.deployment_hash = ANY(%s)",
                [self.deps],
            ).fetchall()
        }
        alive = {k: v for k, v in self.model.items() if k not in self.gone}
        assert set(rows) == set(alive)
        for command_id, cmd in alive.items():
            status, attempts, queued, q_lease, lease, lapsed = rows[command_id]
            assert (status, attempts) == (cmd.status, cmd.attempts), command_id
            assert queued == (cmd.status not in TERMINAL), command_id
            if cmd.in_flight:
                assert q_lease == lease and lease is not None
                assert lapsed == cmd.lease_expired, command_id
            else:
                assert lease is None and q_lease is None
        assert queue_invariant_violations(self.owner) == []

    @invariant()
    def one_audit_row_per_transition(self) -> None:
        actual: dict[str, Counter[str]] = {}
        for command_id, action, n in self.owner.execute(
            "SELECT details ->> 'command_id', action, count(*) FROM stacker.audit_log "
            "WHERE deployment_hash = ANY(%s) AND action LIKE 'command.%%' GROUP BY 1, 2",
            [self.deps],
        ).fetchall():
            actual.setdefault(command_id, Counter())[action] = n
        for command_id, cmd in self.model.items():
            assert actual.get(command_id, Counter()) == +cmd.audit, command_id

    @rule(which=st.sampled_from(["start", "extend", "report", "cancel", "get"]))
    def unknown_command(self, which: str) -> None:
        STEPS["unknown"] += 1
        agent, missing = self.agents[self.deps[0]], f"cmd_missing_{self.seq}"
        call = {
            "start": lambda: agent.start(missing),
            "extend": lambda: agent.extend_lease(missing),
            "report": lambda: agent.report_result(missing, "completed"),
            "cancel": lambda: self.client.cancel_command(missing),
            "get": lambda: self.client.get_command(missing),
        }[which]
        self.expect_error("P0002", call)

    def teardown(self) -> None:
        # Nothing of this example may be swept or deleted by the next one's
        # global requeue_expired and cleanup: cancel what is pending, then
        # delete every finished command.
        ids = [c for c, m in self.model.items() if m.status not in TERMINAL and c not in self.gone]
        for command_id in ids:
            self.client.cancel_command(command_id)
        self.owner.execute("SELECT stacker.cleanup('48 hours', '1 microsecond')")


def test_the_lifecycle_matches_the_model(db: Database) -> None:
    owner = db.connect()
    examples = int(os.environ.get("STACKER_QUEUE_MODEL_EXAMPLES", "30"))
    with connection_pool(db.conninfo, max_size=2) as pool:
        run_state_machine_as_test(
            lambda: Lifecycle(pool, owner),
            settings=settings(
                max_examples=examples,
                stateful_step_count=40,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    write_figures(
        "model", {"examples": examples, "steps": dict(STEPS), "total": sum(STEPS.values())}
    )
