"""stacker-queue: Stacker's command pipeline inside PostgreSQL.

The SQL (migrations, stored functions) does the work; this package installs it
(:class:`Installer`) and wraps its functions for services (:class:`Client`)
and deployment agents (:class:`Agent`), sync and asyncio, with one shared
LISTEN connection per process (:class:`Listener`) to wake waiting agents.
"""

from .agent import DEFAULT_POLL_INTERVAL, Agent, AsyncAgent
from .client import AsyncClient, Client
from .errors import Conflict, InvalidInput, NotFound, PermissionDenied, StackerQueueError
from .listener import AsyncListener, AsyncSubscription, Listener, Subscription
from .migrate import Installer, MigrateReport, Status
from .models import AgentRecord, AppStatus, Command, QueueStats
from .pool import async_connection_pool, connection_pool
from .templates import DEFAULT_SCHEMA, Renderer

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_SCHEMA",
    "Agent",
    "AgentRecord",
    "AppStatus",
    "AsyncAgent",
    "AsyncClient",
    "AsyncListener",
    "AsyncSubscription",
    "Client",
    "Command",
    "Conflict",
    "Installer",
    "InvalidInput",
    "Listener",
    "MigrateReport",
    "NotFound",
    "PermissionDenied",
    "QueueStats",
    "Renderer",
    "StackerQueueError",
    "Status",
    "Subscription",
    "async_connection_pool",
    "connection_pool",
]
__version__ = "0.1.0"
