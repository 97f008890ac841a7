"""The statements the wrappers send: one stored-function call each.

Arguments are passed by name (``p_x => $1::type``) and only when given, so the
function's own defaults apply; every argument is cast to the declared type.

Values PostgreSQL cannot take at all are refused here, before anything is
sent, as InvalidInput (22023) naming the argument and the value: an integer
outside PostgreSQL's ``integer`` range or with a fraction (the cast would fail
with a bare "integer out of range", or round), a NUL character in a text
argument or in a JSON string (text cannot hold one). Everything else is for
the stored function to judge.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, LiteralString
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from .errors import InvalidInput
from .templates import validate_schema_name

SET_ACTOR = sql.SQL("SELECT pg_catalog.set_config('stacker.actor', %s, true)")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


json_dumps = partial(json.dumps, default=_json_default)


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=json_dumps)


@dataclass(frozen=True)
class Arg:
    """One named argument: its SQL type and value.

    None leaves an optional argument to the function's default; a required
    one is sent as NULL, for the function to reject with its own message.
    """

    pgtype: LiteralString
    value: Any
    required: bool = False


@dataclass(frozen=True)
class Call:
    query: sql.Composed
    params: list[Any]
    function: str


INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1

#: The casts name pg_catalog's types: a type of the same name in a schema
#: earlier in the caller's search_path (a domain whose CHECK runs code, say)
#: must never be picked.
QUALIFIED_TYPES: dict[str, LiteralString] = {
    "text": "pg_catalog.text",
    "jsonb": "pg_catalog.jsonb",
    "integer": "pg_catalog.int4",
    "uuid": "pg_catalog.uuid",
    "timestamptz": "pg_catalog.timestamptz",
    "interval": "pg_catalog.interval",
}


def show(value: Any) -> str:
    """A value in an error message, cut short (with its length) when long."""
    text = repr(value)
    if len(text) > 64:
        return f"{text[:48]}... ({len(text)} characters)"
    return text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def check_arg(name: str, arg: Arg) -> None:
    """Refuse a value PostgreSQL cannot take as the argument's type (22023)."""
    value = arg.value
    problem = None
    if value is None or isinstance(value, bool):
        return
    if arg.pgtype == "integer" and isinstance(value, int | float | Decimal):
        if value != value or value in (float("inf"), float("-inf")) or value % 1 != 0:
            problem = "must be a whole number"
        elif not INTEGER_MIN <= value <= INTEGER_MAX:
            problem = f"out of range for an integer argument ({INTEGER_MIN} to {INTEGER_MAX})"
    elif arg.pgtype == "text" and isinstance(value, str) and "\x00" in value:
        problem = "PostgreSQL text cannot contain NUL (0x00) characters"
    elif arg.pgtype == "jsonb" and _has_nul(value):
        problem = "PostgreSQL JSON strings cannot contain NUL (\\u0000) characters"
    if problem is not None:
        raise InvalidInput(f"invalid {name} {show(value)}: {problem}", sqlstate="22023")


@lru_cache(maxsize=1024)
def _call_query(
    schema: str, function: str, args: tuple[tuple[str, LiteralString], ...]
) -> sql.Composed:
    """The statement for these argument names and types, composed once: every
    call of the wrappers goes through here, and composing it took ~20 us."""
    parts = [
        sql.SQL("{} => %s::{}").format(
            sql.Identifier(f"p_{name}"), sql.SQL(QUALIFIED_TYPES.get(pgtype, pgtype))
        )
        for name, pgtype in args
    ]
    return sql.SQL("SELECT * FROM {}.{}({})").format(
        sql.Identifier(schema), sql.Identifier(function), sql.SQL(", ").join(parts)
    )


def function_call(schema: str, function: str, args: Mapping[str, Arg]) -> Call:
    """``SELECT * FROM "schema".function(p_a => %s::t, ...)`` for the given arguments."""
    signature: list[tuple[str, LiteralString]] = []
    params: list[Any] = []
    for name, arg in args.items():
        if arg.value is None and not arg.required:
            continue
        check_arg(name, arg)
        signature.append((name, arg.pgtype))
        is_json = arg.pgtype == "jsonb" and arg.value is not None
        params.append(jsonb(arg.value) if is_json else arg.value)
    return Call(_call_query(schema, function, tuple(signature)), params, function)


def stats_query(schema: str, deployment_hash: str | None) -> Call:
    where = (
        sql.SQL(" WHERE deployment_hash OPERATOR(pg_catalog.=) %s::pg_catalog.text")
        if deployment_hash is not None
        else sql.SQL("")
    )
    query = sql.SQL("SELECT * FROM {}.queue_stats{} ORDER BY deployment_hash").format(
        sql.Identifier(schema), where
    )
    return Call(query, [deployment_hash] if deployment_hash is not None else [], "queue_stats")


def check_schema(schema: str) -> str:
    try:
        return validate_schema_name(schema)
    except ValueError as exc:
        raise InvalidInput(str(exc), sqlstate="22023") from None


def new_command_id() -> str:
    """A public command id in Stacker's form, ``cmd_<uuid>``.

    The wrapper names a new command before sending it, as Stacker's API does,
    so that "Attempting to add command {id}" can name it.
    """
    return f"cmd_{uuid.uuid4()}"


def channel(schema: str) -> str:
    """The NOTIFY channel that wakes the agents of a schema."""
    return f"{schema}_commands"


def short_list(items: list[str], limit: int = 10) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"
