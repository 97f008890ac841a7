"""Where the wrappers get their connections: a psycopg connection or a
psycopg_pool pool, and helpers that build a pool set up for stacker-queue.

Every call runs in its own transaction: with an actor, ``set_config(...,
true)`` and the function call share it, so nothing outlives the transaction
and the same code works through a transaction-pooling PgBouncer (there, build
the pool with ``prepare_threshold=None``: PgBouncer before 1.21 cannot keep
prepared statements across transactions).
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ._calls import SET_ACTOR, Call
from .errors import mapped_errors

APPLICATION_NAME = "stacker-queue"
PSYCOPG_PREPARE_THRESHOLD = 5

SyncSource = psycopg.Connection[Any] | ConnectionPool[Any]
AsyncSource = psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any]

Row = dict[str, Any]


def connection_kwargs(
    conninfo: str,
    *,
    prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    application_name: str = APPLICATION_NAME,
    **extra: Any,
) -> dict[str, Any]:
    """Connection options: autocommit, prepare_threshold, and an
    application_name unless the conninfo or PGAPPNAME already sets one."""
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": prepare_threshold}
    named = "application_name" in psycopg.conninfo.conninfo_to_dict(conninfo)
    if not named and not os.environ.get("PGAPPNAME"):
        kwargs["application_name"] = application_name
    kwargs.update(extra)
    return kwargs


def _socket_quiet(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True when an idle pooled connection has nothing waiting on its socket.

    A backend that was terminated, or a server that went away, leaves its
    client socket readable (the FATAL message, or EOF); an idle connection of
    the pool is otherwise silent. So a quiet socket needs no ``SELECT``."""
    try:
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """The pool's check when a connection is handed out: free when its socket
    is quiet, otherwise psycopg_pool's round trip (which raises for a dead one,
    and the pool then hands out another)."""
    if not _socket_quiet(conn):
        ConnectionPool.check_connection(conn)


async def async_check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The asyncio twin of :func:`check_connection`."""
    if not _socket_quiet(conn):
        await AsyncConnectionPool.check_connection(conn)


def connection_pool(
    conninfo: str = "",
    *,
    min_size: int = 1,
    max_size: int = 10,
    prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    application_name: str = APPLICATION_NAME,
    name: str | None = None,
    probe: bool = True,
    **pool_options: Any,
) -> ConnectionPool[Any]:
    """An open ``psycopg_pool.ConnectionPool`` of autocommit connections whose
    health is checked when they are handed out (:func:`check_connection`: a
    round trip only when the idle connection's socket is not quiet). ``prepare_threshold=None`` for
    a transaction-pooling PgBouncer. Extra keywords go to ConnectionPool.

    With ``probe`` (the default) one connection is made and closed first, so
    a wrong conninfo fails at once with the server's reason, instead of as a
    PoolTimeout once the pool gave up."""
    pool_options.setdefault("check", check_connection)
    kwargs = connection_kwargs(
        conninfo, prepare_threshold=prepare_threshold, application_name=application_name
    )
    if probe:
        psycopg.connect(conninfo, **kwargs).close()
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        name=name,
        open=False,
        **pool_options,
    )
    pool.open(wait=True)
    return pool


async def async_connection_pool(
    conninfo: str = "",
    *,
    min_size: int = 1,
    max_size: int = 10,
    prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    application_name: str = APPLICATION_NAME,
    name: str | None = None,
    probe: bool = True,
    **pool_options: Any,
) -> AsyncConnectionPool[Any]:
    """The asyncio twin of :func:`connection_pool`, opened."""
    pool_options.setdefault("check", async_check_connection)
    kwargs = connection_kwargs(
        conninfo, prepare_threshold=prepare_threshold, application_name=application_name
    )
    if probe:
        await (await psycopg.AsyncConnection.connect(conninfo, **kwargs)).close()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        name=name,
        open=False,
        **pool_options,
    )
    await pool.open(wait=True)
    return pool


def conninfo_of(source: SyncSource | AsyncSource) -> str:
    """A conninfo that reaches the same server as ``source`` (for LISTEN)."""
    if isinstance(source, ConnectionPool | AsyncConnectionPool):
        return str(source.conninfo)
    info = source.info
    return psycopg.conninfo.make_conninfo(info.dsn, password=info.password or None)


class SyncRunner:
    """Runs calls on a connection (serialised by a lock) or a pool."""

    def __init__(self, source: SyncSource, *, owned: bool = False) -> None:
        self.source = source
        self.owned = owned
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if isinstance(self.source, ConnectionPool):
            with self.source.connection() as conn:
                yield conn
        else:
            with self._lock:
                yield self.source

    def run(self, call: Call, actor: str | None = None) -> list[Row]:
        """The rows of one call, in a transaction of its own (with the actor set)."""
        with self.connection() as conn, mapped_errors():
            cur = conn.cursor(row_factory=dict_row)
            if actor is None and conn.autocommit:
                cur.execute(call.query, call.params)
                return cur.fetchall()
            with conn.transaction():
                if actor is not None:
                    cur.execute(SET_ACTOR, [actor])
                cur.execute(call.query, call.params)
                return cur.fetchall()

    @property
    def closed(self) -> bool:
        return bool(self.source.closed)

    def close(self) -> None:
        if self.owned:
            self.source.close()


class AsyncRunner:
    """The asyncio twin of :class:`SyncRunner`."""

    def __init__(self, source: AsyncSource, *, owned: bool = False) -> None:
        self.source = source
        self.owned = owned
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if isinstance(self.source, AsyncConnectionPool):
            async with self.source.connection() as conn:
                yield conn
        else:
            async with self._lock:
                yield self.source

    async def run(self, call: Call, actor: str | None = None) -> list[Row]:
        async with self.connection() as conn:
            with mapped_errors():
                cur = conn.cursor(row_factory=dict_row)
                if actor is None and conn.autocommit:
                    await cur.execute(call.query, call.params)
                    return await cur.fetchall()
                async with conn.transaction():
                    if actor is not None:
                        await cur.execute(SET_ACTOR, [actor])
                    await cur.execute(call.query, call.params)
                    return await cur.fetchall()

    @property
    def closed(self) -> bool:
        return bool(self.source.closed)

    async def close(self) -> None:
        if self.owned:
            await self.source.close()
