"""Stacker's old binary keeps running during and after adoption.

Its statements (stacker_fixtures.StackerBinary: src/db/command.rs and
src/db/agent.rs verbatim, as its own login role, with server-side prepared
statements like sqlx) are replayed before and after adoption; the contract's
behaviour is then checked on the adopted schema (the pgTAP suites on an
adopted ``stacker`` schema, the Python Agent and Client on an adopted broken
one); and old-binary polls run concurrently with claim_commands from real
concurrent connections, which must never hand one command to two claims."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
import stacker_fixtures as sf
from adopt_helpers import app_role, queue_rows
from conftest import PGTAP_TOTALS, Database, run_pgtap_file
from psycopg import sql

from stacker_queue.adopt import Adopter, AdoptError
from stacker_queue.agent import Agent
from stacker_queue.client import Client

PGTAP_DIR = Path(__file__).resolve().parent / "pgtap"


@pytest.fixture(scope="module")
def role(pg_server: Any) -> Iterator[str]:
    yield from app_role(pg_server)


def _adopted(
    empty_db: Database, role: str, state: str, schema: str = "public"
) -> sf.StackerDatabase:
    stacker = sf.build(empty_db, role, state, schema)
    sf.fill(stacker)
    Adopter(empty_db.conninfo, schema).adopt()
    return stacker


def _queue_count(stacker: sf.StackerDatabase, command_id: str) -> int:
    with stacker.admin() as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.command_queue WHERE command_id = %s").format(
                sql.Identifier(stacker.schema)
            ),
            [command_id],
        ).fetchone()
    return int(row[0]) if row else 0


# -- before adoption: the defects adoption fixes ------------------------------------------
def test_before_adoption_the_broken_queue_loses_commands(empty_db: Database, role: str) -> None:
    stacker = sf.build(empty_db, role, "broken")
    with stacker.binary() as app:
        row = app.insert_command("dep-a")
        # The seed's incident: the second step fails, the command stays queued forever.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            app.add_to_queue(row["command_id"], "dep-a", "normal")
        # ... and the agents' fetch-next cannot even compare the two ids.
        with pytest.raises(psycopg.errors.UndefinedFunction):
            app.fetch_next("dep-a")
        assert app.fetch(row["command_id"])["status"] == "queued"  # type: ignore[index]


@pytest.mark.parametrize("state", ["fixed", "latest"])
def test_before_adoption_fetch_and_sent_lose_in_flight_commands(
    empty_db: Database, role: str, state: str
) -> None:
    stacker = sf.build(empty_db, role, state)
    with stacker.binary() as app:
        first = app.create("dep-a")
        app.add_to_queue(first, "dep-a", "normal")  # a retried second step: a duplicate row
        assert _queue_count(stacker, first) == 2
        sent = app.poll("dep-a")
        assert sent is not None and sent["command_id"] == first
        # The wait route removed the row: if the agent never got the response,
        # nothing will ever deliver it again.
        assert _queue_count(stacker, first) == 0
        assert app.fetch_next("dep-a") is None
        lost = app.insert_command("dep-a")["command_id"]  # the second step never ran
        assert app.fetch_next("dep-a") is None
        assert app.fetch(lost)["status"] == "queued"  # type: ignore[index]


# -- after adoption ----------------------------------------------------------------------------
@pytest.mark.parametrize("state", ["broken", "latest"])
def test_after_adoption_stackers_statements_keep_their_meaning(
    empty_db: Database, role: str, state: str
) -> None:
    stacker = _adopted(empty_db, role, state)
    with stacker.admin() as admin:
        # Start from an empty queue for this deployment (what adoption left is
        # checked elsewhere): finish the fixture's pending commands of dep-a.
        admin.execute(
            "UPDATE public.commands SET status = 'cancelled' "
            "WHERE deployment_hash = 'dep-a' AND status IN ('queued', 'sent', 'executing')"
        )
    with stacker.binary() as app:
        # Two-step create: exactly one queue row; the second INSERT changes nothing.
        low = app.insert_command("dep-a", priority="low")["command_id"]
        assert app.add_to_queue(low, "dep-a", "low") == 0
        assert _queue_count(stacker, low) == 1
        # A command inserted without the second step is delivered all the same.
        high = app.insert_command("dep-a", priority="high")["command_id"]
        assert _queue_count(stacker, high) == 1

        # The wait route: highest priority first; sent; its DELETE keeps the row.
        got = app.poll("dep-a")
        assert got is not None and got["command_id"] == high and got["status"] == "sent"
        assert _queue_count(stacker, high) == 1
        # The trap: the next poll must not hand out the in-flight command again.
        nxt = app.poll("dep-a")
        assert nxt is not None and nxt["command_id"] == low
        assert app.fetch_next("dep-a") is None
        with stacker.admin() as admin:
            row = admin.execute(
                "SELECT attempts, lease_expires_at > now() + interval '290 seconds', sent_at "
                "FROM public.commands WHERE command_id = %s",
                [high],
            ).fetchone()
        assert row is not None and row[0] == 1 and row[1] is True and row[2] is not None

        # The report UPDATE: completed with its result; the queue row goes.
        done = app.report(high, "completed", {"status": "ok", "container_state": "running"})
        assert done is not None and done["status"] == "completed"
        assert _queue_count(stacker, high) == 0

        # Cancel (its DELETE then UPDATE in one transaction): queued or sent.
        queued = app.create("dep-a")
        assert app.cancel(queued)["status"] == "cancelled"  # type: ignore[index]
        assert app.cancel(low)["status"] == "cancelled"  # type: ignore[index]
        assert _queue_count(stacker, queued) == 0 and _queue_count(stacker, low) == 0
        # ... and a late report cannot overwrite a cancel any more (the one error
        # Stacker's statements can now get, the contract's fix of its defect).
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            app.report(low, "completed", {"status": "ok"})
        assert app.fetch(low)["status"] == "cancelled"  # type: ignore[index]

        # Agents and audit: Stacker's inserts, heartbeats and audit rows still work.
        if state != "latest":
            app.conn.execute("INSERT INTO deployment (deployment_hash) VALUES ('dep-c')")
        agent = app.insert_agent("dep-c")
        app.heartbeat(agent)
        app.log_audit(agent, "dep-c", "agent.command_polled", sf.datetime.now(sf.UTC))

        # Stacker's cleanup under its own name, as its pg_cron job calls it.
        counts = app.conn.execute("SELECT stacker_command_queue_cleanup()").fetchone()
        assert counts is not None and set(counts[0]) >= {"expired", "leases_swept"}
        named = app.conn.execute(
            "SELECT stacker_command_queue_cleanup(queue_ttl => interval '1 hour')"
        ).fetchone()
        assert named is not None


def test_redelivery_by_the_old_binary_counts_and_exhaustion_fails(
    empty_db: Database, role: str
) -> None:
    stacker = _adopted(empty_db, role, "latest")
    with stacker.binary() as app, stacker.admin() as admin:
        # Adoption left Stacker's sent and executing commands due: the old
        # binary hands them out again, as second deliveries.
        redelivered = set()
        while (got := app.poll("dep-a")) is not None:
            redelivered.add(got["command_id"])
        assert {"cmd_sent", "cmd_executing"} <= redelivered
        attempts = admin.execute(
            "SELECT command_id, attempts, status FROM public.commands "
            "WHERE command_id IN ('cmd_sent', 'cmd_executing') ORDER BY 1"
        ).fetchall()
        assert attempts == [("cmd_executing", 2, "sent"), ("cmd_sent", 2, "sent")]

        # A lease that runs out: the next poll sends it again (attempts 3, a new lease).
        admin.execute(
            "UPDATE public.commands SET lease_expires_at = now() - interval '1 second' "
            "WHERE command_id = 'cmd_sent'"
        )
        got = app.poll("dep-a")
        assert got is not None and got["command_id"] == "cmd_sent"
        row = admin.execute(
            "SELECT attempts, lease_expires_at > now() FROM public.commands "
            "WHERE command_id = 'cmd_sent'"
        ).fetchone()
        assert row == (3, True)
        sent_audit = admin.execute(
            "SELECT count(*) FROM public.audit_log WHERE action = 'command.sent' "
            "AND details ->> 'command_id' = 'cmd_sent'"
        ).fetchone()
        assert sent_audit == (2,)  # both redeliveries after adoption are audited

        # On its last attempt, a lease that runs out is not handed out again:
        # Stacker's cleanup job (pg_cron) fails it.
        admin.execute(
            "UPDATE public.commands SET lease_expires_at = now() - interval '1 second' "
            "WHERE command_id = 'cmd_sent'"
        )
        assert app.fetch_next("dep-a") is None
        counts = app.conn.execute("SELECT stacker_command_queue_cleanup()").fetchone()
        assert counts is not None and counts[0]["leases_swept"] == 1
        failed = app.fetch("cmd_sent")
        assert failed is not None and failed["status"] == "failed"
        assert failed["error"] == {"reason": "lease_expired", "attempts": 3}


def test_prepared_statements_survive_adoption_without_type_changes(
    empty_db: Database, role: str
) -> None:
    """On the latest state adoption changes no column Stacker's statements
    return: a connection that prepared them before keeps working."""
    stacker = sf.build(empty_db, role, "latest")
    sf.fill(stacker)
    with stacker.binary() as app:
        app.fetch_next("dep-b")
        app.fetch("cmd_lost")
        Adopter(empty_db.conninfo, "public").adopt()
        got = app.poll("dep-b")
        assert got is not None and got["command_id"] == "cmd_other_deployment"
        assert app.fetch("cmd_lost") is not None


def test_prepared_statements_after_type_changes_need_new_sessions(
    empty_db: Database, role: str
) -> None:
    """Where adoption changes a column type Stacker's statements return
    (deployment_hash varchar(64) -> varchar(128) here), PostgreSQL refuses the
    statements a session prepared before ("cached plan must not change result
    type"); --terminate-legacy-sessions ends those sessions, so that the
    binary's pool opens new ones."""
    stacker = sf.build(empty_db, role, "fixed")
    sf.fill(stacker)
    with stacker.binary() as stale, stacker.binary() as ended:
        stale.fetch("cmd_lost")
        ended.fetch("cmd_lost")
        Adopter(empty_db.conninfo, "public", legacy_guard=True).adopt()
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="cached plan"):
            stale.fetch("cmd_lost")
        report = Adopter(empty_db.conninfo, "public", terminate_legacy_sessions=True)
        # Adopting again is a no-op, but still ends the sessions from before.
        assert report.adopt().terminated_sessions >= 1
        with pytest.raises(psycopg.OperationalError):
            ended.fetch("cmd_lost")
    with stacker.binary() as fresh:
        assert fresh.fetch("cmd_lost") is not None


# -- the contract on an adopted schema ------------------------------------------------------
def test_pgtap_suites_pass_on_an_adopted_schema(empty_db: Database, role: str) -> None:
    """Every pgTAP file against Stacker's latest tables adopted as schema
    stacker, with the old binary's guard on. The suites expect an empty schema
    of the package's own, so Stacker's tables are adopted without rows and its
    deployment table lives in public (data is the other tests' business). Three
    assertions meet documented differences: Stacker appended commands.updated_at
    (ALTER TABLE ADD COLUMN), so the column order differs, Stacker's own later
    column agents.token_hash_updated_at carries no comment, and row-level
    security is on (the guard)."""
    sf.build(empty_db, role, "latest", schema="stacker")
    with empty_db.connect() as conn:
        conn.execute("ALTER TABLE stacker.deployment SET SCHEMA public")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
    Adopter(empty_db.conninfo, "stacker").adopt()
    failures: list[str] = []
    for path in sorted(PGTAP_DIR.glob("*.sql")):
        result = run_pgtap_file(empty_db, path)
        PGTAP_TOTALS["files"] += 1
        PGTAP_TOTALS["assertions"] += result.ran
        failures += [
            f"{path.name}: {re.sub(r'^not ok [0-9]+ - ', '', line)}" for line in result.failed
        ]
        assert result.ran == result.planned, (path.name, result.failed)
    assert sorted(failures) == [
        "010_schema_tables.sql: commands starts with Stacker's 18 columns in Stacker's order",
        "020_schema_functions.sql: every column of every table and view has a comment",
        "220_legacy_guard.sql: row-level security is off on a fresh install (adopt turns it on)",
    ], failures


def test_python_agent_and_client_on_an_adopted_broken_database(
    empty_db: Database, role: str
) -> None:
    stacker = _adopted(empty_db, role, "broken")
    agent = Agent.connect(empty_db.conninfo, deployment_hash="dep-a", schema="public")
    client = Client.connect(empty_db.conninfo, schema="public")
    try:
        agent.register()
        assert agent.agent_id == stacker.expected["agent_a"]  # Stacker's agent, kept
        claimed = agent.wait_for_commands(timeout=1, limit=10)
        got = {c.command_id: c for c in claimed}
        # The queued ones (remapped, deduplicated), the lost one, and the
        # in-flight ones adoption made due again; nothing else.
        assert set(got) == {
            "cmd_queued_high",
            "cmd_queued_normal",
            "cmd_queued_dup",
            "cmd_lost",
            "cmd_sent",
            "cmd_executing",
        }
        assert claimed[0].command_id == "cmd_queued_high"
        assert got["cmd_sent"].attempts == 2 and got["cmd_lost"].attempts == 1
        agent.start("cmd_lost")
        agent.report_result(
            "cmd_lost",
            "completed",
            {"app_code": "nginx", "container_state": "running", "logs": ["up"]},
        )
        apps = {a.app_code: a for a in client.app_status("dep-a")}
        assert apps["nginx"].status == "running" and apps["nginx"].logs == ["up"]
        created = client.create_command("dep-a", "health", {"app_code": "nginx"})
        assert agent.wait_for_commands(timeout=2)[0].command_id == created.command_id
    finally:
        agent.close()
        client.close()
    with stacker.admin() as conn:
        queue = queue_rows(conn)
    assert "cmd_lost" not in queue


# -- mixed use from concurrent connections ----------------------------------------------------
def test_mixed_use_never_hands_a_command_to_two_claims(empty_db: Database, role: str) -> None:
    stacker = _adopted(empty_db, role, "latest")
    deployments = ["dep-a", "dep-b"]
    with stacker.admin() as admin:
        agents = {
            d: admin.execute("SELECT id FROM public.register_agent(%s)", [d]).fetchone()[0]  # type: ignore[index]
            for d in deployments
        }
    stop = threading.Event()
    lock = threading.Lock()
    claims: list[tuple[str, int]] = []  # (command_id, attempts) from claim_commands
    handed: list[str] = []  # command_ids the old binary handed out
    created: list[str] = []
    errors: list[BaseException] = []

    def guarded(fn: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        return run

    @guarded
    def claimer(i: int) -> None:
        with psycopg.connect(empty_db.conninfo, autocommit=True) as conn:
            while not stop.is_set():
                dep = deployments[i % 2]
                rows = conn.execute(
                    "SELECT command_id, attempts FROM public.claim_commands(%s, %s, 3, 600)",
                    [dep, agents[dep]],
                ).fetchall()
                with lock:
                    claims.extend((r[0], r[1]) for r in rows)
                i += 1

    @guarded
    def old_binary(i: int) -> None:
        with stacker.binary() as app:
            while not stop.is_set():
                got = app.poll(deployments[i % 2])
                if got is not None:
                    with lock:
                        handed.append(got["command_id"])
                i += 1

    @guarded
    def creator() -> None:
        with stacker.binary() as app, psycopg.connect(empty_db.conninfo, autocommit=True) as conn:
            for n in range(150):
                dep = deployments[n % 2]
                if n % 3:
                    cid = app.create(dep, priority=["low", "normal", "high"][n % 3])
                else:
                    row = conn.execute(
                        "SELECT command_id FROM public.create_command(%s, 'health')", [dep]
                    ).fetchone()
                    assert row is not None
                    cid = row[0]
                with lock:
                    created.append(cid)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=old_binary, args=(i,)) for i in range(2)]
    maker = threading.Thread(target=creator)
    for t in [*threads, maker]:
        t.start()
    maker.join(timeout=60)
    deadline = time.monotonic() + 30
    with stacker.admin() as admin:
        while time.monotonic() < deadline and not stop.is_set():
            row = admin.execute(
                "SELECT count(*) FROM public.command_queue WHERE visible_at <= now()"
            ).fetchone()
            if row == (0,):
                break
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == []

    claimed_ids = [c for c, _ in claims]
    assert len(claimed_ids) == len(set(claimed_ids)), "a command went to two claims"
    assert all(attempts >= 1 for _, attempts in claims)
    with stacker.admin() as admin:
        statuses = dict(
            admin.execute(
                "SELECT command_id, status FROM public.commands WHERE command_id = ANY(%s)",
                [created],
            ).fetchall()
        )
    # Nothing lost: every command created during the run was delivered.
    assert len(created) == 150
    assert {statuses[c] for c in created} == {"sent"}
    assert set(created) <= set(claimed_ids) | set(handed)
    assert claimed_ids and handed  # both paths delivered


# -- the documented verification and detach ----------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "adopting-stacker.md"


def _doc_sql(marker: str) -> str:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return "\n".join(line.removeprefix("  ") for line in block.splitlines())


def test_documented_verification_and_detach(empty_db: Database, role: str) -> None:
    stacker = _adopted(empty_db, role, "fixed")
    with stacker.admin() as admin:
        verify = _doc_sql("One queue row exactly").split("-- What the old binary")[0]
        assert admin.execute(verify).fetchall() == []  # type: ignore[arg-type]
        admin.execute(_doc_sql("DO $detach$"))  # type: ignore[arg-type]
    with stacker.binary() as app:
        # Detached: Stacker's flow as before adoption (the wait route's DELETE
        # removes the row of the command it sent), and nothing fails.
        cid = app.create("dep-b", priority="critical")
        handed = [app.poll("dep-b"), app.poll("dep-b")]
        assert {h["command_id"] for h in handed if h} == {"cmd_other_deployment", cid}
        assert _queue_count(stacker, cid) == 0
        assert _queue_count(stacker, "cmd_other_deployment") == 0
    # Re-attach: migrate re-creates the triggers, adopt the guard.
    from stacker_queue.migrate import Installer

    report = Installer(empty_db.conninfo, "public").migrate()
    assert "sql:100_triggers" in report.applied_repeatables
    assert Adopter(empty_db.conninfo, "public").adopt().statements[:2] == [
        'ALTER TABLE "public"."command_queue" ENABLE ROW LEVEL SECURITY',
        'ALTER TABLE "public"."command_queue" FORCE ROW LEVEL SECURITY',
    ]


def test_functions_owned_by_the_fenced_role_are_refused(empty_db: Database, role: str) -> None:
    """A later migrate run as the old binary's role would leave functions the
    guard fences: adopt says so instead of guarding a broken install."""
    _adopted(empty_db, role, "latest")
    with empty_db.connect() as conn:
        claim = "public.claim_commands(text, uuid, integer, integer)"
        conn.execute(
            sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(claim), sql.Identifier(role))
        )
    with pytest.raises(AdoptError, match=r"functions .*claim_commands.* belong to"):
        Adopter(empty_db.conninfo, "public").adopt()


def test_a_legacy_role_that_does_not_own_the_tables(empty_db: Database, role: str) -> None:
    """Stacker's tables owned by the DBA, its binary logging in as another
    role with privileges on them: --legacy-role names that role."""
    with empty_db.connect() as conn:
        for step in sf.state_ddl("latest"):
            conn.execute(step)  # type: ignore[arg-type]
        conn.execute("INSERT INTO deployment (deployment_hash) VALUES ('dep-a'), ('dep-b')")
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON public.commands, public.command_queue, "
                "public.agents, public.audit_log TO {}"
            ).format(sql.Identifier(role))
        )
    stacker = sf.StackerDatabase(empty_db, "public", role, "latest")
    report = Adopter(empty_db.conninfo, "public", legacy_role=role).adopt()
    assert report.legacy_role == role
    with stacker.binary() as app:
        first = app.create("dep-a", priority="high")
        second = app.create("dep-a")
        assert [app.poll("dep-a")["command_id"], app.poll("dep-a")["command_id"]] == [  # type: ignore[index]
            first,
            second,
        ]
        assert app.poll("dep-a") is None  # both in flight: hidden from the old binary
        assert app.conn.execute("SELECT stacker_command_queue_cleanup()").fetchone() is not None
