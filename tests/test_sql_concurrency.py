"""Claims under real concurrency: separate connections, real row locks."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from conftest import Database, nested_plans


def register(conn: psycopg.Connection[Any], deployment: str) -> str:
    row = conn.execute("SELECT id FROM stacker.register_agent(%s)", [deployment]).fetchone()
    assert row is not None
    return str(row[0])


def create_many(conn: psycopg.Connection[Any], deployment: str, n: int, **extra: Any) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [
            {"deployment_hash": deployment, "command_type": "health", **extra}
            for _ in range(min(1000, n - start))
        ]
        rows = conn.execute(
            "SELECT command_id FROM stacker.create_commands(%s)", [json.dumps(batch)]
        ).fetchall()
        ids.extend(r[0] for r in rows)
    return ids


def test_eight_claimers_get_each_of_2000_commands_exactly_once(db: Database) -> None:
    setup = db.connect()
    agent = register(setup, "dep-race")
    created = set(create_many(setup, "dep-race", 2000))
    assert len(created) == 2000

    claimed: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def claimer(slot: int) -> None:
        rng = random.Random(slot)
        try:
            with psycopg.connect(db.conninfo, autocommit=True) as conn:
                start.wait()
                empty_rounds = 0
                while empty_rounds < 3:
                    rows = conn.execute(
                        "SELECT command_id FROM stacker.claim_commands(%s, %s, %s, 600)",
                        ["dep-race", agent, rng.randint(1, 10)],
                    ).fetchall()
                    if not rows:
                        empty_rounds += 1
                        time.sleep(0.01)
                        continue
                    empty_rounds = 0
                    ids = [r[0] for r in rows]
                    claimed[slot].extend(ids)
                    for command_id in ids:
                        conn.execute(
                            "SELECT stacker.report_result(%s, %s, 'completed', %s)",
                            [command_id, agent, json.dumps({"by": slot})],
                        )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors

    every = [c for ids in claimed for c in ids]
    counts = Counter(every)
    assert [c for c, n in counts.items() if n > 1] == []
    assert set(every) == created
    assert sum(1 for ids in claimed if ids) >= 2, "the claimers did not actually overlap"

    check = db.connect()
    row = check.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'), "
        "max(attempts), (SELECT count(*) FROM stacker.command_queue) "
        "FROM stacker.commands"
    ).fetchone()
    assert row == (2000, 1, 0)
    sent_audit = check.execute(
        "SELECT count(*) FROM stacker.audit_log WHERE action = 'command.sent'"
    ).fetchone()
    assert sent_audit == (2000,)


def _claim(conn: psycopg.Connection[Any], deployment: str, agent: str, limit: int = 1) -> list[str]:
    rows = conn.execute(
        "SELECT command_id FROM stacker.claim_commands(%s, %s, %s)", [deployment, agent, limit]
    ).fetchall()
    return [r[0] for r in rows]


def test_claims_never_wait_for_locks_held_by_others(db: Database) -> None:
    setup = db.connect()
    agent_a = register(setup, "dep-a")
    agent_b = register(setup, "dep-b")
    create_many(setup, "dep-a", 4)
    create_many(setup, "dep-b", 2)

    holder = db.connect(autocommit=False)
    held = _claim(holder, "dep-a", agent_a, 2)  # open transaction: its rows stay locked
    assert len(held) == 2

    other = db.connect()
    other.execute("SET lock_timeout = '50ms'")
    # another deployment: unaffected
    assert len(_claim(other, "dep-b", agent_b, 5)) == 2
    # the same deployment: skips the held rows instead of waiting for them
    t0 = time.perf_counter()
    rest = _claim(other, "dep-a", agent_a, 5)
    assert time.perf_counter() - t0 < 1.0
    assert len(rest) == 2 and not set(rest) & set(held)

    # a report in progress (row locked) is skipped by a claim too
    reporter = db.connect(autocommit=False)
    reporter.execute("SELECT stacker.report_result(%s, %s, 'completed')", [rest[0], agent_a])
    with db.connect() as expire:
        expire.execute(
            "UPDATE stacker.commands SET lease_expires_at = now() - interval '1 minute' "
            "WHERE command_id = %s",
            [rest[1]],
        )
    assert _claim(other, "dep-a", agent_a, 5) == [rest[1]]  # redelivered, not waited on
    holder.rollback()
    reporter.rollback()


def test_create_does_not_wait_behind_open_claims_and_reports(db: Database) -> None:
    setup = db.connect()
    agent = register(setup, "dep-c")
    create_many(setup, "dep-c", 3)

    delivered = _claim(setup, "dep-c", agent, 2)
    reporter = db.connect(autocommit=False)  # a report in progress
    reporter.execute("SELECT stacker.report_result(%s, %s, 'completed')", [delivered[0], agent])
    claimer = db.connect(autocommit=False)  # a claim in progress
    assert len(_claim(claimer, "dep-c", agent, 5)) == 1

    creator = db.connect()
    creator.execute("SET lock_timeout = '50ms'")
    row = creator.execute(
        "SELECT status FROM stacker.create_command('dep-c', 'logs', '{}', 'critical')"
    ).fetchone()
    assert row == ("queued",)
    claimer.rollback()
    reporter.rollback()


def test_lease_expiry_redelivers_while_holder_is_gone(db: Database) -> None:
    conn = db.connect()
    agent = register(conn, "dep-l")
    (command_id,) = create_many(conn, "dep-l", 1)
    assert _claim(conn, "dep-l", agent) == [command_id]
    assert _claim(conn, "dep-l", agent) == []  # leased
    conn.execute(
        "UPDATE stacker.commands SET lease_expires_at = clock_timestamp() WHERE command_id = %s",
        [command_id],
    )
    time.sleep(0.01)
    assert _claim(conn, "dep-l", agent) == [command_id]
    row = conn.execute(
        "SELECT attempts, status FROM stacker.commands WHERE command_id = %s", [command_id]
    ).fetchone()
    assert row == (2, "sent")


def _explain_claim(conn: psycopg.Connection[Any], deployment: str, agent: str) -> str:
    """The plan of the statements claim_commands runs, through auto_explain."""
    with nested_plans(conn, analyze=True) as plans:
        conn.execute("BEGIN")
        conn.execute(
            "SELECT * FROM stacker.claim_commands(%s, %s, 10)", [deployment, agent]
        ).fetchall()
        conn.execute("ROLLBACK")
    return "\n".join(p for p in plans if "command_queue" in p and "FOR NO KEY UPDATE" in p)


def _shared_buffers_touched(plan: str) -> int:
    import re

    totals = [
        sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", line))
        for line in plan.splitlines()
        if "Buffers:" in line
    ]
    return max(totals) if totals else 0


@pytest.mark.slow
def test_claim_uses_the_index_at_100000_commands_over_1000_deployments(db: Database) -> None:
    conn = db.connect()
    conn.execute("ALTER TABLE stacker.commands DISABLE TRIGGER _800_audit_insert")
    conn.execute("ALTER TABLE stacker.commands DISABLE TRIGGER _900_notify_insert")
    conn.execute(
        """
        INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by, priority)
        SELECT 'bulk-' || g, 'dep-' || (g % 1000), 'health', 'bench',
               (ARRAY['low', 'normal', 'high', 'critical'])[1 + g % 4]
          FROM generate_series(1, 100000) g
        """
    )
    conn.execute("ALTER TABLE stacker.commands ENABLE TRIGGER _800_audit_insert")
    conn.execute("ALTER TABLE stacker.commands ENABLE TRIGGER _900_notify_insert")
    conn.execute("VACUUM ANALYZE stacker.commands")
    conn.execute("VACUUM ANALYZE stacker.command_queue")
    counts = conn.execute(
        "SELECT count(*), count(DISTINCT deployment_hash) FROM stacker.command_queue"
    ).fetchone()
    assert counts == (100000, 1000)

    agent = register(conn, "dep-7")
    plan = _explain_claim(conn, "dep-7", agent)
    print(plan)
    assert "Index Scan using command_queue_claim_idx" in plan
    assert "Seq Scan" not in plan
    big = _shared_buffers_touched(plan)

    # The same claim with the other 999 deployments' commands gone costs the same.
    conn.execute("DELETE FROM stacker.commands WHERE deployment_hash <> 'dep-7'")
    conn.execute("VACUUM ANALYZE stacker.command_queue")
    small = _shared_buffers_touched(_explain_claim(conn, "dep-7", agent))
    assert big <= small * 1.5 + 10, (big, small)


# -- no waiting, whoever holds what (issue 5) ------------------------------------------------
# Each holder is an open transaction that has run one statement and keeps its
# locks. A claim (and a create) run beside it with lock_timeout = 100ms: had
# either waited on a lock, it would fail with 55P03 lock_not_available.
HOLDERS: dict[str, str] = {
    "select-for-update-command": (
        "SELECT 1 FROM stacker.commands WHERE command_id = %(q)s FOR UPDATE"
    ),
    "select-for-share-command": "SELECT 1 FROM stacker.commands WHERE command_id = %(q)s FOR SHARE",
    "select-for-update-queue-row": (
        "SELECT 1 FROM stacker.command_queue WHERE command_id = %(q)s FOR UPDATE"
    ),
    "stacker-update-sent": "UPDATE stacker.commands SET status = 'sent' WHERE command_id = %(q)s",
    "stacker-delete-queue-row": "DELETE FROM stacker.command_queue WHERE command_id = %(q)s",
    "cancel": "SELECT stacker.cancel_command(%(q)s)",
    "claim": "SELECT stacker.claim_commands(%(dep)s, %(agent)s, 1)",
    "start": "SELECT stacker.start_command(%(sent)s, %(agent)s)",
    "extend": "SELECT stacker.extend_lease(%(sent)s, %(agent)s, 60)",
    "report": "SELECT stacker.report_result(%(sent)s, %(agent)s, 'completed')",
    "report-health": (
        "SELECT stacker.report_result(%(sent)s, %(agent)s, 'completed', "
        '\'{"app_code": "web", "status": "running"}\')'
    ),
    "requeue-expired": "SELECT stacker.requeue_expired()",
    "cleanup": "SELECT stacker.cleanup('1 microsecond')",
    "register-agent": "SELECT stacker.register_agent(%(dep)s, NULL, '9.9')",
    "update-app-status": "SELECT stacker.update_app_status(%(dep)s, 'web', 'error')",
    "agent-row-no-key-update": (
        "SELECT 1 FROM stacker.agents WHERE deployment_hash = %(dep)s FOR NO KEY UPDATE"
    ),
    "create-same-deployment": "SELECT stacker.create_command(%(dep)s, 'health')",
}


def _no_wait_setup(db: Database, name: str) -> tuple[dict[str, str], set[str]]:
    """A deployment with four queued commands (q is the one holders lock), a
    sent one, one whose lease ran out and a health one in flight; the ids."""
    setup = db.connect()
    dep = f"dep-nowait-{name}"
    agent = register(setup, dep)
    held = create_many(setup, dep, 2, parameters={"app_code": "web"})  # claimed just below
    delivered = _claim(setup, dep, agent, 2)
    assert set(delivered) == set(held)
    setup.execute(
        "UPDATE stacker.commands SET lease_expires_at = now() - interval '1 minute' "
        "WHERE command_id = %s",
        [delivered[1]],
    )
    queued = create_many(setup, dep, 4)
    ids = {
        "dep": dep,
        "agent": agent,
        "q": queued[0],
        "sent": delivered[0],
        "expired": delivered[1],
    }
    return ids, set(queued) | set(delivered)


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_claims_and_creates_never_wait_whoever_holds_what(db: Database, holder: str) -> None:
    ids, everything = _no_wait_setup(db, holder)
    hold = db.connect(autocommit=False)
    hold.execute(HOLDERS[holder], ids)

    claimer = db.connect()
    claimer.execute("SET lock_timeout = '100ms'")
    t0 = time.perf_counter()
    got = _claim(claimer, ids["dep"], ids["agent"], 10)  # 55P03 if it waited on any lock
    assert time.perf_counter() - t0 < 2.0
    assert set(got) <= everything
    assert ids["sent"] not in got  # leased, never handed out again early
    # Whatever the holder keeps locked is skipped, the rest is delivered.
    if holder.startswith(("select-for", "stacker-", "cancel")):
        assert ids["q"] not in got
        assert len(got) == 4  # the other three queued ones and the expired one

    creator = db.connect()
    creator.execute("SET lock_timeout = '100ms'")
    t0 = time.perf_counter()
    row = creator.execute(
        "SELECT status FROM stacker.create_command(%s, 'health', '{\"app_code\": \"web\"}')",
        [ids["dep"]],
    ).fetchone()
    batch = creator.execute(
        "SELECT count(*) FROM stacker.create_commands(%s)",
        [json.dumps([{"deployment_hash": ids["dep"], "command_type": "logs"}] * 3)],
    ).fetchone()
    assert time.perf_counter() - t0 < 2.0
    assert row == ("queued",) and batch == (3,)
    hold.rollback()


def test_a_claim_does_not_wait_even_for_the_agent_row_held_for_update(db: Database) -> None:
    """Until migration 0005 this was the one lock a claim waited for: the claim's
    audit row referenced the agent through a foreign key (FOR KEY SHARE on the
    agent's row), so a transaction deleting the agent or holding its row FOR
    UPDATE made a claim of that deployment wait. audit_log keeps agent ids
    without a foreign key now, and the heartbeat skips a locked agent row."""
    ids, _ = _no_wait_setup(db, "agent-for-update")
    hold = db.connect(autocommit=False)
    hold.execute("SELECT 1 FROM stacker.agents WHERE deployment_hash = %s FOR UPDATE", [ids["dep"]])
    claimer = db.connect()
    claimer.execute("SET lock_timeout = '100ms'")
    t0 = time.perf_counter()
    assert len(_claim(claimer, ids["dep"], ids["agent"], 10)) == 5
    assert time.perf_counter() - t0 < 2.0
    hold.rollback()
