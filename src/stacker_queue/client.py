"""``Client`` and ``AsyncClient``: what a service (Stacker's API, an operator)
calls: create, read and cancel commands, app status, queue statistics.

Each method is exactly one stored-function call (the statistics read the
``queue_stats`` view) in a transaction of its own; ``actor`` (per client or
per call) names who did it in ``audit_log.actor`` and ``created_by`` for that
transaction only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Self

from ._calls import Arg, Call, check_schema, function_call, new_command_id, short_list, stats_query
from .models import AppStatus, Command, QueueStats
from .pool import (
    PSYCOPG_PREPARE_THRESHOLD,
    AsyncRunner,
    AsyncSource,
    Row,
    SyncRunner,
    SyncSource,
    async_connection_pool,
    connection_pool,
)
from .templates import DEFAULT_SCHEMA

log = logging.getLogger("stacker_queue")

_UNSET: Any = object()


class _Calls:
    """The statements of the client's methods (shared by sync and async)."""

    schema: str
    actor: str | None

    def _actor(self, actor: str | None) -> str | None:
        return self.actor if actor is _UNSET else actor

    def _create_call(
        self,
        deployment_hash: str,
        command_type: str,
        parameters: Mapping[str, Any] | None,
        priority: str | None,
        created_by: str | None,
        idempotency_key: str | None,
        timeout_seconds: int | None,
        scheduled_for: datetime | None,
        max_attempts: int | None,
        command_id: str,
        metadata: Mapping[str, Any] | None,
    ) -> Call:
        return function_call(
            self.schema,
            "create_command",
            {
                "deployment_hash": Arg("text", deployment_hash, required=True),
                "command_type": Arg("text", command_type, required=True),
                "parameters": Arg("jsonb", parameters),
                "priority": Arg("text", priority),
                "created_by": Arg("text", created_by),
                "idempotency_key": Arg("text", idempotency_key),
                "timeout_seconds": Arg("integer", timeout_seconds),
                "scheduled_for": Arg("timestamptz", scheduled_for),
                "max_attempts": Arg("integer", max_attempts),
                "command_id": Arg("text", command_id, required=True),
                "metadata": Arg("jsonb", metadata),
            },
        )

    @staticmethod
    def _batch(commands: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        batch = []
        for element in commands:
            item = dict(element)
            if item.get("command_id") is None:
                item["command_id"] = new_command_id()
            batch.append(item)
        return batch

    def _create_many_call(self, batch: list[dict[str, Any]]) -> Call:
        return function_call(
            self.schema, "create_commands", {"commands": Arg("jsonb", batch, required=True)}
        )

    def _get_call(self, command_id: str) -> Call:
        return function_call(
            self.schema, "get_command", {"command_id": Arg("text", command_id, required=True)}
        )

    def _list_call(self, deployment_hash: str, status: str | None, limit: int | None) -> Call:
        return function_call(
            self.schema,
            "list_commands",
            {
                "deployment_hash": Arg("text", deployment_hash, required=True),
                "status": Arg("text", status),
                "limit": Arg("integer", limit),
            },
        )

    def _cancel_call(self, command_id: str, reason: str | None, cancelled_by: str | None) -> Call:
        return function_call(
            self.schema,
            "cancel_command",
            {
                "command_id": Arg("text", command_id, required=True),
                "reason": Arg("text", reason),
                "cancelled_by": Arg("text", cancelled_by),
            },
        )

    def _update_app_status_call(
        self,
        deployment_hash: str,
        app_code: str,
        status: str,
        logs: Sequence[str] | None,
        checked_at: datetime | None,
        command_id: str | None,
    ) -> Call:
        return function_call(
            self.schema,
            "update_app_status",
            {
                "deployment_hash": Arg("text", deployment_hash, required=True),
                "app_code": Arg("text", app_code, required=True),
                "status": Arg("text", status, required=True),
                "logs": Arg("jsonb", None if logs is None else list(logs)),
                "checked_at": Arg("timestamptz", checked_at),
                "command_id": Arg("text", command_id),
            },
        )

    def _app_status_call(self, deployment_hash: str) -> Call:
        return function_call(
            self.schema,
            "get_app_status",
            {"deployment_hash": Arg("text", deployment_hash, required=True)},
        )

    @staticmethod
    def _added(rows: list[Row]) -> Command:
        command = Command.from_row(rows[0])
        log.info("Successfully added command %s to queue", command.command_id)
        return command

    @staticmethod
    def _added_many(rows: list[Row]) -> list[Command]:
        commands = [Command.from_row(r) for r in rows]
        ids = [c.command_id for c in commands]
        log.info("Successfully added %d commands to queue: %s", len(ids), short_list(ids))
        return commands

    @staticmethod
    def _cancelled(rows: list[Row]) -> Command:
        command = Command.from_row(rows[0])
        log.info("Cancelled command %s (%s)", command.command_id, command.status)
        return command


class Client(_Calls):
    """A service's handle on the queue, over a psycopg connection or pool.

    ``Client.connect(conninfo)`` opens a small pool of its own (closed by
    :meth:`close`); ``Client(conn_or_pool)`` uses yours and leaves it open.
    A connection of yours should be in autocommit mode: each call then is a
    transaction of its own (otherwise each call runs in a savepoint of your
    transaction and takes effect when you commit).
    """

    def __init__(
        self,
        source: SyncSource,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        _owned: bool = False,
    ) -> None:
        self.schema = check_schema(schema)
        self.actor = actor
        self._runner = SyncRunner(source, owned=_owned)

    @classmethod
    def connect(
        cls,
        conninfo: str = "",
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        max_size: int = 1,
        prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    ) -> Self:
        """A client with a pool of its own (``max_size`` connections; pass
        ``prepare_threshold=None`` behind a transaction-pooling PgBouncer)."""
        schema = check_schema(schema)
        pool = connection_pool(
            conninfo, min_size=1, max_size=max_size, prepare_threshold=prepare_threshold
        )
        return cls(pool, schema=schema, actor=actor, _owned=True)

    @property
    def source(self) -> SyncSource:
        return self._runner.source

    def close(self) -> None:
        """Close the pool ``connect`` opened (a connection or pool you gave stays open)."""
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------
    def create_command(
        self,
        deployment_hash: str,
        command_type: str,
        parameters: Mapping[str, Any] | None = None,
        priority: str | None = None,
        created_by: str | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: int | None = None,
        scheduled_for: datetime | None = None,
        max_attempts: int | None = None,
        command_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> Command:
        """Queue a command (status ``queued``); its agent is woken at commit.

        Arguments left as None take the database's defaults (priority normal,
        timeout 300 s, max_attempts 3, parameters and metadata ``{}``).
        """
        command_id = command_id or new_command_id()
        call = self._create_call(
            deployment_hash,
            command_type,
            parameters,
            priority,
            created_by,
            idempotency_key,
            timeout_seconds,
            scheduled_for,
            max_attempts,
            command_id,
            metadata,
        )
        log.info("Attempting to add command %s to queue", command_id)
        try:
            rows = self._runner.run(call, self._actor(actor))
        except Exception as exc:
            log.warning("Failed to add command %s to queue: %s", command_id, exc)
            raise
        return self._added(rows)

    def create_commands(
        self, commands: Sequence[Mapping[str, Any]], *, actor: str | None = _UNSET
    ) -> list[Command]:
        """Queue many commands in one statement (all or none). Each element has
        create_command's arguments as keys (``deployment_hash``,
        ``command_type``, ``parameters``, ...)."""
        batch = self._batch(commands)
        ids = [str(item.get("command_id")) for item in batch]
        log.info("Attempting to add %d commands to queue: %s", len(ids), short_list(ids))
        try:
            rows = self._runner.run(self._create_many_call(batch), self._actor(actor))
        except Exception as exc:
            log.warning("Failed to add %d commands to queue: %s", len(ids), exc)
            raise
        return self._added_many(rows)

    def get_command(self, command_id: str) -> Command:
        """One command; :class:`NotFound` when it does not exist."""
        return Command.from_row(self._runner.run(self._get_call(command_id))[0])

    def list_commands(
        self, deployment_hash: str, status: str | None = None, limit: int | None = None
    ) -> list[Command]:
        """A deployment's newest commands (100 unless ``limit``), optionally of one status."""
        rows = self._runner.run(self._list_call(deployment_hash, status, limit))
        return [Command.from_row(r) for r in rows]

    def cancel_command(
        self,
        command_id: str,
        reason: str | None = None,
        cancelled_by: str | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> Command:
        """Cancel a queued, sent or executing command (:class:`Conflict` once finished)."""
        try:
            rows = self._runner.run(
                self._cancel_call(command_id, reason, cancelled_by), self._actor(actor)
            )
        except Exception as exc:
            log.warning("Failed to cancel command %s: %s", command_id, exc)
            raise
        return self._cancelled(rows)

    # -- app status -----------------------------------------------------------------
    def update_app_status(
        self,
        deployment_hash: str,
        app_code: str,
        status: str,
        logs: Sequence[str] | None = None,
        checked_at: datetime | None = None,
        command_id: str | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> AppStatus:
        """Record an app's status (running, stopped, error or unknown) and logs."""
        call = self._update_app_status_call(
            deployment_hash, app_code, status, logs, checked_at, command_id
        )
        return AppStatus.from_row(self._runner.run(call, self._actor(actor))[0])

    def app_status(self, deployment_hash: str) -> list[AppStatus]:
        """The status panel of a deployment (``get_app_status``), one row per app."""
        rows = self._runner.run(self._app_status_call(deployment_hash))
        return [AppStatus.from_row(r, deployment_hash=deployment_hash) for r in rows]

    def stats(self, deployment_hash: str | None = None) -> list[QueueStats]:
        """The ``queue_stats`` view (every deployment, or one)."""
        rows = self._runner.run(stats_query(self.schema, deployment_hash))
        return [QueueStats.from_row(r) for r in rows]


class AsyncClient(_Calls):
    """The asyncio twin of :class:`Client` (psycopg AsyncConnection or AsyncConnectionPool)."""

    def __init__(
        self,
        source: AsyncSource,
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        _owned: bool = False,
    ) -> None:
        self.schema = check_schema(schema)
        self.actor = actor
        self._runner = AsyncRunner(source, owned=_owned)

    @classmethod
    async def connect(
        cls,
        conninfo: str = "",
        *,
        schema: str = DEFAULT_SCHEMA,
        actor: str | None = None,
        max_size: int = 1,
        prepare_threshold: int | None = PSYCOPG_PREPARE_THRESHOLD,
    ) -> Self:
        schema = check_schema(schema)
        pool = await async_connection_pool(
            conninfo, min_size=1, max_size=max_size, prepare_threshold=prepare_threshold
        )
        return cls(pool, schema=schema, actor=actor, _owned=True)

    @property
    def source(self) -> AsyncSource:
        return self._runner.source

    async def close(self) -> None:
        await self._runner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_command(
        self,
        deployment_hash: str,
        command_type: str,
        parameters: Mapping[str, Any] | None = None,
        priority: str | None = None,
        created_by: str | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: int | None = None,
        scheduled_for: datetime | None = None,
        max_attempts: int | None = None,
        command_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> Command:
        command_id = command_id or new_command_id()
        call = self._create_call(
            deployment_hash,
            command_type,
            parameters,
            priority,
            created_by,
            idempotency_key,
            timeout_seconds,
            scheduled_for,
            max_attempts,
            command_id,
            metadata,
        )
        log.info("Attempting to add command %s to queue", command_id)
        try:
            rows = await self._runner.run(call, self._actor(actor))
        except Exception as exc:
            log.warning("Failed to add command %s to queue: %s", command_id, exc)
            raise
        return self._added(rows)

    async def create_commands(
        self, commands: Sequence[Mapping[str, Any]], *, actor: str | None = _UNSET
    ) -> list[Command]:
        batch = self._batch(commands)
        ids = [str(item.get("command_id")) for item in batch]
        log.info("Attempting to add %d commands to queue: %s", len(ids), short_list(ids))
        try:
            rows = await self._runner.run(self._create_many_call(batch), self._actor(actor))
        except Exception as exc:
            log.warning("Failed to add %d commands to queue: %s", len(ids), exc)
            raise
        return self._added_many(rows)

    async def get_command(self, command_id: str) -> Command:
        return Command.from_row((await self._runner.run(self._get_call(command_id)))[0])

    async def list_commands(
        self, deployment_hash: str, status: str | None = None, limit: int | None = None
    ) -> list[Command]:
        rows = await self._runner.run(self._list_call(deployment_hash, status, limit))
        return [Command.from_row(r) for r in rows]

    async def cancel_command(
        self,
        command_id: str,
        reason: str | None = None,
        cancelled_by: str | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> Command:
        try:
            rows = await self._runner.run(
                self._cancel_call(command_id, reason, cancelled_by), self._actor(actor)
            )
        except Exception as exc:
            log.warning("Failed to cancel command %s: %s", command_id, exc)
            raise
        return self._cancelled(rows)

    async def update_app_status(
        self,
        deployment_hash: str,
        app_code: str,
        status: str,
        logs: Sequence[str] | None = None,
        checked_at: datetime | None = None,
        command_id: str | None = None,
        *,
        actor: str | None = _UNSET,
    ) -> AppStatus:
        call = self._update_app_status_call(
            deployment_hash, app_code, status, logs, checked_at, command_id
        )
        return AppStatus.from_row((await self._runner.run(call, self._actor(actor)))[0])

    async def app_status(self, deployment_hash: str) -> list[AppStatus]:
        rows = await self._runner.run(self._app_status_call(deployment_hash))
        return [AppStatus.from_row(r, deployment_hash=deployment_hash) for r in rows]

    async def stats(self, deployment_hash: str | None = None) -> list[QueueStats]:
        rows = await self._runner.run(stats_query(self.schema, deployment_hash))
        return [QueueStats.from_row(r) for r in rows]


__all__ = ["AsyncClient", "Client"]
