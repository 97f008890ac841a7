"""stacker-queue: Stacker's command pipeline inside PostgreSQL."""

from .migrate import Installer, MigrateReport, Status
from .templates import DEFAULT_SCHEMA, Renderer

__all__ = ["DEFAULT_SCHEMA", "Installer", "MigrateReport", "Renderer", "Status"]
__version__ = "0.1.0"
