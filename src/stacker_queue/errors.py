"""Exceptions of stacker-queue, chosen by the SQLSTATE the database raised.

| class              | SQLSTATE                                              |
|--------------------|-------------------------------------------------------|
| ``InvalidInput``   | 22023 and every other class-22 data exception; also   |
|                    | psycopg's client-side ``DataError`` (NUL characters)  |
| ``NotFound``       | P0002 (no_data_found: unknown command)                |
| ``Conflict``       | 55000 (state conflict), 23505 (duplicate id or key)   |
| ``PermissionDenied`` | 42501 (wrong agent or role)                         |

Every one carries the database's message (``str(exc)`` and ``.message``), its
``sqlstate``, ``detail`` and ``hint``, and the psycopg error as ``__cause__``.
Other database errors (connection failures, an uninstalled schema, ...) are
not translated: they propagate as the psycopg exceptions they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class StackerQueueError(Exception):
    """Base class of every error stacker-queue raises for a rejected call."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


class InvalidInput(StackerQueueError):
    """An argument was rejected (SQLSTATE 22023 or another class-22 data exception)."""


class NotFound(StackerQueueError):
    """The command does not exist (SQLSTATE P0002)."""


class Conflict(StackerQueueError):
    """The command's state forbids the call (55000), or a duplicate id or key (23505)."""


class PermissionDenied(StackerQueueError):
    """Not the deployment's registered agent, or the role may not call this (42501)."""


_BY_SQLSTATE: dict[str, type[StackerQueueError]] = {
    "P0002": NotFound,
    "55000": Conflict,
    "23505": Conflict,
    "42501": PermissionDenied,
}


def error_class(sqlstate: str | None) -> type[StackerQueueError] | None:
    """The exception class for a SQLSTATE, or None when it is not translated."""
    if sqlstate is None:
        return None
    if sqlstate in _BY_SQLSTATE:
        return _BY_SQLSTATE[sqlstate]
    if sqlstate.startswith("22"):
        return InvalidInput
    return None


def translate(exc: psycopg.Error) -> StackerQueueError | None:
    """The stacker-queue exception for a psycopg error (None: leave it as it is)."""
    diag = exc.diag
    cls = error_class(exc.sqlstate)
    if cls is None and isinstance(exc, psycopg.DataError) and exc.sqlstate is None:
        # Raised by psycopg itself before anything is sent, e.g. a NUL character
        # in a text argument ("PostgreSQL text fields cannot contain NUL bytes").
        cls = InvalidInput
    if cls is None:
        return None
    message = diag.message_primary or str(exc).strip().splitlines()[0]
    return cls(message, sqlstate=exc.sqlstate, detail=diag.message_detail, hint=diag.message_hint)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Re-raise psycopg errors with a known SQLSTATE as stacker-queue exceptions."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
