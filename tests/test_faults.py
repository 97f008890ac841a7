"""Faults with real processes and real backends.

- Agent processes (tests/fault_agent.py: the package's Agent in a process of
  its own) SIGKILLed while they hold commands: every command is redelivered
  after its lease, never before, and completed exactly once; nothing stays
  sent forever, with and without requeue_expired() sweeps; a command killed
  on its last attempt fails with reason lease_expired.
- The listening connection terminated with pg_terminate_backend again and
  again while agents wait: the listener reconnects, and no command waits
  longer than the polling fallback (measured).
- PostgreSQL restarted (pg_ctlcluster ... restart -m fast) in the middle of a
  producer/consumer run, marked ``restart`` (deselect with -m "not restart"):
  clients recover by themselves; every command whose create returned exists,
  none twice, all completed once, the queue invariant holds. The cluster
  restarted is one the test makes for itself (pg_createcluster), so the
  shared server and every other session on it are left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from conftest import Database, admin_conninfo
from psycopg import sql
from reliability_helpers import (
    premature_redeliveries,
    queue_invariant_violations,
    unique,
    write_figures,
)

from stacker_queue import (
    Agent,
    AsyncAgent,
    AsyncClient,
    AsyncListener,
    Client,
    Installer,
    Listener,
    async_connection_pool,
    connection_pool,
)

WORKER = Path(__file__).with_name("fault_agent.py")


# -- agent processes ----------------------------------------------------------------------
@dataclass
class AgentProcess:
    """One fault_agent.py process and the events it printed."""

    deployment: str
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None
    killed_at: float | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def holding(self) -> set[str]:
        """Commands claimed and not yet reported or refused."""
        claimed = {e["id"] for e in list(self.events) if e["event"] == "claimed"}
        done = {e["id"] for e in list(self.events) if e["event"] in ("reported", "refused")}
        return claimed - done

    def reported(self) -> set[str]:
        return {e["id"] for e in list(self.events) if e["event"] == "reported"}

    def kill(self) -> set[str]:
        """SIGKILL; the commands it held at that moment."""
        held = self.holding()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.killed_at = time.time()
        if self.reader is not None:
            self.reader.join(5)
        # A report that reached the database just before the kill counts as done.
        return held - self.reported()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)


class Fleet:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.processes: list[AgentProcess] = []

    def start(self, deployment: str, agent_id: str, **cfg: Any) -> AgentProcess:
        config = {
            "conninfo": self.conninfo,
            "deployment": deployment,
            "agent_id": agent_id,
            "lease": 2,
            "limit": 3,
            "work": 0.3,
            **cfg,
        }
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        agent = AgentProcess(deployment, proc)
        agent.reader = threading.Thread(target=agent._read, daemon=True)
        agent.reader.start()
        self.processes.append(agent)
        return agent

    def wait_ready(self, agent: AgentProcess, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["event"] == "ready" for e in list(agent.events)):
            assert agent.proc.poll() is None, "agent process died"
            assert time.monotonic() < deadline, "agent process not ready"
            time.sleep(0.05)

    def stop_all(self) -> None:
        for agent in self.processes:
            agent.stop()


@pytest.fixture
def fleet(db: Database) -> Iterator[Fleet]:
    f = Fleet(db.conninfo)
    try:
        yield f
    finally:
        f.stop_all()


def register(conn: psycopg.Connection[Any], deployment: str) -> str:
    row = conn.execute("SELECT id FROM stacker.register_agent(%s)", [deployment]).fetchone()
    assert row is not None
    return str(row[0])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def statuses(conn: psycopg.Connection[Any], ids: set[str]) -> Counter[str]:
    rows = conn.execute(
        "SELECT status FROM stacker.commands WHERE command_id = ANY(%s)", [list(ids)]
    ).fetchall()
    return Counter(r[0] for r in rows)


class Sweeper(threading.Thread):
    """requeue_expired() every 0.3 s, as a pg_cron job would (every minute)."""

    def __init__(self, conninfo: str) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.stopped, self.moved = conninfo, threading.Event(), 0

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stopped.is_set():
                row = conn.execute("SELECT stacker.requeue_expired()").fetchone()
                self.moved += row[0] if row else 0
                self.stopped.wait(0.3)


@pytest.mark.parametrize("sweeps", [False, True], ids=["claims-only", "with-sweeps"])
def test_sigkilled_agents_commands_are_redelivered_after_their_lease(
    db: Database, fleet: Fleet, sweeps: bool
) -> None:
    conn = db.connect()
    deployments = [f"dep-kill-{i}" for i in range(3)]
    agent_ids = {d: register(conn, d) for d in deployments}
    lease = 2.0
    agents = [fleet.start(d, agent_ids[d]) for d in deployments for _ in range(2)]
    for agent in agents:
        fleet.wait_ready(agent)
    ids: set[str] = set()
    for d in deployments:
        ids |= {
            r[0]
            for r in conn.execute(
                "SELECT command_id FROM stacker.create_commands(%s)",
                [
                    json.dumps(
                        [{"deployment_hash": d, "command_type": "restart", "max_attempts": 5}] * 15
                    )
                ],
            ).fetchall()
        }
    sweeper = Sweeper(db.conninfo)
    if sweeps:
        sweeper.start()

    killed_holding: dict[str, int] = {}  # command -> pid of the holder killed with it
    kills = 0

    def kill_one_holding(candidates: list[AgentProcess]) -> None:
        nonlocal kills
        wait_until(
            lambda: any(a.holding() for a in candidates if a.proc.poll() is None),
            30,
            "an agent holding commands",
        )
        victim = next(a for a in candidates if a.proc.poll() is None and a.holding())
        for command_id in victim.kill():
            killed_holding[command_id] = victim.proc.pid
        kills += 1

    try:
        # Two agents killed mid-work, replaced at once.
        for d in deployments[1:]:
            kill_one_holding([a for a in agents if a.deployment == d])
            fleet.wait_ready(fleet.start(d, agent_ids[d]))
        # Every agent of the first deployment killed, and none started for a while.
        first = [a for a in agents if a.deployment == deployments[0]]
        for _ in first:
            kill_one_holding(first)
        gone = {c for c in killed_holding if c.startswith("cmd_")} & {
            r[0]
            for r in conn.execute(
                "SELECT command_id FROM stacker.commands WHERE deployment_hash = %s "
                "AND status IN ('sent', 'executing')",
                [deployments[0]],
            ).fetchall()
        }
        assert gone, "the killed agents held none of their deployment's commands"
        time.sleep(lease + 1.0)
        stranded = statuses(conn, gone)
        stats = conn.execute(
            "SELECT in_flight, expired_leases FROM stacker.queue_stats WHERE deployment_hash = %s",
            [deployments[0]],
        ).fetchone()
        assert stats is not None
        if sweeps:
            # Swept back to queued: nothing sits in sent with nobody holding it.
            assert set(stranded) == {"queued"}, stranded
        else:
            # Due for redelivery, visible as expired leases, until an agent claims again.
            assert set(stranded) <= {"sent", "executing"} and stats[1] >= len(gone), (
                stranded,
                stats,
            )
        fleet.wait_ready(fleet.start(deployments[0], agent_ids[deployments[0]]))

        def finished() -> bool:
            return statuses(conn, ids) == Counter({"completed": len(ids)})

        wait_until(finished, 90, "every command completed")
    finally:
        sweeper.stopped.set()
        fleet.stop_all()

    # Completed exactly once each, by a live agent's report.
    completions = Counter(
        r[0]
        for r in conn.execute(
            "SELECT details ->> 'command_id' FROM stacker.audit_log "
            "WHERE action = 'command.completed'"
        ).fetchall()
    )
    assert completions == Counter(dict.fromkeys(ids, 1))
    reporters = defaultdict(set)
    for agent in fleet.processes:
        for command_id in agent.reported():
            reporters[command_id].add(agent.proc.pid)
    results = dict(
        conn.execute(
            "SELECT command_id, (result ->> 'pid')::int FROM stacker.commands "
            "WHERE command_id = ANY(%s)",
            [list(ids)],
        ).fetchall()
    )
    # A report can reach the database in the instant before the SIGKILL, before
    # its process could print it: that command was done, by the killed agent.
    landed = {c for c, pid in killed_holding.items() if results[c] == pid}
    assert all(results[c] in reporters[c] or c in landed for c in ids)
    # What the killed agents held came back, after (never before) the lease ran out.
    attempts = dict(
        conn.execute(
            "SELECT command_id, attempts FROM stacker.commands WHERE command_id = ANY(%s)",
            [list(killed_holding)],
        ).fetchall()
    )
    redelivered = set(killed_holding) - landed
    assert redelivered and all(attempts[c] >= 2 for c in redelivered)
    assert premature_redeliveries(conn, ids) == []
    requeued = conn.execute(
        "SELECT count(*) FROM stacker.audit_log WHERE action = 'command.requeued'"
    ).fetchone()
    assert requeued is not None
    if sweeps:
        assert requeued[0] >= len(gone) and sweeper.moved == requeued[0]
    else:
        assert requeued[0] == 0  # every redelivery was a claim's
    assert queue_invariant_violations(conn) == []
    write_figures(
        f"faults_sigkill_{'sweeps' if sweeps else 'claims_only'}",
        {
            "commands": len(ids),
            "agent_processes": len(fleet.processes),
            "sigkills": kills,
            "commands_held_when_killed": len(killed_holding),
            "reports_landed_just_before_the_kill": len(landed),
            "redeliveries": sum(
                a - 1
                for a in dict(
                    conn.execute("SELECT command_id, attempts FROM stacker.commands").fetchall()
                ).values()
            ),
            "requeued_by_sweeps": requeued[0],
            "completed": len(ids),
            "lost": 0,
            "completed_twice": 0,
        },
    )


@pytest.mark.parametrize("sweeps", [False, True], ids=["claims-only", "with-sweeps"])
def test_a_command_killed_on_its_last_attempt_fails_and_never_stays_sent(
    db: Database, fleet: Fleet, sweeps: bool
) -> None:
    conn = db.connect()
    agent_id = register(conn, "dep-last")
    agent = fleet.start("dep-last", agent_id, lease=1, limit=5, work=60)
    fleet.wait_ready(agent)
    ids = {
        r[0]
        for r in conn.execute(
            "SELECT command_id FROM stacker.create_commands(%s)",
            [
                json.dumps(
                    [{"deployment_hash": "dep-last", "command_type": "deploy", "max_attempts": 1}]
                    * 3
                )
            ],
        ).fetchall()
    }
    wait_until(lambda: agent.holding() >= ids or len(agent.holding()) == 3, 30, "all claimed")
    agent.kill()
    time.sleep(1.2)
    if sweeps:
        assert conn.execute("SELECT stacker.requeue_expired()").fetchone() == (3,)
    else:  # the next claim of the deployment fails them, and hands out nothing
        assert conn.execute(
            "SELECT count(*) FROM stacker.claim_commands('dep-last', %s)", [agent_id]
        ).fetchone() == (0,)
    rows = conn.execute(
        "SELECT status, error, attempts FROM stacker.commands WHERE command_id = ANY(%s)",
        [list(ids)],
    ).fetchall()
    assert rows == [("failed", {"reason": "lease_expired", "attempts": 1}, 1)] * 3
    assert queue_invariant_violations(conn) == []


# -- the listening connection, terminated again and again ----------------------------------
def terminate(conn: psycopg.Connection[Any], pid: int | None) -> bool:
    if pid is None:
        return False
    row = conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
    return bool(row and row[0])


@pytest.fixture
def listen_role(pg_server: Any) -> Iterator[str]:
    """A login role of its own for the listener, so that its reconnects alone
    can be refused for a while (CONNECTION LIMIT 0)."""
    name = unique("sq5_listen")
    with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_waiters_survive_a_listener_terminated_again_and_again(
    db: Database, listen_role: str
) -> None:
    """8 agents of 4 deployments wait on one shared listener, polling every 2 s
    as the fallback. Every 0.2 to 0.6 s the listener's backend is terminated
    and its reconnects refused for 0.1 to 1.2 s (the outage), while 60 commands
    arrive at random moments, many of them during an outage, when no
    notification can reach the listener. Every command must be claimed, none
    later than the polling interval after its create returned."""
    poll = 2.0
    admin = db.connect()
    pool = connection_pool(db.conninfo, max_size=4)
    listen_conninfo = psycopg.conninfo.make_conninfo(db.conninfo, user=listen_role)
    listener = Listener(listen_conninfo, reconnect_max_delay=0.5).start()
    role = sql.Identifier(listen_role)
    outages: list[tuple[float, float]] = []
    deployments = [f"dep-lt-{i}" for i in range(4)]
    agent_ids = {d: str(Agent(pool, d).register().id) for d in deployments}
    client = Client(pool)
    stop = threading.Event()
    created: dict[str, float] = {}
    claimed: dict[str, float] = {}
    errors: list[BaseException] = []
    kills = 0

    def waiter(deployment: str) -> None:
        agent = Agent(
            pool, deployment, agent_ids[deployment], listener=listener, poll_interval=poll
        )
        try:
            while not stop.is_set():
                for cmd in agent.wait_for_commands(timeout=1.0, limit=2):
                    claimed[cmd.command_id] = time.monotonic()
                    agent.report_result(cmd.command_id, "completed")
        except BaseException as exc:
            errors.append(exc)

    def killer() -> None:
        nonlocal kills
        rng = random.Random(5)
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(role))
                began = time.monotonic()
                if terminate(conn, listener.backend_pid):
                    kills += 1
                stop.wait(rng.uniform(0.1, 1.2))
                conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(role))
                outages.append((began, time.monotonic()))
                stop.wait(rng.uniform(0.2, 0.6))

    threads = [threading.Thread(target=waiter, args=(d,)) for d in deployments for _ in range(2)]
    threads.append(threading.Thread(target=killer))
    for t in threads:
        t.start()
    try:
        rng = random.Random(9)
        for i in range(60):
            cmd = client.create_command(rng.choice(deployments), "health", {"n": i})
            created[cmd.command_id] = time.monotonic()
            time.sleep(rng.uniform(0.0, 0.4))
        wait_until(lambda: set(claimed) >= set(created), 30, "every command claimed")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        listener.close()
        pool.close()
    assert errors == []
    latencies = sorted(claimed[c] - created[c] for c in created)
    in_outage = [c for c, at in created.items() if any(a <= at <= b for a, b in outages)]
    assert kills >= 6 and listener.reconnects >= kills - 1
    assert len(in_outage) >= 5, "too few commands arrived while the listener was down"
    assert latencies[-1] <= poll + 0.5, latencies[-5:]
    assert admin.execute(
        "SELECT count(*) FROM stacker.commands WHERE status <> 'completed'"
    ).fetchone() == (0,)
    write_figures(
        "faults_listener_terminated",
        {
            "commands": len(created),
            "created_while_listener_down": len(in_outage),
            "outage_s_total": round(sum(b - a for a, b in outages), 1),
            "terminations": kills,
            "reconnects": listener.reconnects,
            "poll_interval_s": poll,
            "latency_median_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "latency_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1),
            "latency_max_ms": round(latencies[-1] * 1000, 1),
        },
    )


async def test_async_waiters_survive_a_listener_terminated_again_and_again(db: Database) -> None:
    poll = 2.0
    admin = db.connect()
    pool = await async_connection_pool(db.conninfo, max_size=4)
    listener = await AsyncListener(db.conninfo, reconnect_max_delay=0.5).start()
    deployments = [f"dep-alt-{i}" for i in range(3)]
    ids = {d: (await AsyncAgent(pool, d).register()).id for d in deployments}
    service = AsyncClient(pool)
    created: dict[str, float] = {}
    claimed: dict[str, float] = {}
    stop = asyncio.Event()
    kills = 0

    async def waiter(deployment: str) -> None:
        agent = AsyncAgent(pool, deployment, ids[deployment], listener=listener, poll_interval=poll)
        while not stop.is_set():
            for cmd in await agent.wait_for_commands(timeout=1.0):
                claimed[cmd.command_id] = time.monotonic()

    async def killer() -> None:
        nonlocal kills
        while not stop.is_set():
            if terminate(admin, listener.backend_pid):
                kills += 1
            await asyncio.sleep(random.uniform(0.3, 0.8))

    tasks = [asyncio.create_task(waiter(d)) for d in deployments]
    tasks.append(asyncio.create_task(killer()))
    try:
        for i in range(30):
            cmd = await service.create_command(random.choice(deployments), "logs", {"n": i})
            created[cmd.command_id] = time.monotonic()
            await asyncio.sleep(random.uniform(0.0, 0.3))
        deadline = time.monotonic() + 30
        while set(claimed) < set(created) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await listener.close()
        await pool.close()
    latencies = sorted(claimed[c] - created[c] for c in created)
    assert set(claimed) >= set(created)
    assert kills >= 5 and listener.reconnects >= kills - 1
    assert latencies[-1] <= poll + 0.5, latencies[-5:]
    write_figures(
        "faults_async_listener_terminated",
        {
            "commands": len(created),
            "terminations": kills,
            "latency_max_ms": round(latencies[-1] * 1000, 1),
        },
    )


# -- PostgreSQL restarted mid-run ---------------------------------------------------------
PRODUCERS = 3


@dataclass
class RestartTarget:
    database: Database
    cluster: list[str]  # pg_ctlcluster's VERSION NAME
    private: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def restart_target(pg_server: Any, request: pytest.FixtureRequest) -> Iterator[RestartTarget]:
    """The server the restart test restarts: a cluster of its own, made with
    pg_createcluster on a free port (about 3 seconds) and dropped afterwards,
    so that no other session, no other engineer's test run, is cut off. Where
    clusters cannot be made (not root, no postgresql-common) it falls back to
    the shared cluster the suite runs on, STACKER_QUEUE_PG_CLUSTER (default
    "15 main"), which then drops every session on it for a few seconds."""
    if request.config.getoption("--pg-mode") != "noproc" or not shutil.which("pg_ctlcluster"):
        pytest.skip("needs Debian's pg_ctlcluster and the local server (--pg-mode=noproc)")
    with psycopg.connect(admin_conninfo(pg_server)) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row is not None
    version = str(row[0])
    if os.geteuid() != 0 or not shutil.which("pg_createcluster"):
        shared = os.environ.get("STACKER_QUEUE_PG_CLUSTER", f"{version} main").split()
        yield RestartTarget(request.getfixturevalue("db"), shared, private=False)
        return
    name, port = unique("sq5rs").replace("_", ""), free_port()
    subprocess.run(
        [
            "pg_createcluster",
            "--start-conf=manual",
            "-p",
            str(port),
            "-o",
            "shared_buffers=16MB",
            "-o",
            "max_connections=40",
            version,
            name,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        Path(f"/etc/postgresql/{version}/{name}/pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        target = Database("127.0.0.1", port, "postgres", "postgres")
        Installer(target.conninfo).migrate()
        try:
            yield RestartTarget(target, [version, name], private=True)
        finally:
            target.close_all()
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120
        )


def server_start_time(conninfo: str) -> Any:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        return row[0] if row else None


def wait_for_server(conninfo: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.restart
@pytest.mark.timeout(600)
def test_clients_recover_from_a_postgresql_restart(restart_target: RestartTarget) -> None:
    """Marked ``restart``: a real pg_ctlcluster restart (fast mode) of a
    cluster of the test's own (see restart_target) in the middle of the run."""
    db = restart_target.database
    fleet = Fleet(db.conninfo)
    try:
        restart_run(db, fleet, restart_target)
    finally:
        fleet.stop_all()


def restart_run(db: Database, fleet: Fleet, target: RestartTarget) -> None:
    conn = db.connect()
    deployments = ["dep-restart-a", "dep-restart-b"]
    agent_ids = {d: register(conn, d) for d in deployments}
    for d in deployments:
        for _ in range(2):
            fleet.wait_ready(fleet.start(d, agent_ids[d], lease=3, limit=10, work=0, poll=0.5))
    before = server_start_time(db.conninfo)

    returned: dict[str, str] = {}  # idempotency key -> command_id the create returned
    attempts: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def producer(n: int) -> None:
        # One pool for the whole run: it must find its feet again by itself.
        with Client.connect(db.conninfo, max_size=1) as client:
            i = 0
            while not stop.is_set():
                key = f"p{n}-{i}"
                while not stop.is_set():
                    attempts[key] += 1
                    try:
                        cmd = client.create_command(
                            deployments[i % 2], "health", {"i": i}, idempotency_key=key
                        )
                    except psycopg.OperationalError as exc:  # PoolTimeout is one too
                        failures.append(type(exc).__name__)
                        time.sleep(0.1)
                        continue
                    returned[key] = cmd.command_id
                    break
                i += 1
                time.sleep(0.005)

    def batch_producer() -> None:
        # Batches of 200 take long enough to be in flight when the server goes
        # down: retried whole, with the same keys, they create nothing twice.
        with Client.connect(db.conninfo, max_size=1) as client:
            j = 0
            while not stop.is_set():
                keys = [f"b-{j}-{k}" for k in range(200)]
                batch = [
                    {
                        "deployment_hash": deployments[k % 2],
                        "command_type": "logs",
                        "idempotency_key": key,
                    }
                    for k, key in enumerate(keys)
                ]
                while not stop.is_set():
                    attempts[keys[0]] += 1
                    try:
                        made = client.create_commands(batch)
                    except psycopg.OperationalError as exc:
                        failures.append(type(exc).__name__)
                        time.sleep(0.1)
                        continue
                    returned.update(zip(keys, (c.command_id for c in made), strict=True))
                    break
                j += 1
                time.sleep(0.2)

    producers = [threading.Thread(target=producer, args=(n,)) for n in range(PRODUCERS)]
    producers.append(threading.Thread(target=batch_producer))
    for thread in producers:
        thread.start()
    restarted_at = time.monotonic()
    try:
        wait_until(lambda: len(returned) >= 40, 60, "commands before the restart")
        restarted_at = time.monotonic()
        subprocess.run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                *target.cluster,
                "restart",
                "-m",
                "fast",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_for_server(db.conninfo)
        back_at = time.monotonic()
        count_at_restart = len(returned)
        wait_until(
            lambda: len(returned) >= count_at_restart + 40, 90, "the producer creating again"
        )
        recovered_in = time.monotonic() - back_at
    finally:
        stop.set()
        for thread in producers:
            thread.join(120)
        wait_for_server(db.conninfo)
    after = server_start_time(db.conninfo)
    assert after > before, "the server did not restart"

    check = db.connect()
    ids = set(returned.values())
    wait_until(
        lambda: statuses(check, ids) == Counter({"completed": len(ids)}),
        90,
        "every created command completed",
    )
    fleet.stop_all()

    # Every create that returned exists; one command per key, whatever the retries.
    rows = check.execute(
        "SELECT idempotency_key, count(*), min(command_id) FROM stacker.commands "
        "WHERE deployment_hash = ANY(%s) GROUP BY 1",
        [deployments],
    ).fetchall()
    per_key = {key: (n, command_id) for key, n, command_id in rows}
    assert all(per_key[k] == (1, c) for k, c in returned.items())
    assert [k for k, (n, _) in per_key.items() if n != 1] == []
    # A create in flight when the server went down may have committed without
    # returning; it was retried with its key and returned then, or is the one
    # a producer was retrying when it stopped: at most one key (batch) each.
    assert len(set(per_key) - set(returned)) <= PRODUCERS + 200
    completions = Counter(
        r[0]
        for r in check.execute(
            "SELECT details ->> 'command_id' FROM stacker.audit_log "
            "WHERE action = 'command.completed'"
        ).fetchall()
    )
    assert all(completions[c] == 1 for c in ids)
    assert [c for c, n in completions.items() if n > 1] == []
    assert queue_invariant_violations(check) == []
    agent_errors = sum(1 for a in fleet.processes for e in a.events if e["event"] == "error")
    assert all(
        a.proc.poll() is None or a.proc.returncode == -signal.SIGTERM for a in fleet.processes
    )
    write_figures(
        "faults_restart",
        {
            "commands_created": len(ids),
            "create_retries": sum(attempts.values()) - len(attempts),
            "producer_errors": dict(Counter(failures)),
            "agent_processes": len(fleet.processes),
            "agent_errors_seen": agent_errors,
            "producer_recovered_s": round(recovered_in, 1),
            "restart_to_back_s": round(back_at - restarted_at, 1),
            "private_cluster": target.private,
            "lost": 0,
            "duplicated": 0,
        },
    )
