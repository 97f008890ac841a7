"""``Agent`` and ``AsyncAgent``: the deployment agent's side of the queue.

``register()`` once, then ``wait_for_commands()`` in a loop: it claims at once;
when there is nothing it waits for a wake-up of its deployment from a
listener (or the polling interval) and claims again, until the timeout.
Then ``start``, ``extend_lease`` while working, and ``report_result``.

A standalone agent opens a private :class:`~stacker_queue.listener.Listener`
on its first wait; a service serving many agents passes one shared listener
(and a pool) to every ``Agent``/``AsyncAgent`` it builds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Self
from uuid import UUID

import psycopg

from ._calls import Arg, Call, check_schema, function_call, short_list
from .errors import InvalidInput
from .listener import AsyncListener, AsyncSubscription, Listener, Subscription
from .models import AgentRecord, Command
from .pool import (
    PSYCOPG_PREPARE_THRESHOLD,
    AsyncRunner,
    AsyncSource,
    Row,
    SyncRunner,
    SyncSource,
    async_connection_pool,
    connection_pool,
    conninfo_of,
)
from .templates import DEFAULT_SCHEMA

log = logging.getLogger("stacker_queue")

#: Seconds between claims while waiting when no wake-up comes (a lost
#: notification, a command scheduled for later): Stacker's ``interval``.
DEFAULT_POLL_INTERVAL = 3.0


def _agent_uuid(agent_id: UUID | str | None) -> UUID | None:
    if agent_id is None or isinstance(agent_id, UUID):
        return agent_id
    try:
        return UUID(str(agent_id))
    except ValueError:
        raise InvalidInput(
            f"invalid agent_id {agent_id!r}: must be a UUID", sqlstate="22P02"
        ) from None


def _check_timeout(timeout: float) -> float:
    if timeout is None or timeout < 0:
        raise InvalidInput(
            f"invalid timeout {timeout!r}: must be 0 or more seconds", sqlstate="22023"
        )
    return float(timeout)


class _AgentCalls:
    schema: str
    deployment_hash: str
    agent_id: UUID | None
    actor: str | None
    lease_seconds: int | None
    poll_interval: float

    def _register_call(
        self, version: str | None, capabilities: Any, system_info: Mapping[str, Any] | None
    ) -> Call:
        return function_call(
            self.schema,
            "register_agent",
            {
                "deployment_hash": Arg("text", self.deployment_hash, required=True),
                "agent_id": Arg("uuid", self.agent_id),
                "version": Arg("text", version),
                "capabilities": Arg("jsonb", capabilities),
                "system_info": Arg("jsonb", system_info),
            },
        )

    def _claim_call(self, limit: int, lease_seconds: int | None) -> Call:
        return function_call(
            self.schema,
            "claim_commands",
            {
                "deployment_hash": Arg("text", self.deployment_hash, required=True),
                # Unregistered: NULL, for the database to reject (22023).
                "agent_id": Arg("uuid", self.agent_id, required=True),
                "limit": Arg("integer", limit),
                "lease_seconds": Arg("integer", lease_seconds or self.lease_seconds),
            },
        )

    def _command_call(self, function: str, command_id: str, **args: Arg) -> Call:
        return function_call(
            self.schema,
            function,
            {
                "command_id": Arg("text", command_id, required=True),
                "agent_id": Arg("uuid", self.agent_id, required=True),
                **args,
            },
        )

    def _reports_call(self, reports: Sequence[Mapping[str, Any]]) -> tuple[Call, list[str]]:
        batch = [dict(r) for r in reports]
        call = function_call(
            self.schema,
            "report_results",
            {
                "agent_id": Arg("uuid", self.agent_id, required=True),
                "reports": Arg("jsonb", batch, required=True),
            },
        )
        return call, [str(r.get("command_id")) for r in batch]

    def _registered(self, rows: list[Row]) -> AgentRecord:
        record = AgentRecord.from_row(rows[0])
        self.agent_id = record.id
        log.info("Registered agent %s for deployment %s", record.id, record.deployment_hash)
        return record

    def _claim_attempt(self, limit: int, quiet: bool) -> None:
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "Attempting to claim commands for deployment %s (agent %s, limit %d)",
            self.deployment_hash,
            self.agent_id,
            limit,
        )

    def _claimed(self, rows: list[Row], quiet: bool) -> list[Command]:
        commands = [Command.from_row(r) for r in rows]
        ids = [c.command_id for c in commands]
        log.log(
            logging.DEBUG if quiet and not commands else logging.INFO,
            "Claimed %d commands for deployment %s%s",
            len(commands),
            self.deployment_hash,
            f": {short_list(ids)}" if ids else "",
        )
        return commands

    def _claim_failed(self, exc: BaseException) -> None:
        log.warning("Failed to claim commands for deployment %s: %s", self.deployment_hash, exc)

    def _waiting(self, timeout: float, listening: bool) -> None:
        log.debug(
            "Waiting up to %.1f s for commands of deployment %s (%s, polling every %.1f s)",
            timeout,
            self.deployment_hash,
            "woken by NOTIFY" if listening else "no listener",
            self.poll_interval,
        )


class Agent(_AgentCalls):
    """A deployment's agent over a psycopg connection or pool (sync)."""

    def __init__(
        self,
        source: SyncSource,
        deployment_hash: str,
        agent_id: UUID | str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        listener: Listener | None = None,
        listen_conninfo: str | None = None,
        listen: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        lease_seconds: int | None = None,
        _owned: bool = False,
    ) -> None:
        self.schema = check_schema(schema)
        self.deployment_hash = deployment_hash
        self.agent_id = _agent_uuid(agent_id)
        self.actor = actor
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.listen = listen
        self._runner = SyncRunner(source, owned=_owned)
        self._listener = listener
        self._own_listener = False
        self._listen_conninfo = listen_conninfo

    @classmethod
    def connect(
        cls,
        conninfo: str,
        deployment_hash: str,
        agent_id: UUID | str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        listen_conninfo: str | None = None,
        listen: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        lease_seconds: int | None = None,
        prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    ) -> Self:
        """An agent with a one-connection pool of its own; it LISTENs on a
        connection of its own to ``listen_conninfo`` (default: ``conninfo``)."""
        schema = check_schema(schema)
        pool = connection_pool(
            conninfo, min_size=1, max_size=1, prepare_threshold=prepare_threshold
        )
        return cls(
            pool,
            deployment_hash,
            agent_id,
            schema=schema,
            actor=actor,
            listen_conninfo=listen_conninfo if listen_conninfo is not None else conninfo,
            listen=listen,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
            _owned=True,
        )

    @property
    def listener(self) -> Listener | None:
        """The listener waking this agent (None until its first wait)."""
        return self._listener

    def close(self) -> None:
        """Close what this agent opened (its pool, its private listener)."""
        if self._own_listener and self._listener is not None:
            self._listener.close()
            self._listener = None
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: Call) -> list[Row]:
        return self._runner.run(call, self.actor)

    def register(
        self,
        version: str | None = None,
        capabilities: Any = None,
        system_info: Mapping[str, Any] | None = None,
    ) -> AgentRecord:
        """Register (or re-register) the deployment's agent; fills ``agent_id``."""
        return self._registered(self._run(self._register_call(version, capabilities, system_info)))

    def claim(self, limit: int = 1, lease_seconds: int | None = None) -> list[Command]:
        """Claim up to ``limit`` due commands now (possibly none), without waiting."""
        return self._claim(limit, lease_seconds, quiet=False)

    def _claim(self, limit: int, lease_seconds: int | None, quiet: bool) -> list[Command]:
        self._claim_attempt(limit, quiet)
        try:
            rows = self._run(self._claim_call(limit, lease_seconds))
        except Exception as exc:
            self._claim_failed(exc)
            raise
        return self._claimed(rows, quiet)

    def _subscribe(self) -> Subscription | None:
        if not self.listen:
            return None
        if self._listener is None:
            conninfo = self._listen_conninfo
            if conninfo is None:
                conninfo = conninfo_of(self._runner.source)
            try:
                self._listener = Listener(conninfo, schema=self.schema).start()
            except psycopg.Error as exc:
                log.warning(
                    "Cannot LISTEN for wake-ups of deployment %s (%s); polling every %.1f s",
                    self.deployment_hash,
                    str(exc).strip().splitlines()[0],
                    self.poll_interval,
                )
                return None
            self._own_listener = True
        return self._listener.subscribe(self.deployment_hash)

    def wait_for_commands(self, timeout: float = 30, limit: int = 1) -> list[Command]:
        """Claim up to ``limit`` commands, waiting up to ``timeout`` seconds for
        some to arrive; returns a possibly empty list."""
        deadline = time.monotonic() + _check_timeout(timeout)
        subscription = self._subscribe()
        self._waiting(timeout, subscription is not None)
        try:
            commands = self._claim(limit, None, quiet=True)
            while not commands:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                step = min(self.poll_interval, remaining)
                if subscription is None:
                    time.sleep(step)
                else:
                    subscription.wait(step)
                commands = self._claim(limit, None, quiet=True)
            return commands
        finally:
            if subscription is not None:
                subscription.close()

    def start(self, command_id: str) -> Command:
        """sent -> executing."""
        command = Command.from_row(self._run(self._command_call("start_command", command_id))[0])
        log.info("Started command %s", command_id)
        return command

    def extend_lease(self, command_id: str, lease_seconds: int | None = None) -> datetime:
        """Extend the lease of a command this agent holds; returns the new end."""
        call = self._command_call(
            "extend_lease", command_id, lease_seconds=Arg("integer", lease_seconds)
        )
        expires: datetime = next(iter(self._run(call)[0].values()))
        log.debug("Extended the lease of command %s to %s", command_id, expires.isoformat())
        return expires

    def report_result(
        self, command_id: str, status: str, result: Any = None, error: Any = None
    ) -> Command:
        """Record the outcome, ``completed`` or ``failed``, with its result or error."""
        call = self._command_call(
            "report_result",
            command_id,
            status=Arg("text", status, required=True),
            result=Arg("jsonb", result),
            error=Arg("jsonb", error),
        )
        log.info("Attempting to report command %s as %s", command_id, status)
        try:
            rows = self._run(call)
        except Exception as exc:
            log.warning("Failed to report command %s: %s", command_id, exc)
            raise
        log.info("Successfully reported command %s as %s", command_id, status)
        return Command.from_row(rows[0])

    def report_results(self, reports: Sequence[Mapping[str, Any]]) -> list[Command]:
        """Record many outcomes in one call (all or none): each element is a
        mapping with ``command_id``, ``status`` and optionally ``result`` and
        ``error``, as for :meth:`report_result`. Returns the commands in order."""
        call, ids = self._reports_call(reports)
        log.info("Attempting to report %d commands: %s", len(ids), short_list(ids))
        try:
            rows = self._run(call)
        except Exception as exc:
            log.warning("Failed to report %d commands: %s", len(ids), exc)
            raise
        log.info("Successfully reported %d commands: %s", len(ids), short_list(ids))
        return [Command.from_row(r) for r in rows]


class AsyncAgent(_AgentCalls):
    """The asyncio twin of :class:`Agent`."""

    def __init__(
        self,
        source: AsyncSource,
        deployment_hash: str,
        agent_id: UUID | str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        listener: AsyncListener | None = None,
        listen_conninfo: str | None = None,
        listen: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        lease_seconds: int | None = None,
        _owned: bool = False,
    ) -> None:
        self.schema = check_schema(schema)
        self.deployment_hash = deployment_hash
        self.agent_id = _agent_uuid(agent_id)
        self.actor = actor
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.listen = listen
        self._runner = AsyncRunner(source, owned=_owned)
        self._listener = listener
        self._own_listener = False
        self._listen_conninfo = listen_conninfo

    @classmethod
    async def connect(
        cls,
        conninfo: str,
        deployment_hash: str,
        agent_id: UUID | str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        listen_conninfo: str | None = None,
        listen: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        lease_seconds: int | None = None,
        prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    ) -> Self:
        schema = check_schema(schema)
        pool = await async_connection_pool(
            conninfo, min_size=1, max_size=1, prepare_threshold=prepare_threshold
        )
        return cls(
            pool,
            deployment_hash,
            agent_id,
            schema=schema,
            actor=actor,
            listen_conninfo=listen_conninfo if listen_conninfo is not None else conninfo,
            listen=listen,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
            _owned=True,
        )

    @property
    def listener(self) -> AsyncListener | None:
        return self._listener

    async def close(self) -> None:
        if self._own_listener and self._listener is not None:
            await self._listener.close()
            self._listener = None
        await self._runner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: Call) -> list[Row]:
        return await self._runner.run(call, self.actor)

    async def register(
        self,
        version: str | None = None,
        capabilities: Any = None,
        system_info: Mapping[str, Any] | None = None,
    ) -> AgentRecord:
        rows = await self._run(self._register_call(version, capabilities, system_info))
        return self._registered(rows)

    async def claim(self, limit: int = 1, lease_seconds: int | None = None) -> list[Command]:
        return await self._claim(limit, lease_seconds, quiet=False)

    async def _claim(self, limit: int, lease_seconds: int | None, quiet: bool) -> list[Command]:
        self._claim_attempt(limit, quiet)
        try:
            rows = await self._run(self._claim_call(limit, lease_seconds))
        except Exception as exc:
            self._claim_failed(exc)
            raise
        return self._claimed(rows, quiet)

    async def _subscribe(self) -> AsyncSubscription | None:
        if not self.listen:
            return None
        if self._listener is None:
            conninfo = self._listen_conninfo
            if conninfo is None:
                conninfo = conninfo_of(self._runner.source)
            try:
                self._listener = await AsyncListener(conninfo, schema=self.schema).start()
            except psycopg.Error as exc:
                log.warning(
                    "Cannot LISTEN for wake-ups of deployment %s (%s); polling every %.1f s",
                    self.deployment_hash,
                    str(exc).strip().splitlines()[0],
                    self.poll_interval,
                )
                return None
            self._own_listener = True
        return self._listener.subscribe(self.deployment_hash)

    async def wait_for_commands(self, timeout: float = 30, limit: int = 1) -> list[Command]:
        deadline = time.monotonic() + _check_timeout(timeout)
        subscription = await self._subscribe()
        self._waiting(timeout, subscription is not None)
        try:
            commands = await self._claim(limit, None, quiet=True)
            while not commands:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                step = min(self.poll_interval, remaining)
                if subscription is None:
                    await asyncio.sleep(step)
                else:
                    await subscription.wait(step)
                commands = await self._claim(limit, None, quiet=True)
            return commands
        finally:
            if subscription is not None:
                subscription.close()

    async def start(self, command_id: str) -> Command:
        rows = await self._run(self._command_call("start_command", command_id))
        log.info("Started command %s", command_id)
        return Command.from_row(rows[0])

    async def extend_lease(self, command_id: str, lease_seconds: int | None = None) -> datetime:
        call = self._command_call(
            "extend_lease", command_id, lease_seconds=Arg("integer", lease_seconds)
        )
        expires: datetime = next(iter((await self._run(call))[0].values()))
        log.debug("Extended the lease of command %s to %s", command_id, expires.isoformat())
        return expires

    async def report_result(
        self, command_id: str, status: str, result: Any = None, error: Any = None
    ) -> Command:
        call = self._command_call(
            "report_result",
            command_id,
            status=Arg("text", status, required=True),
            result=Arg("jsonb", result),
            error=Arg("jsonb", error),
        )
        log.info("Attempting to report command %s as %s", command_id, status)
        try:
            rows = await self._run(call)
        except Exception as exc:
            log.warning("Failed to report command %s: %s", command_id, exc)
            raise
        log.info("Successfully reported command %s as %s", command_id, status)
        return Command.from_row(rows[0])

    async def report_results(self, reports: Sequence[Mapping[str, Any]]) -> list[Command]:
        call, ids = self._reports_call(reports)
        log.info("Attempting to report %d commands: %s", len(ids), short_list(ids))
        try:
            rows = await self._run(call)
        except Exception as exc:
            log.warning("Failed to report %d commands: %s", len(ids), exc)
            raise
        log.info("Successfully reported %d commands: %s", len(ids), short_list(ids))
        return [Command.from_row(r) for r in rows]


__all__ = ["DEFAULT_POLL_INTERVAL", "Agent", "AsyncAgent"]
