"""Bad input, at the SQL level and through the Python wrapper: every function
of the contract gets nulls for each argument, wrong JSON types, over-long
strings, infinite and far-away timestamps, NUL characters, unicode, injection
strings, huge arrays, zero, negative and out-of-range sizes.

Each case must fail with the contract's SQLSTATE (22023 invalid input), a
message naming the offending value, and change nothing: every table of the
schema is compared (row count and md5 of its rows) before and after.

The one place the SQL level cannot answer 22023 is a value PostgreSQL itself
cannot represent: a NUL byte in text (22021) or ``\\u0000`` in jsonb (22P05)
is refused by the type's input function before any stored function runs.
Those cases expect PostgreSQL's own class-22 code at the SQL level; the
wrapper checks for them before sending and raises InvalidInput with 22023,
naming the argument (docs/reliability.md, "Bad input").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import Database
from reliability_helpers import scratch_database, table_snapshot, write_figures

from stacker_queue import Agent, Client, InvalidInput

AGENT = "00000000-0000-4000-8000-00000000bad1"
DEP = "dep-bad"
INJECTION = "x'); DELETE FROM stacker.commands; --"
LONG_UNICODE_HASH = "é" * 129  # 129 characters (258 bytes): characters are what count


@dataclass(frozen=True)
class Case:
    id: str
    function: str
    statement: str
    sqlstate: str
    shows: str  # what the message must contain: the offending value as shown


def text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def jsonb(value: Any) -> str:
    return text(json.dumps(value)) + "::jsonb"


def c(function: str, case_id: str, args: str, sqlstate: str, shows: str) -> Case:
    return Case(
        f"{function}:{case_id}",
        function,
        f"SELECT * FROM stacker.{function}({args})",
        sqlstate,
        shows,
    )


def long(n: int, ch: str = "x") -> str:
    return ch * n


def shown(value: str) -> str:
    """How the functions show a value (the show macro of sql/_macros.sql): quoted,
    and cut to its first 48 characters and its length when over 64."""
    if len(value) > 64:
        return text(value[:48] + "...") + f" ({len(value)} characters)"
    return text(value)


def shown_long(n: int, ch: str = "x") -> str:
    return shown(ch * n)


BIG_PARAMETERS = {"blob": "y" * (1024 * 1024)}
HUGE_BATCH = [{"deployment_hash": DEP, "command_type": "health"}] * 10001

CASES: list[Case] = [
    # create_command ------------------------------------------------------------------------
    c("create_command", "hash-null", "NULL, 'health'", "22023", "deployment_hash NULL"),
    c("create_command", "hash-empty", "'', 'health'", "22023", "deployment_hash ''"),
    c("create_command", "hash-129", f"{text(long(129))}, 'health'", "22023", shown_long(129)),
    c(
        "create_command",
        "hash-129-unicode",
        f"{text(LONG_UNICODE_HASH)}, 'health'",
        "22023",
        shown_long(129, "é"),
    ),
    c("create_command", "hash-nul", "E'dep\\x00x', 'health'", "22021", "0x00"),
    c("create_command", "type-null", f"'{DEP}', NULL", "22023", "command_type NULL"),
    c("create_command", "type-101", f"'{DEP}', {text(long(101))}", "22023", shown_long(101)),
    c(
        "create_command",
        "parameters-array",
        f"'{DEP}', 'health', '[1, 2]'",
        "22023",
        "parameters '[1, 2]'",
    ),
    c(
        "create_command",
        "parameters-string",
        f"'{DEP}', 'health', '\"fastapi\"'",
        "22023",
        "parameters '\"fastapi\"'",
    ),
    c(
        "create_command",
        "parameters-number",
        f"'{DEP}', 'health', '42'",
        "22023",
        "parameters '42'",
    ),
    c(
        "create_command",
        "parameters-json-null",
        f"'{DEP}', 'health', 'null'",
        "22023",
        "parameters 'null'",
    ),
    c(
        "create_command",
        "parameters-sql-null",
        f"'{DEP}', 'health', NULL",
        "22023",
        "parameters NULL",
    ),
    c(
        "create_command",
        "parameters-over-1MiB",
        f"'{DEP}', 'health', {jsonb(BIG_PARAMETERS)}",
        "22023",
        "over the 1 MiB limit",
    ),
    c(
        "create_command",
        "parameters-nul",
        f"'{DEP}', 'health', '{{\"a\": \"\\u0000\"}}'",
        "22P05",
        "\\u0000",
    ),
    c(
        "create_command",
        "priority-unknown",
        f"'{DEP}', 'health', p_priority => 'urgent'",
        "22023",
        "priority 'urgent'",
    ),
    c(
        "create_command",
        "priority-injection",
        f"'{DEP}', 'health', p_priority => {text(INJECTION)}",
        "22023",
        "priority 'x''); DELETE FROM stacker.commands; --'",
    ),
    c(
        "create_command",
        "priority-null",
        f"'{DEP}', 'health', p_priority => NULL",
        "22023",
        "priority NULL",
    ),
    c(
        "create_command",
        "created_by-256",
        f"'{DEP}', 'health', p_created_by => {text(long(256))}",
        "22023",
        shown_long(256),
    ),
    c(
        "create_command",
        "idempotency_key-empty",
        f"'{DEP}', 'health', p_idempotency_key => ''",
        "22023",
        "idempotency_key ''",
    ),
    c(
        "create_command",
        "idempotency_key-256",
        f"'{DEP}', 'health', p_idempotency_key => {text(long(256))}",
        "22023",
        shown_long(256),
    ),
    c(
        "create_command",
        "timeout-zero",
        f"'{DEP}', 'health', p_timeout_seconds => 0",
        "22023",
        "timeout_seconds '0'",
    ),
    c(
        "create_command",
        "timeout-negative",
        f"'{DEP}', 'health', p_timeout_seconds => -1",
        "22023",
        "timeout_seconds '-1'",
    ),
    c(
        "create_command",
        "timeout-over-a-week",
        f"'{DEP}', 'health', p_timeout_seconds => 604801",
        "22023",
        "timeout_seconds '604801'",
    ),
    c(
        "create_command",
        "timeout-int-max",
        f"'{DEP}', 'health', p_timeout_seconds => 2147483647",
        "22023",
        "timeout_seconds '2147483647'",
    ),
    c(
        "create_command",
        "timeout-null",
        f"'{DEP}', 'health', p_timeout_seconds => NULL",
        "22023",
        "timeout_seconds NULL",
    ),
    c(
        "create_command",
        "scheduled-infinity",
        f"'{DEP}', 'health', p_scheduled_for => 'infinity'",
        "22023",
        "scheduled_for 'infinity'",
    ),
    c(
        "create_command",
        "scheduled-minus-infinity",
        f"'{DEP}', 'health', p_scheduled_for => '-infinity'",
        "22023",
        "scheduled_for '-infinity'",
    ),
    c(
        "create_command",
        "scheduled-far-past",
        f"'{DEP}', 'health', p_scheduled_for => '1900-01-01 00:00+00'",
        "22023",
        "scheduled_for '1900-01-01",
    ),
    c(
        "create_command",
        "scheduled-far-future",
        f"'{DEP}', 'health', p_scheduled_for => '3000-01-01 00:00+00'",
        "22023",
        "scheduled_for '3000-01-01",
    ),
    c(
        "create_command",
        "max_attempts-zero",
        f"'{DEP}', 'health', p_max_attempts => 0",
        "22023",
        "max_attempts '0'",
    ),
    c(
        "create_command",
        "max_attempts-101",
        f"'{DEP}', 'health', p_max_attempts => 101",
        "22023",
        "max_attempts '101'",
    ),
    c(
        "create_command",
        "max_attempts-null",
        f"'{DEP}', 'health', p_max_attempts => NULL",
        "22023",
        "max_attempts NULL",
    ),
    c(
        "create_command",
        "command_id-empty",
        f"'{DEP}', 'health', p_command_id => ''",
        "22023",
        "command_id ''",
    ),
    c(
        "create_command",
        "command_id-65",
        f"'{DEP}', 'health', p_command_id => {text(long(65))}",
        "22023",
        shown_long(65),
    ),
    c(
        "create_command",
        "command_id-injection-65",
        f"'{DEP}', 'health', p_command_id => {text(INJECTION * 2)}",
        "22023",
        "command_id " + shown(INJECTION * 2),
    ),
    c(
        "create_command",
        "metadata-array",
        f"'{DEP}', 'health', p_metadata => '[]'",
        "22023",
        "metadata '[]'",
    ),
    c(
        "create_command",
        "metadata-null",
        f"'{DEP}', 'health', p_metadata => NULL",
        "22023",
        "metadata NULL",
    ),
    # create_commands -----------------------------------------------------------------------
    c("create_commands", "null", "NULL", "22023", "commands NULL"),
    c(
        "create_commands",
        "object",
        jsonb({"deployment_hash": DEP}),
        "22023",
        'commands \'{"deployment_hash": "dep-bad"}\'',
    ),
    c("create_commands", "empty-array", "'[]'", "22023", "0 elements"),
    c("create_commands", "huge-array-10001", jsonb(HUGE_BATCH), "22023", "10001 elements"),
    c("create_commands", "element-number", "'[1]'", "22023", "commands[0] '1'"),
    c(
        "create_commands",
        "unknown-key",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "drop": "table"}]),
        "22023",
        "has an unknown key 'drop'",
    ),
    c(
        "create_commands",
        "missing-hash",
        jsonb([{"command_type": "x"}]),
        "22023",
        "commands[0] deployment_hash NULL",
    ),
    c(
        "create_commands",
        "second-element-bad",
        jsonb(
            [
                {"deployment_hash": DEP, "command_type": "x"},
                {"deployment_hash": DEP, "command_type": ""},
            ]
        ),
        "22023",
        "commands[1] command_type ''",
    ),
    c(
        "create_commands",
        "timeout-fraction",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "timeout_seconds": 1.5}]),
        "22023",
        "timeout_seconds '1.5'",
    ),
    c(
        "create_commands",
        "timeout-string",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "timeout_seconds": "300"}]),
        "22023",
        "timeout_seconds '300'",
    ),
    c(
        "create_commands",
        "timeout-huge",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "timeout_seconds": 1e300}]),
        "22023",
        "timeout_seconds " + shown("1" + "0" * 300),
    ),
    c(
        "create_commands",
        "scheduled-infinity",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "scheduled_for": "infinity"}]),
        "22023",
        "scheduled_for 'infinity'",
    ),
    c(
        "create_commands",
        "scheduled-garbage",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "scheduled_for": "next tuesday"}]),
        "22023",
        "scheduled_for 'next tuesday'",
    ),
    c(
        "create_commands",
        "max_attempts-negative",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "max_attempts": -3}]),
        "22023",
        "max_attempts '-3'",
    ),
    c(
        "create_commands",
        "priority-number",
        jsonb([{"deployment_hash": DEP, "command_type": "x", "priority": 3}]),
        "22023",
        "priority '3'",
    ),
    c(
        "create_commands",
        "parameters-nul",
        '\'[{"deployment_hash": "d", "command_type": "x", "parameters": {"a": "\\u0000"}}]\'',
        "22P05",
        "\\u0000",
    ),
    # register_agent ------------------------------------------------------------------------
    c("register_agent", "hash-null", "NULL", "22023", "deployment_hash NULL"),
    c("register_agent", "hash-129", text(long(129)), "22023", shown_long(129)),
    c("register_agent", "version-51", f"'{DEP}', NULL, {text(long(51))}", "22023", shown_long(51)),
    c(
        "register_agent",
        "capabilities-object",
        f"'{DEP}', NULL, NULL, '{{}}'",
        "22023",
        "capabilities '{}'",
    ),
    c(
        "register_agent",
        "capabilities-null",
        f"'{DEP}', NULL, NULL, NULL",
        "22023",
        "capabilities NULL",
    ),
    c(
        "register_agent",
        "system_info-array",
        f"'{DEP}', NULL, NULL, '[]', '[]'",
        "22023",
        "system_info '[]'",
    ),
    # claim_commands ------------------------------------------------------------------------
    c("claim_commands", "limit-zero", f"'{DEP}', '{AGENT}', 0", "22023", "limit '0'"),
    c("claim_commands", "limit-negative", f"'{DEP}', '{AGENT}', -5", "22023", "limit '-5'"),
    c("claim_commands", "limit-1001", f"'{DEP}', '{AGENT}', 1001", "22023", "limit '1001'"),
    c("claim_commands", "limit-null", f"'{DEP}', '{AGENT}', NULL", "22023", "limit NULL"),
    c("claim_commands", "lease-zero", f"'{DEP}', '{AGENT}', 1, 0", "22023", "lease_seconds '0'"),
    c(
        "claim_commands",
        "lease-over-a-week",
        f"'{DEP}', '{AGENT}', 1, 604801",
        "22023",
        "lease_seconds '604801'",
    ),
    c("claim_commands", "agent-null", f"'{DEP}', NULL", "22023", "agent_id NULL"),
    c("claim_commands", "hash-empty", f"'', '{AGENT}'", "22023", "deployment_hash ''"),
    c("claim_commands", "hash-null", f"NULL, '{AGENT}'", "22023", "deployment_hash NULL"),
    # start_command -------------------------------------------------------------------------
    c("start_command", "id-null", f"NULL, '{AGENT}'", "22023", "command_id NULL"),
    c("start_command", "id-empty", f"'', '{AGENT}'", "22023", "command_id ''"),
    c("start_command", "id-65", f"{text(long(65))}, '{AGENT}'", "22023", shown_long(65)),
    c("start_command", "agent-null", "'cmd-sent', NULL", "22023", "agent_id NULL"),
    # extend_lease --------------------------------------------------------------------------
    c("extend_lease", "lease-zero", f"'cmd-sent', '{AGENT}', 0", "22023", "lease_seconds '0'"),
    c(
        "extend_lease",
        "lease-negative",
        f"'cmd-sent', '{AGENT}', -60",
        "22023",
        "lease_seconds '-60'",
    ),
    c(
        "extend_lease",
        "lease-over-a-week",
        f"'cmd-sent', '{AGENT}', 604801",
        "22023",
        "lease_seconds '604801'",
    ),
    c("extend_lease", "id-null", f"NULL, '{AGENT}'", "22023", "command_id NULL"),
    c("extend_lease", "agent-null", "'cmd-sent', NULL, 60", "22023", "agent_id NULL"),
    # report_result -------------------------------------------------------------------------
    c(
        "report_result",
        "status-unknown",
        f"'cmd-sent', '{AGENT}', 'done'",
        "22023",
        "status 'done'",
    ),
    c("report_result", "status-null", f"'cmd-sent', '{AGENT}', NULL", "22023", "status NULL"),
    c(
        "report_result",
        "status-injection",
        f"'cmd-sent', '{AGENT}', {text(INJECTION)}",
        "22023",
        "status 'x''); DELETE FROM stacker.commands; --'",
    ),
    c(
        "report_result",
        "status-cancelled",
        f"'cmd-sent', '{AGENT}', 'cancelled'",
        "22023",
        "status 'cancelled'",
    ),
    c("report_result", "id-null", f"NULL, '{AGENT}', 'completed'", "22023", "command_id NULL"),
    c(
        "report_result",
        "id-65",
        f"{text(long(65))}, '{AGENT}', 'completed'",
        "22023",
        shown_long(65),
    ),
    c("report_result", "agent-null", "'cmd-sent', NULL, 'completed'", "22023", "agent_id NULL"),
    # cancel_command ------------------------------------------------------------------------
    c("cancel_command", "id-null", "NULL", "22023", "command_id NULL"),
    c("cancel_command", "id-empty", "''", "22023", "command_id ''"),
    c(
        "cancel_command",
        "reason-1001",
        f"'cmd-queued', {text(long(1001))}",
        "22023",
        shown_long(1001),
    ),
    c(
        "cancel_command",
        "cancelled_by-256",
        f"'cmd-queued', NULL, {text(long(256))}",
        "22023",
        shown_long(256),
    ),
    # update_app_status ---------------------------------------------------------------------
    c("update_app_status", "status-ok", f"'{DEP}', 'web', 'ok'", "22023", "status 'ok'"),
    c("update_app_status", "status-null", f"'{DEP}', 'web', NULL", "22023", "status NULL"),
    c(
        "update_app_status",
        "logs-object",
        f"'{DEP}', 'web', 'running', '{{}}'",
        "22023",
        "logs '{}'",
    ),
    c(
        "update_app_status",
        "logs-numbers",
        f"'{DEP}', 'web', 'running', '[1, 2]'",
        "22023",
        "logs '[1, 2]'",
    ),
    c("update_app_status", "logs-null", f"'{DEP}', 'web', 'running', NULL", "22023", "logs NULL"),
    c(
        "update_app_status",
        "checked-infinity",
        f"'{DEP}', 'web', 'running', '[]', 'infinity'",
        "22023",
        "checked_at 'infinity'",
    ),
    c(
        "update_app_status",
        "checked-minus-infinity",
        f"'{DEP}', 'web', 'running', '[]', '-infinity'",
        "22023",
        "checked_at '-infinity'",
    ),
    c(
        "update_app_status",
        "checked-far-future",
        f"'{DEP}', 'web', 'running', '[]', '3000-01-01 00:00+00'",
        "22023",
        "checked_at '3000-01-01",
    ),
    c(
        "update_app_status",
        "checked-null",
        f"'{DEP}', 'web', 'running', '[]', NULL",
        "22023",
        "checked_at NULL",
    ),
    c(
        "update_app_status",
        "app_code-256",
        f"'{DEP}', {text(long(256))}, 'running'",
        "22023",
        shown_long(256),
    ),
    c("update_app_status", "app_code-null", f"'{DEP}', NULL, 'running'", "22023", "app_code NULL"),
    c(
        "update_app_status",
        "command_id-65",
        f"'{DEP}', 'web', 'running', '[]', now(), {text(long(65))}",
        "22023",
        shown_long(65),
    ),
    c("update_app_status", "hash-null", "NULL, 'web', 'running'", "22023", "deployment_hash NULL"),
    # get_app_status, get_command, list_commands --------------------------------------------
    c("get_app_status", "hash-null", "NULL", "22023", "deployment_hash NULL"),
    c("get_app_status", "hash-empty", "''", "22023", "deployment_hash ''"),
    c("get_app_status", "hash-129", text(long(129)), "22023", shown_long(129)),
    c("get_command", "id-null", "NULL", "22023", "command_id NULL"),
    c("get_command", "id-empty", "''", "22023", "command_id ''"),
    c("get_command", "id-65-unicode", text(long(65, "☃")), "22023", shown_long(65, "☃")),
    c("list_commands", "status-unknown", f"'{DEP}', 'bogus'", "22023", "status 'bogus'"),
    c("list_commands", "limit-zero", f"'{DEP}', NULL, 0", "22023", "limit '0'"),
    c("list_commands", "limit-10001", f"'{DEP}', NULL, 10001", "22023", "limit '10001'"),
    c("list_commands", "limit-null", f"'{DEP}', NULL, NULL", "22023", "limit NULL"),
    c("list_commands", "hash-null", "NULL", "22023", "deployment_hash NULL"),
    # cleanup, purge_audit_log (requeue_expired takes no argument) ---------------------------
    c("cleanup", "ttl-null", "NULL", "22023", "queue_ttl NULL"),
    c("cleanup", "ttl-zero", "'0'", "22023", "queue_ttl '00:00:00'"),
    c("cleanup", "ttl-negative", "'-1 hour'", "22023", "queue_ttl '-01:00:00'"),
    c("cleanup", "ttl-10000-years", "'10000 years'", "22023", "queue_ttl '10000 years'"),
    c("cleanup", "retention-zero", "'48 hours', '0'", "22023", "retention '00:00:00'"),
    c("cleanup", "retention-negative", "'48 hours', '-5 days'", "22023", "retention '-5 days'"),
    c(
        "cleanup",
        "retention-10000-years",
        "'48 hours', '10000 years'",
        "22023",
        "retention '10000 years'",
    ),
    c("purge_audit_log", "null", "NULL", "22023", "older_than NULL"),
    c("purge_audit_log", "one-hour", "'1 hour'", "22023", "older_than '01:00:00'"),
    c("purge_audit_log", "negative", "'-30 days'", "22023", "older_than '-30 days'"),
    c("purge_audit_log", "10000-years", "'10000 years'", "22023", "older_than '10000 years'"),
]

#: Every function of the contract that takes an argument has cases.
CONTRACT_FUNCTIONS = {
    "create_command",
    "create_commands",
    "register_agent",
    "claim_commands",
    "start_command",
    "extend_lease",
    "report_result",
    "cancel_command",
    "update_app_status",
    "get_app_status",
    "get_command",
    "list_commands",
    "cleanup",
    "purge_audit_log",
}
# Representation errors PostgreSQL raises before any stored function runs.
BEFORE_ANY_FUNCTION = {"22021", "22P05"}


@pytest.fixture(scope="module")
def bad_db(pg_server: Any) -> Iterator[Database]:
    """One database for every case (they change nothing), with rows in every
    table: an agent, commands in each status, app status, audit rows."""
    with scratch_database(pg_server, "sq5_bad") as database:
        conn = database.connect()
        conn.execute("SELECT stacker.register_agent(%s, %s)", [DEP, AGENT])
        create = (
            "SELECT stacker.create_command(%s, 'health', '{\"app_code\": \"web\"}', "
            "p_command_id => %s)"
        )
        for cid in ("cmd-sent", "cmd-done", "cmd-cancelled"):
            conn.execute(create, [DEP, cid])
        conn.execute("SELECT stacker.claim_commands(%s, %s, 3)", [DEP, AGENT])
        conn.execute(create, [DEP, "cmd-queued"])
        conn.execute(
            "SELECT stacker.report_result('cmd-done', %s, 'completed', "
            '\'{"app_code": "web", "status": "running"}\')',
            [AGENT],
        )
        conn.execute("SELECT stacker.cancel_command('cmd-cancelled')")
        conn.execute("SELECT stacker.update_app_status(%s, 'db', 'stopped')", [DEP])
        statuses = dict(conn.execute("SELECT command_id, status FROM stacker.commands").fetchall())
        assert statuses == {
            "cmd-queued": "queued",
            "cmd-sent": "sent",
            "cmd-done": "completed",
            "cmd-cancelled": "cancelled",
        }
        yield database


def test_the_cases_cover_every_function_and_are_many() -> None:
    assert {case.function for case in CASES} == CONTRACT_FUNCTIONS
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    write_figures(
        "bad_input",
        {
            "sql_cases": len(CASES),
            "wrapper_cases": len(WRAPPER_CASES),
            "functions": len(CONTRACT_FUNCTIONS),
            "sqlstates": sorted({case.sqlstate for case in CASES}),
        },
    )


@pytest.fixture(scope="module")
def bad_conn(bad_db: Database) -> psycopg.Connection[Any]:
    return bad_db.connect()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_sql_level(bad_conn: psycopg.Connection[Any], case: Case) -> None:
    conn = bad_conn
    before = table_snapshot(conn)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(case.statement).fetchall()
    err = info.value
    message = err.diag.message_primary or ""
    detail = " ".join(filter(None, [message, err.diag.message_detail, err.diag.context]))
    assert err.sqlstate == case.sqlstate, (err.sqlstate, message)
    if case.sqlstate in BEFORE_ANY_FUNCTION:
        # PostgreSQL names the offending character itself, and no function ran.
        assert case.shows in detail, detail
        assert "PL/pgSQL function" not in (err.diag.context or "")
    else:
        assert case.shows in message, message
        assert f"PL/pgSQL function stacker.{case.function}" in (err.diag.context or "")
    assert table_snapshot(conn) == before


def test_injection_strings_accepted_as_data_are_only_data(
    bad_conn: psycopg.Connection[Any],
) -> None:
    """A well-formed value that looks like SQL is stored verbatim and harms nothing."""
    conn = bad_conn
    conn.execute("BEGIN")
    try:
        before = conn.execute("SELECT count(*) FROM stacker.commands").fetchone()
        row = conn.execute(
            "SELECT deployment_hash, type, created_by FROM stacker.create_command(%s, %s, "
            "p_created_by => %s)",
            [INJECTION, "'; DROP TABLE stacker.audit_log; --", "Robert'); DROP TABLE x;--"],
        ).fetchone()
        assert row == (
            INJECTION,
            "'; DROP TABLE stacker.audit_log; --",
            "Robert'); DROP TABLE x;--",
        )
        after = conn.execute("SELECT count(*) FROM stacker.commands").fetchone()
        assert before is not None and after == (before[0] + 1,)
        assert conn.execute("SELECT to_regclass('stacker.audit_log') IS NOT NULL").fetchone() == (
            True,
        )
        # ... and unicode of every width is counted in characters, not bytes.
        for value in ("é" * 128, "☃" * 128, "\U0001f600" * 128):
            row = conn.execute(
                "SELECT length(deployment_hash) FROM stacker.create_command(%s, 'health')",
                [value],
            ).fetchone()
            assert row == (128,)
    finally:
        conn.execute("ROLLBACK")


# -- through the wrapper ----------------------------------------------------------------------
@dataclass(frozen=True)
class WrapperCase:
    id: str
    call: Callable[[Client, Agent], Any]
    shows: str


def _far(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


WRAPPER_CASES: list[WrapperCase] = [
    WrapperCase(
        "hash-nul",
        lambda cl, ag: cl.create_command("dep\x00x", "health"),
        "deployment_hash 'dep\\x00x'",
    ),
    WrapperCase(
        "type-nul",
        lambda cl, ag: cl.create_command(DEP, "he\x00alth"),
        "command_type 'he\\x00alth'",
    ),
    WrapperCase(
        "parameters-nul",
        lambda cl, ag: cl.create_command(DEP, "health", {"app": ["ok", "b\x00d"]}),
        "parameters {'app': ['ok', 'b\\x00d']}",
    ),
    WrapperCase(
        "parameters-key-nul",
        lambda cl, ag: cl.create_command(DEP, "health", {"k\x00": 1}),
        "parameters {'k\\x00': 1}",
    ),
    WrapperCase(
        "metadata-nul",
        lambda cl, ag: cl.create_command(DEP, "health", metadata={"m": "\x00"}),
        "metadata {'m': '\\x00'}",
    ),
    WrapperCase(
        "timeout-10**12",
        lambda cl, ag: cl.create_command(DEP, "health", timeout_seconds=10**12),
        "timeout_seconds 1000000000000",
    ),
    WrapperCase(
        "timeout-minus-2**31-1",
        lambda cl, ag: cl.create_command(DEP, "health", timeout_seconds=-(2**31) - 1),
        "timeout_seconds -2147483649",
    ),
    WrapperCase(
        "timeout-fraction",
        lambda cl, ag: cl.create_command(DEP, "health", timeout_seconds=1.5),  # type: ignore[arg-type]
        "timeout_seconds 1.5",
    ),
    WrapperCase(
        "max_attempts-2**40",
        lambda cl, ag: cl.create_command(DEP, "health", max_attempts=2**40),
        "max_attempts 1099511627776",
    ),
    WrapperCase(
        "timeout-zero",
        lambda cl, ag: cl.create_command(DEP, "health", timeout_seconds=0),
        "timeout_seconds '0'",
    ),
    WrapperCase(
        "scheduled-far-future",
        lambda cl, ag: cl.create_command(DEP, "health", scheduled_for=_far(3650)),
        "scheduled_for '",
    ),
    WrapperCase(
        "priority-injection",
        lambda cl, ag: cl.create_command(DEP, "health", priority=INJECTION),
        "priority 'x''); DELETE",
    ),
    WrapperCase("batch-huge", lambda cl, ag: cl.create_commands(HUGE_BATCH), "10001 elements"),
    WrapperCase(
        "batch-nul",
        lambda cl, ag: cl.create_commands([{"deployment_hash": "d\x00", "command_type": "x"}]),
        "commands [{'deployment_hash': 'd\\x00'",
    ),
    WrapperCase(
        "list-limit-2**31", lambda cl, ag: cl.list_commands(DEP, limit=2**31), "limit 2147483648"
    ),
    WrapperCase("get-nul", lambda cl, ag: cl.get_command("cmd\x00"), "command_id 'cmd\\x00'"),
    WrapperCase(
        "cancel-reason-nul",
        lambda cl, ag: cl.cancel_command("cmd-queued", reason="a\x00"),
        "reason 'a\\x00'",
    ),
    WrapperCase(
        "app-status-logs-nul",
        lambda cl, ag: cl.update_app_status(DEP, "web", "running", ["fine", "\x00"]),
        "logs ['fine', '\\x00']",
    ),
    WrapperCase(
        "app-status-unknown",
        lambda cl, ag: cl.update_app_status(DEP, "web", "green"),
        "status 'green'",
    ),
    WrapperCase("claim-limit-10**12", lambda cl, ag: ag.claim(limit=10**12), "limit 1000000000000"),
    WrapperCase(
        "claim-lease-2**31",
        lambda cl, ag: ag.claim(lease_seconds=2**31),
        "lease_seconds 2147483648",
    ),
    WrapperCase(
        "extend-lease-10**10",
        lambda cl, ag: ag.extend_lease("cmd-sent", 10**10),
        "lease_seconds 10000000000",
    ),
    WrapperCase(
        "report-status-unknown",
        lambda cl, ag: ag.report_result("cmd-sent", "done"),
        "status 'done'",
    ),
    WrapperCase(
        "report-result-nul",
        lambda cl, ag: ag.report_result("cmd-sent", "completed", {"log": "\x00"}),
        "result {'log': '\\x00'}",
    ),
    WrapperCase("start-id-65", lambda cl, ag: ag.start("c" * 65), shown_long(65, "c")),
]


@pytest.fixture(scope="module")
def wrapper(bad_db: Database) -> Iterator[tuple[Client, Agent]]:
    with (
        Client.connect(bad_db.conninfo) as client,
        Agent.connect(bad_db.conninfo, DEP, AGENT, listen=False) as agent,
    ):
        yield client, agent


@pytest.mark.parametrize("case", WRAPPER_CASES, ids=[case.id for case in WRAPPER_CASES])
def test_wrapper_level(
    bad_conn: psycopg.Connection[Any], wrapper: tuple[Client, Agent], case: WrapperCase
) -> None:
    conn = bad_conn
    before = table_snapshot(conn)
    client, agent = wrapper
    with pytest.raises(InvalidInput) as info:
        case.call(client, agent)
    assert info.value.sqlstate == "22023", (info.value.sqlstate, info.value.message)
    assert case.shows in info.value.message, info.value.message
    assert table_snapshot(conn) == before
