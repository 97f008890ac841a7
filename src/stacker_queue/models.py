"""Frozen dataclasses for the rows the stored functions return.

Each is built from a row as the database returned it (column name -> value);
columns this version does not know are ignored, so a newer schema that adds
columns keeps working with an older wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any, Self, cast
from uuid import UUID

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@cache
def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


class _FromRow:
    @classmethod
    def from_row(cls, row: Mapping[str, Any], **extra: Any) -> Self:
        names = _field_names(cast(Any, cls))
        values = {k: v for k, v in row.items() if k in names}
        values.update(extra)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (datetimes and UUIDs as they are)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Command(_FromRow):
    """A row of ``commands``: Stacker's columns plus the queue's own."""

    command_id: str
    deployment_hash: str
    type: str
    status: str
    priority: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    id: UUID | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: Any = None
    scheduled_for: datetime | None = None
    sent_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    timeout_seconds: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 3
    idempotency_key: str | None = None
    agent_id: UUID | None = None
    lease_expires_at: datetime | None = None

    @property
    def command_type(self) -> str:
        """The type, under the name Stacker's HTTP API uses."""
        return self.type

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class AppStatus(_FromRow):
    """The status of one app of a deployment.

    ``Client.app_status`` (the panel, ``get_app_status``) fills ``state``,
    ``pending_command_id`` and ``agent_last_seen``; ``update_app_status``
    returns the stored row, with ``command_id`` and ``updated_at``.
    """

    deployment_hash: str
    app_code: str
    status: str
    logs: list[str] = field(default_factory=list)
    checked_at: datetime | None = None
    state: str | None = None
    pending_command_id: str | None = None
    agent_last_seen: datetime | None = None
    command_id: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class AgentRecord(_FromRow):
    """A row of ``agents``: the registered agent of a deployment."""

    id: UUID
    deployment_hash: str
    capabilities: Any = None
    version: str | None = None
    system_info: Any = None
    last_heartbeat: datetime | None = None
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    registered_at: datetime | None = None


@dataclass(frozen=True)
class QueueStats(_FromRow):
    """A row of the ``queue_stats`` view."""

    deployment_hash: str
    queued: int
    in_flight: int
    expired_leases: int
    oldest_queued_at: datetime | None = None
    agent_last_seen: datetime | None = None
