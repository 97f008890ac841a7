"""Fixtures and helpers shared by the Python wrapper's suites (test_client,
test_agent, test_listener, test_cli). Import the fixtures you use by name."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from psycopg.rows import dict_row

from stacker_queue import Agent, AsyncAgent, AsyncClient, Client


def new_hash(prefix: str = "dep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def audit_rows(conn: psycopg.Connection[Any], deployment_hash: str, schema: str = "stacker"):
    return conn.execute(
        sql.SQL(
            "SELECT action, actor, status, details FROM {}.audit_log "
            "WHERE deployment_hash = %s ORDER BY created_at, action"
        ).format(sql.Identifier(schema)),
        [deployment_hash],
    ).fetchall()


def backends(conn: psycopg.Connection[Any], exclude: set[int]) -> list[dict[str, Any]]:
    """Other sessions on conn's database (pg_stat_activity), minus ``exclude``."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT pid, application_name, state, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return [r for r in cur.fetchall() if r["pid"] not in exclude]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


@pytest.fixture
def client(db: Any) -> Iterator[Client]:
    with Client.connect(db.conninfo) as c:
        yield c


@pytest_asyncio.fixture
async def aclient(db: Any) -> AsyncIterator[AsyncClient]:
    c = await AsyncClient.connect(db.conninfo)
    try:
        yield c
    finally:
        await c.close()


@contextmanager
def agent_factory(conninfo: str, **defaults: Any) -> Iterator[Any]:
    """make(deployment_hash=None, register=True, **kwargs) -> Agent on ``conninfo``
    (``defaults`` under the caller's kwargs); every agent made is closed at the end."""
    agents: list[Agent] = []

    def make(deployment_hash: str | None = None, register: bool = True, **kwargs: Any) -> Agent:
        agent = Agent.connect(
            conninfo,
            deployment_hash if deployment_hash is not None else new_hash(),
            **{**defaults, **kwargs},
        )
        agents.append(agent)
        if register:
            agent.register()
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            agent.close()


@asynccontextmanager
async def async_agent_factory(conninfo: str, **defaults: Any) -> AsyncIterator[Any]:
    """The asyncio twin of :func:`agent_factory`."""
    agents: list[AsyncAgent] = []

    async def make(
        deployment_hash: str | None = None, register: bool = True, **kwargs: Any
    ) -> AsyncAgent:
        agent = await AsyncAgent.connect(
            conninfo,
            deployment_hash if deployment_hash is not None else new_hash(),
            **{**defaults, **kwargs},
        )
        agents.append(agent)
        if register:
            await agent.register()
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            await agent.close()


@pytest.fixture
def make_agent(db: Any) -> Iterator[Any]:
    """make_agent(deployment_hash=None, register=True, **kwargs) -> Agent (closed at the end)."""
    with agent_factory(db.conninfo) as make:
        yield make


@pytest_asyncio.fixture
async def make_async_agent(db: Any) -> AsyncIterator[Any]:
    async with async_agent_factory(db.conninfo) as make:
        yield make
