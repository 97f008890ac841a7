"""Through a transaction-pooling PgBouncer (one server connection shared by
every client): the actor never leaks from one transaction to another, nothing
needs a prepared statement (prepare_threshold=None), and agents claim through
PgBouncer while their listener LISTENs on a direct connection."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers_queue import new_hash

from stacker_queue import (
    Agent,
    AsyncAgent,
    AsyncClient,
    AsyncListener,
    Client,
    Listener,
    async_connection_pool,
    connection_pool,
)

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bouncer(db: Any) -> Iterator[str]:
    """A PgBouncer in transaction mode with ONE server connection; its conninfo."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (scripts/setup installs it)")
    port = free_port()
    # Not under pytest's tmp_path: its parents are private to root, and a root
    # PgBouncer switches to the postgres user (-u), who must reach these files.
    folder = Path(tempfile.mkdtemp(prefix="sq-pgbouncer-"))
    users = {db.user, "postgres"}
    (folder / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
{db.dbname} = host={db.host} port={db.port} dbname={db.dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = 1
max_client_conn = 100
server_reset_query =
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
"""
    )
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:  # PgBouncer refuses to run as root; -u switches user
        folder.chmod(0o777)
        for f in folder.iterdir():
            f.chmod(0o666)
    args = [PGBOUNCER, *(["-u", "postgres"] if as_root else []), str(folder / "pgbouncer.ini")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=str(port), user=db.user, dbname=db.dbname
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(conninfo, prepare_threshold=None, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    log = folder / "pgbouncer.log"
                    pytest.fail(
                        f"pgbouncer did not start: {out} {log.read_text() if log.exists() else ''}"
                    )
                time.sleep(0.1)
        yield conninfo
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def server_pids(pool: Any) -> set[int]:
    with pool.connection() as conn:
        return {r[0] for r in conn.execute("SELECT pg_backend_pid()").fetchall()}


def test_actor_never_leaks_across_pooled_transactions(bouncer: str, db: Any) -> None:
    """Three clients with different actors share PgBouncer's one server
    connection; each command names its own client's actor, or the role."""
    pools = [connection_pool(bouncer, max_size=2, prepare_threshold=None) for _ in range(3)]
    try:
        clients = [
            Client(pools[0], actor="alice"),
            Client(pools[1], actor="bob"),
            Client(pools[2]),  # no actor: the session user
        ]
        expected = ["alice", "bob", db.user]
        errors: list[BaseException] = []
        made: list[tuple[str, str]] = []

        def work(i: int) -> None:
            try:
                for _ in range(15):  # past psycopg's default prepare threshold
                    cmd = clients[i].create_command(new_hash(), "health")
                    made.append((expected[i], cmd.created_by))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(made) == 45 and all(want == got for want, got in made)
        # One server session behind the three pools: the actors really shared it.
        assert len(set().union(*(server_pids(p) for p in pools))) == 1
    finally:
        for pool in pools:
            pool.close()


def test_agent_claims_through_pgbouncer_and_listens_directly(bouncer: str, db: Any) -> None:
    with (
        Client.connect(bouncer, actor="ops", prepare_threshold=None) as client,
        Agent.connect(
            bouncer,
            new_hash(),
            listen_conninfo=db.conninfo,
            poll_interval=60,
            prepare_threshold=None,
        ) as agent,
    ):
        agent.register()
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.update(got=agent.wait_for_commands(30)))
        thread.start()
        deadline = time.monotonic() + 10
        while agent.listener is None or agent.listener.waiting == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        cmd = client.create_command(agent.deployment_hash, "health", {"app_code": "web"})
        started = time.monotonic()
        thread.join(30)
        assert [c.command_id for c in box["got"]] == [cmd.command_id]
        assert time.monotonic() - started < 5  # woken, not polled (60 s)
        agent.start(cmd.command_id)
        agent.extend_lease(cmd.command_id, 60)
        done = agent.report_result(cmd.command_id, "completed", {"app_code": "web"})
        assert done.status == "completed"


async def test_async_service_through_pgbouncer(bouncer: str, db: Any) -> None:
    pool = await async_connection_pool(bouncer, max_size=5, prepare_threshold=None)
    listener = await AsyncListener(db.conninfo).start()
    try:
        service = AsyncClient(pool, actor="svc")
        deployments = [new_hash() for _ in range(20)]
        ids = [(await AsyncAgent(pool, d).register()).id for d in deployments]
        agents = [
            AsyncAgent(pool, d, i, listener=listener, poll_interval=60)
            for d, i in zip(deployments, ids, strict=True)
        ]
        tasks = [asyncio.create_task(a.wait_for_commands(timeout=30)) for a in agents]
        while listener.waiting < len(agents):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        created = await service.create_commands(
            [{"deployment_hash": d, "command_type": "health"} for d in deployments]
        )
        results = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert sorted(r[0].command_id for r in results) == sorted(c.command_id for c in created)
        assert all(c.created_by == "svc" for c in created)
    finally:
        await listener.close()
        await pool.close()


def test_listener_is_direct_even_with_pgbouncer(bouncer: str, db: Any) -> None:
    """The listener's own connection is to PostgreSQL, not to PgBouncer."""
    with Listener(db.conninfo) as listener:
        with psycopg.connect(db.conninfo) as conn:
            row = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                [listener.backend_pid],
            ).fetchone()
        assert row == ("stacker-queue listener",)


# -- the wrapper suites again, through PgBouncer (issue 5) -------------------------------------
# Every test of test_client, test_agent and test_listener that builds its
# service and agents from the ``client``/``aclient``/``make_agent``/
# ``make_async_agent`` fixtures runs here a second time, with those fixtures
# overridden: services and agents go through the PgBouncer above (transaction
# pooling, one server connection, prepare_threshold=None), and every agent's
# listener LISTENs on a direct connection to PostgreSQL.
import inspect  # noqa: E402

import pytest_asyncio  # noqa: E402
import test_agent  # noqa: E402
import test_client  # noqa: E402
import test_listener  # noqa: E402
from helpers_queue import agent_factory, async_agent_factory  # noqa: E402

_PATHS = {"client", "aclient", "make_agent", "make_async_agent"}


@pytest.fixture
def client(bouncer: str) -> Iterator[Client]:
    with Client.connect(bouncer, prepare_threshold=None) as c:
        yield c


@pytest_asyncio.fixture
async def aclient(bouncer: str) -> Any:
    c = await AsyncClient.connect(bouncer, prepare_threshold=None)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def make_agent(bouncer: str, db: Any) -> Iterator[Any]:
    # LISTEN goes direct
    with agent_factory(bouncer, prepare_threshold=None, listen_conninfo=db.conninfo) as make:
        yield make


@pytest_asyncio.fixture
async def make_async_agent(bouncer: str, db: Any) -> Any:
    async with async_agent_factory(
        bouncer, prepare_threshold=None, listen_conninfo=db.conninfo
    ) as make:
        yield make


def _through_pgbouncer(*modules: Any) -> list[str]:
    names = []
    for module in modules:
        for name, test in vars(module).items():
            if not (name.startswith("test_") and inspect.isfunction(test)):
                continue
            if _PATHS & set(inspect.signature(test).parameters):
                globals()[name] = test
                names.append(name)
    return names


VIA_PGBOUNCER = _through_pgbouncer(test_client, test_agent, test_listener)


def test_the_wrapper_suites_run_through_pgbouncer_too(
    client: Client, make_agent: Any, bouncer: str, db: Any
) -> None:
    """The overridden fixtures really go through PgBouncer; LISTEN does not."""
    assert len(VIA_PGBOUNCER) >= 30, VIA_PGBOUNCER
    agent = make_agent()
    assert client.source.conninfo == bouncer  # type: ignore[union-attr]
    assert agent._runner.source.conninfo == bouncer
    assert agent.wait_for_commands(timeout=0) == []
    assert agent.listener is not None and agent.listener.conninfo == db.conninfo
