"""One LISTEN connection per process, fanning wake-ups out to every waiter.

The database sends ``NOTIFY <schema>_commands, '<deployment_hash>'`` when a
command of that deployment becomes due (created, requeued) or is cancelled.
A :class:`Listener` (a thread) or :class:`AsyncListener` (an asyncio task)
holds the one connection that LISTENs on that channel, and wakes the
:class:`Subscription` of every waiter of that deployment in the process.
Waiters claim through a pool: 10,000 concurrent waits cost this one
connection plus the pool, never a connection each.

A wake-up is a hint, never a promise: waiters poll as well. When the
listening connection drops, the listener reconnects (exponential backoff,
tenacity) and, once it LISTENs again, wakes *every* waiter, since
notifications sent in the gap were lost; their claims then find whatever
arrived meanwhile, so nothing is missed.

LISTEN needs a session of its own: give the listener a direct connection
string (``listen_conninfo``), not a transaction-pooling PgBouncer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Self

import psycopg
import psycopg.conninfo
from psycopg import sql
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from ._calls import channel, check_schema
from .pool import connection_kwargs
from .templates import DEFAULT_SCHEMA

log = logging.getLogger("stacker_queue")

LISTENER_APPLICATION_NAME = "stacker-queue listener"

# Keep a dead peer from going unnoticed: TCP keepalives on the listening socket
# (ignored for Unix sockets), plus a light query every health_check_interval.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class _Base:
    """What the sync and async listeners share: subscriptions and bookkeeping."""

    def __init__(
        self,
        conninfo: str,
        schema: str,
        tick: float,
        health_check_interval: float,
        reconnect_max_delay: float,
        connect_timeout: int,
    ) -> None:
        self.conninfo = conninfo
        self.schema = check_schema(schema)
        self.channel = channel(self.schema)
        self.tick = tick
        self.health_check_interval = health_check_interval
        self.reconnect_max_delay = reconnect_max_delay
        self.connect_timeout = connect_timeout
        #: times the listening connection was re-established after a loss
        self.reconnects = 0
        #: notifications received (for every deployment)
        self.notifications = 0
        self._subscriptions: dict[str, set[Any]] = {}
        self._subs_lock = threading.Lock()
        self._backend_pid: int | None = None

    # -- subscriptions ------------------------------------------------------------
    def _add(self, sub: Any) -> None:
        with self._subs_lock:
            self._subscriptions.setdefault(sub.deployment_hash, set()).add(sub)

    def _remove(self, sub: Any) -> None:
        with self._subs_lock:
            subs = self._subscriptions.get(sub.deployment_hash)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscriptions[sub.deployment_hash]

    def _dispatch(self, deployment_hash: str) -> None:
        self.notifications += 1
        with self._subs_lock:
            subs = list(self._subscriptions.get(deployment_hash, ()))
        for sub in subs:
            sub._wake()

    def _wake_all(self) -> None:
        with self._subs_lock:
            subs = [s for group in self._subscriptions.values() for s in group]
        for sub in subs:
            sub._wake()

    @property
    def waiting(self) -> int:
        """Subscriptions open right now (every deployment)."""
        with self._subs_lock:
            return sum(len(s) for s in self._subscriptions.values())

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while down)."""
        return self._backend_pid

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs = connection_kwargs(
            self.conninfo,
            prepare_threshold=None,
            application_name=LISTENER_APPLICATION_NAME,
            connect_timeout=self.connect_timeout,
        )
        given = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        kwargs.update({k: v for k, v in _KEEPALIVES.items() if k not in given})
        return kwargs

    def _listen_sql(self) -> sql.Composed:
        return sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))

    def _backoff(self) -> wait_base:
        """Exponential backoff from 50 ms up to reconnect_max_delay, with jitter."""
        return wait_exponential(multiplier=0.05, max=self.reconnect_max_delay) + wait_random(0, 0.1)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Listener for %s cannot reconnect (attempt %d): %s; retrying in %.1f s",
            self.channel,
            state.attempt_number,
            str(exc).strip().splitlines()[0] if exc else "?",
            delay,
        )

    def _lost(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("Listener lost its connection on %s: %s; reconnecting", self.channel, reason)

    def _relistening(self) -> None:
        self.reconnects += 1
        log.info(
            "Listener on %s reconnected; waking all %d waiters to claim what arrived meanwhile",
            self.channel,
            self.waiting,
        )


class Subscription:
    """A waiter's registration with a :class:`Listener` for one deployment.

    Open it *before* claiming, so a command created between the claim and the
    wait still wakes it; :meth:`wait` returns True when woken (a notification
    for the deployment or a listener reconnect), False on timeout.
    """

    def __init__(self, listener: Listener, deployment_hash: str) -> None:
        self.listener = listener
        self.deployment_hash = deployment_hash
        self._event = threading.Event()
        listener._add(self)

    def _wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until woken or ``timeout`` seconds pass; consumes the wake-up."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        self.listener._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener(_Base):
    """The thread-based shared listener. ``start()`` connects and LISTENs (and
    raises when that fails), then a daemon thread waits for notifications."""

    def __init__(
        self,
        conninfo: str = "",
        *,
        schema: str = DEFAULT_SCHEMA,
        tick: float = 0.5,
        health_check_interval: float = 30.0,
        reconnect_max_delay: float = 5.0,
        connect_timeout: int = 10,
    ) -> None:
        super().__init__(
            conninfo, schema, tick, health_check_interval, reconnect_max_delay, connect_timeout
        )
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, **self._connect_kwargs())
        try:
            conn.execute(self._listen_sql())
        except BaseException:
            conn.close()
            raise
        return conn

    def start(self) -> Self:
        """Connect and LISTEN now (raising when that fails), then serve in a thread."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        conn = self._connect()
        self._thread = threading.Thread(
            target=self._serve, args=(conn,), name=f"stacker-queue-listener-{self.channel}"
        )
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait(self.connect_timeout)
        log.info("Listening for wake-ups on channel %s", self.channel)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is up."""
        return self._ready.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def subscribe(self, deployment_hash: str) -> Subscription:
        if not self.running:
            raise RuntimeError("the listener is not running: call start() first")
        return Subscription(self, deployment_hash)

    def close(self) -> None:
        """Stop the thread (within ``tick`` seconds) and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._wake_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread ---------------------------------------------------------------
    def _serve(self, conn: psycopg.Connection[Any] | None) -> None:
        while conn is not None:
            try:
                with conn:
                    self._backend_pid = conn.info.backend_pid
                    self._ready.set()
                    self._wake_all()
                    self._pump(conn)
                return  # stopped
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                self._lost(exc)
            finally:
                self._ready.clear()
                self._backend_pid = None
            conn = self._reconnect()
            if conn is not None:
                self._relistening()

    def _pump(self, conn: psycopg.Connection[Any]) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            for notify in conn.notifies(timeout=self.tick):
                self._dispatch(notify.payload)
            if time.monotonic() - last_check >= self.health_check_interval:
                conn.execute("SELECT 1")
                last_check = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        """tenacity's sleep between reconnect attempts; cut short by close()."""
        self._stop.wait(seconds)

    def _reconnect(self) -> psycopg.Connection[Any] | None:
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=self._backoff(),
            stop=lambda _: self._stop.is_set(),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._connect)
        except psycopg.OperationalError:
            if self._stop.is_set():
                return None
            raise


class AsyncSubscription:
    """The asyncio twin of :class:`Subscription`."""

    def __init__(self, listener: AsyncListener, deployment_hash: str) -> None:
        self.listener = listener
        self.deployment_hash = deployment_hash
        self._event = asyncio.Event()
        listener._add(self)

    def _wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    def close(self) -> None:
        self.listener._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncListener(_Base):
    """The asyncio shared listener: an ``AsyncConnection`` served by a task of
    the running loop. Its subscribers must live in the same loop."""

    def __init__(
        self,
        conninfo: str = "",
        *,
        schema: str = DEFAULT_SCHEMA,
        tick: float = 0.5,
        health_check_interval: float = 30.0,
        reconnect_max_delay: float = 5.0,
        connect_timeout: int = 10,
    ) -> None:
        super().__init__(
            conninfo, schema, tick, health_check_interval, reconnect_max_delay, connect_timeout
        )
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, **self._connect_kwargs())
        try:
            await conn.execute(self._listen_sql())
        except BaseException:
            await conn.close()
            raise
        return conn

    async def start(self) -> Self:
        """Connect and LISTEN now (raising when that fails), then serve in a task."""
        if self._task is not None and not self._task.done():
            return self
        conn = await self._connect()
        self._ready.set()
        self._backend_pid = conn.info.backend_pid
        self._task = asyncio.create_task(self._serve(conn), name=f"listener-{self.channel}")
        log.info("Listening for wake-ups on channel %s", self.channel)
        return self

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def subscribe(self, deployment_hash: str) -> AsyncSubscription:
        if not self.running:
            raise RuntimeError("the listener is not running: call start() first")
        return AsyncSubscription(self, deployment_hash)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_all()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            try:
                async with conn:
                    self._backend_pid = conn.info.backend_pid
                    self._ready.set()
                    self._wake_all()
                    await self._pump(conn)
            except psycopg.Error as exc:
                self._lost(exc)
            finally:
                self._ready.clear()
                self._backend_pid = None
            conn = await self._reconnect()
            self._relistening()

    async def _pump(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self.health_check_interval):
                self._dispatch(notify.payload)
            await conn.execute("SELECT 1")

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=self._backoff(),
            before_sleep=self._log_retry,
            reraise=True,
        )
        conn: psycopg.AsyncConnection[Any] = await retrying(self._connect)
        return conn


__all__ = ["AsyncListener", "AsyncSubscription", "Listener", "Subscription"]
