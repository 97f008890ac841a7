"""Stress: 16 agent workers over 50 deployments against a stream of new
commands, with random cancels, abandoned commands (lease expiries), late
reports, lease extensions, requeue_expired and cleanup sweeps, all at once.

At the end every command is terminal (nothing stays pending), queue rows
match pending statuses exactly, every command whose create returned exists
and nothing else does, no command was reported twice or announced twice,
every delivery was seen by exactly one claim and none came while a lease was
still running, the audit log holds exactly one row per transition (the
expected count derived from each command's history), and no deadlock was
raised (pg_stat_database.deadlocks before and after, and no 40P01 anywhere).

Size: STACKER_QUEUE_STRESS=full runs the documented 20,000 commands; the
default (CI) runs 2,500. STACKER_QUEUE_STRESS_COMMANDS overrides either.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest
from conftest import Database
from psycopg.rows import dict_row
from reliability_helpers import (
    AuditCheck,
    deadlock_count,
    premature_redeliveries,
    queue_invariant_violations,
    settled_deadlock_count,
    write_figures,
)

from stacker_queue import Agent, Client, Command, Conflict, connection_pool

FULL = os.environ.get("STACKER_QUEUE_STRESS", "").lower() == "full"
COMMANDS = int(os.environ.get("STACKER_QUEUE_STRESS_COMMANDS", "20000" if FULL else "2500"))
WORKERS = 16
DEPLOYMENTS = 50
PRODUCERS = 2
PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "critical": 3}
DRAIN_SECONDS = 600 if FULL else 180
RATE = float(os.environ.get("STACKER_QUEUE_STRESS_RATE", "250"))  # commands a second


class Run:
    """Everything the actors saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.max_attempts: dict[str, int] = {}
        self.deliveries: Counter[tuple[str, int]] = Counter()
        self.audit = AuditCheck()
        self.extended: set[str] = set()
        self.reports_ok: dict[str, list[Any]] = defaultdict(list)
        self.unexpected: list[str] = []
        self.unordered_claims: list[list[str]] = []
        self.ops: Counter[str] = Counter()
        self.late: list[tuple[float, int, str, Agent, str, Any]] = []
        self.sweep_mismatches: list[tuple[int, int]] = []
        self.events: Counter[str] = Counter()
        self.event_status: dict[str, str] = {}
        self.producing = threading.Event()
        self.stop = threading.Event()

    def count(self, op: str, n: int = 1) -> None:
        with self.lock:
            self.ops[op] += n

    def fail(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.unexpected.append(f"{where}: {type(exc).__name__}: {exc}")


def producer(run: Run, client: Client, deployments: list[str], quota: int, seed: int) -> None:
    rng = random.Random(seed)
    made = 0
    began = time.monotonic()
    try:
        while made < quota and not run.stop.is_set():
            # About what 16 workers drain, so the queue stays short and most
            # commands are delivered, not expired by the cleanup sweep.
            ahead = made / (RATE / PRODUCERS) - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
            n = min(quota - made, 1 if rng.random() < 0.5 else rng.randint(2, 40))
            specs = []
            for _ in range(n):
                health = rng.random() < 0.2
                specs.append(
                    {
                        "deployment_hash": rng.choice(deployments),
                        "command_type": "health" if health else rng.choice(["logs", "restart"]),
                        "parameters": {"app_code": f"app{rng.randint(0, 3)}"} if health else {},
                        "priority": rng.choice(list(PRIORITY_RANK)),
                        "max_attempts": rng.randint(1, 4),
                    }
                )
            if n == 1:
                s = specs[0]
                created = [
                    client.create_command(
                        s["deployment_hash"],
                        s["command_type"],
                        s["parameters"],
                        priority=s["priority"],
                        max_attempts=s["max_attempts"],
                    )
                ]
                run.count("create")
            else:
                created = client.create_commands(specs)
                run.count("create_batch")
            with run.lock:
                for c in created:
                    run.created.append(c.command_id)
                    run.max_attempts[c.command_id] = c.max_attempts
            made += n
    except BaseException as exc:
        run.fail("producer", exc)


def result_for(worker: int, cmd: Command, rng: random.Random) -> Any:
    result: dict[str, Any] = {"worker": worker, "attempt": cmd.attempts, "nonce": rng.random()}
    if cmd.type == "health":
        result.update(app_code=cmd.parameters.get("app_code"), status="running", logs=["ok"])
    return result


def report(run: Run, agent: Agent, command_id: str, status: str, result: Any, op: str) -> None:
    try:
        got = agent.report_result(command_id, status, result)
    except Conflict:
        run.count(f"{op}_refused")
        return
    run.count(f"{op}_accepted")
    with run.lock:
        run.reports_ok[command_id].append(got.result)


def worker(run: Run, agents: dict[str, Agent], deployments: list[str], index: int) -> None:
    rng = random.Random(1000 + index)
    try:
        while not run.stop.is_set():
            dep = rng.choice(deployments)
            agent = agents[dep]
            lease = rng.choice([1, 2, 3])
            if rng.random() < 0.1:
                commands = agent.wait_for_commands(timeout=0.05, limit=rng.randint(1, 5))
            else:
                commands = agent.claim(rng.randint(1, 5), lease_seconds=lease)
            run.count("claim")
            if not commands:
                time.sleep(0.005)
                continue
            keys = [(-PRIORITY_RANK[c.priority], c.created_at) for c in commands]
            with run.lock:
                if keys != sorted(keys):
                    run.unordered_claims.append([c.command_id for c in commands])
                for c in commands:
                    run.deliveries[(c.command_id, c.attempts)] += 1
            run.count("delivered", len(commands))
            for cmd in commands:
                roll = rng.random()
                if roll < 0.06:
                    run.count("abandoned")  # the agent "crashed": the lease runs out
                    continue
                status = "completed" if rng.random() < 0.9 else "failed"
                if roll < 0.14:  # a late report, after the lease ran out
                    assert cmd.lease_expires_at is not None
                    due = cmd.lease_expires_at.timestamp() + rng.uniform(0.1, 1.0)
                    with run.lock:
                        heapq.heappush(
                            run.late,
                            (
                                due,
                                rng.randint(0, 10**9),
                                cmd.command_id,
                                agent,
                                status,
                                result_for(index, cmd, rng),
                            ),
                        )
                    continue
                if roll >= 0.19:  # start first (else report straight from sent)
                    try:
                        started = agent.start(cmd.command_id)
                        with run.lock:
                            assert started.started_at is not None
                            run.audit.starts[cmd.command_id].add(started.started_at)
                        run.count("started")
                    except Conflict:
                        run.count("start_refused")
                        continue
                    if rng.random() < 0.2:
                        with run.lock:
                            run.extended.add(cmd.command_id)
                        try:
                            agent.extend_lease(cmd.command_id, rng.choice([1, 2, 3]))
                            run.count("extended")
                        except Conflict:
                            run.count("extend_refused")
                report(run, agent, cmd.command_id, status, result_for(index, cmd, rng), "report")
    except BaseException as exc:
        run.fail(f"worker {index}", exc)


def late_reporter(run: Run) -> None:
    try:
        while not (run.stop.is_set() and not run.late):
            with run.lock:
                item = run.late[0] if run.late and run.late[0][0] <= time.time() else None
                if item is not None:
                    heapq.heappop(run.late)
            if item is None:
                time.sleep(0.01)
                continue
            _, _, command_id, agent, status, result = item
            report(run, agent, command_id, status, result, "late_report")
    except BaseException as exc:
        run.fail("late reporter", exc)


def canceller(run: Run, client: Client) -> None:
    rng = random.Random(7)
    try:
        while run.producing.is_set() and not run.stop.is_set():
            with run.lock:  # half the time a recent one, likely still pending
                pool = run.created[-100:] if rng.random() < 0.5 else run.created
                target = rng.choice(pool) if pool else None
            if target is not None:
                try:
                    client.cancel_command(target, reason="stress")
                    run.count("cancel_accepted")
                except Conflict:
                    run.count("cancel_refused")
            time.sleep(rng.uniform(0.005, 0.03))
    except BaseException as exc:
        run.fail("canceller", exc)


def sweeper(run: Run, conninfo: str) -> None:
    """requeue_expired every 0.3 s; in the same transaction, which commands it
    moved (their updated_at is the transaction's now()), so requeues are known
    per command. cleanup every 3 s (queued for over 30 s: expired)."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            n = 0
            while not run.stop.is_set():
                with conn.transaction():
                    row = conn.execute("SELECT stacker.requeue_expired()").fetchone()
                    moved = conn.execute(
                        "SELECT command_id, status FROM stacker.commands WHERE updated_at = now() "
                        "AND (status = 'queued' OR error ->> 'reason' = 'lease_expired')"
                    ).fetchall()
                assert row is not None
                with run.lock:
                    if row[0] != len(moved):
                        run.sweep_mismatches.append((row[0], len(moved)))
                    for command_id, status in moved:
                        if status == "queued":
                            run.audit.requeues[command_id] += 1
                run.count("sweep")
                run.count("swept_requeued", sum(1 for _, s in moved if s == "queued"))
                run.count("swept_failed", sum(1 for _, s in moved if s == "failed"))
                n += 1
                if n % 10 == 0:
                    expired = conn.execute("SELECT stacker.cleanup('30 seconds')").fetchone()
                    assert expired is not None
                    run.count("cleanup_expired", expired[0]["expired"])
                time.sleep(0.3)
    except BaseException as exc:
        run.fail("sweeper", exc)


def events_listener(run: Run, conninfo: str, ready: threading.Event, stop: threading.Event) -> None:
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("LISTEN stacker_command_events")
            ready.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    payload = json.loads(note.payload)
                    with run.lock:
                        run.events[payload["command_id"]] += 1
                        run.event_status[payload["command_id"]] = payload["status"]
    except BaseException as exc:
        run.fail("events listener", exc)
        ready.set()


@pytest.mark.timeout(1800)
def test_stress(db: Database) -> None:
    run = Run()
    check = db.connect()
    deadlocks_before = deadlock_count(check)
    rng = random.Random(42)
    deployments = [f"stress-{i:02d}-{rng.getrandbits(32):08x}" for i in range(DEPLOYMENTS)]

    agent_pool = connection_pool(db.conninfo, min_size=4, max_size=10)
    client_pool = connection_pool(db.conninfo, max_size=3)
    events_stop_grace = 10.0
    try:
        agents = {}
        for dep in deployments:
            agent_id = Agent(agent_pool, dep).register().id
            agents[dep] = Agent(
                agent_pool, dep, agent_id, listen=False, poll_interval=0.05, lease_seconds=2
            )
        client = Client(client_pool, actor="stress")

        ready, listener_stop = threading.Event(), threading.Event()
        listener = threading.Thread(
            target=events_listener, args=(run, db.conninfo, ready, listener_stop)
        )
        listener.start()
        assert ready.wait(10)
        run.producing.set()
        started = time.monotonic()
        quota = [
            COMMANDS // PRODUCERS + (1 if i < COMMANDS % PRODUCERS else 0) for i in range(PRODUCERS)
        ]
        producers = [
            threading.Thread(target=producer, args=(run, client, deployments, quota[i], i))
            for i in range(PRODUCERS)
        ]
        actors = [
            threading.Thread(target=worker, args=(run, agents, deployments, i))
            for i in range(WORKERS)
        ]
        actors += [
            threading.Thread(target=late_reporter, args=(run,)),
            threading.Thread(target=canceller, args=(run, client)),
            threading.Thread(target=sweeper, args=(run, db.conninfo)),
        ]
        for t in producers + actors:
            t.start()
        for t in producers:
            t.join()
        produced_in = time.monotonic() - started
        run.producing.clear()

        # Drain: until every command is terminal (abandoned ones come back when
        # their lease runs out, or fail on their last attempt).
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and not run.unexpected:
            pending = check.execute(
                "SELECT count(*) FROM stacker.commands "
                "WHERE status IN ('queued', 'sent', 'executing')"
            ).fetchone()
            if pending == (0,):
                break
            time.sleep(0.5)
        run.stop.set()
        for t in actors:
            t.join(60)
        duration = time.monotonic() - started
        # The announcements of the last terminal statuses may still be in flight.
        terminal = check.execute(
            "SELECT count(*) FROM stacker.commands "
            "WHERE status IN ('completed', 'failed', 'cancelled')"
        ).fetchone()
        assert terminal is not None
        grace = time.monotonic() + events_stop_grace
        while sum(run.events.values()) < terminal[0] and time.monotonic() < grace:
            time.sleep(0.1)
        listener_stop.set()
        listener.join(10)
    finally:
        run.stop.set()
        listener_stop.set()
        agent_pool.close()
        client_pool.close()

    # -- the verdict --------------------------------------------------------------------------
    assert run.unexpected == [], run.unexpected[:20]
    assert run.sweep_mismatches == []
    assert run.unordered_claims == []

    rows = {
        r["command_id"]: r
        for r in check.cursor(row_factory=dict_row)
        .execute(
            "SELECT command_id, status, attempts, max_attempts, result, error FROM stacker.commands"
        )
        .fetchall()
    }
    created = set(run.created)
    assert len(created) == len(run.created) == COMMANDS  # no duplicate ids handed back
    assert set(rows) == created  # every successful create exists, nothing else does
    statuses = Counter(r["status"] for r in rows.values())
    assert set(statuses) <= {"completed", "failed", "cancelled"}, statuses  # drained
    assert queue_invariant_violations(check) == []
    assert check.execute("SELECT count(*) FROM stacker.command_queue").fetchone() == (0,)

    # Deliveries: each (command, attempt) seen by exactly one claim; attempts within bounds.
    assert [k for k, n in run.deliveries.items() if n != 1] == []
    per_command = Counter(cid for cid, _ in run.deliveries)
    wrong_attempts = [
        cid
        for cid, r in rows.items()
        if r["attempts"] != per_command.get(cid, 0) or r["attempts"] > r["max_attempts"]
    ]
    assert wrong_attempts == []
    lease_failed = [r for r in rows.values() if (r["error"] or {}).get("reason") == "lease_expired"]
    assert all(r["attempts"] == r["max_attempts"] for r in lease_failed)

    # Reports: exactly one accepted per reported outcome, never two; it is what is stored.
    twice = [cid for cid, results in run.reports_ok.items() if len(results) > 1]
    assert twice == []
    for cid, r in rows.items():
        reported = r["status"] == "completed" or (r["status"] == "failed" and r["error"] is None)
        assert len(run.reports_ok.get(cid, [])) == (1 if reported else 0), (cid, r)
        if reported:
            assert run.reports_ok[cid][0] == r["result"]

    # Announcements: one per terminal command, with its final status.
    assert {cid: n for cid, n in run.events.items() if n != 1} == {}
    assert set(run.events) == set(rows)
    assert all(run.event_status[cid] == r["status"] for cid, r in rows.items())

    # The audit log: one row per transition, per command.
    expected_audit, actual_audit, mismatches = run.audit.mismatches(check, created)
    assert mismatches == [], mismatches[:10]
    assert expected_audit == actual_audit

    # No delivery while an earlier lease of the command was running (commands
    # whose lease was never extended; extend_lease writes no audit row).
    never_extended = created - run.extended
    assert premature_redeliveries(check, never_extended) == []

    deadlocks_after = settled_deadlock_count(check)
    assert deadlocks_after == deadlocks_before

    write_figures(
        f"stress_{'full' if FULL else 'ci'}",
        {
            "commands": COMMANDS,
            "workers": WORKERS,
            "deployments": DEPLOYMENTS,
            "seconds_total": round(duration, 1),
            "seconds_producing": round(produced_in, 1),
            "final_statuses": dict(statuses),
            "deliveries": sum(run.deliveries.values()),
            "redeliveries": sum(run.deliveries.values()) - len(per_command),
            "audit_rows": actual_audit,
            "terminal_announcements": sum(run.events.values()),
            "lease_failures": len(lease_failed),
            "deadlocks": deadlocks_after - deadlocks_before,
            "ops": dict(run.ops),
            "lost": len(created - set(rows)),
            "duplicated": len(run.created) - len(created),
        },
    )
