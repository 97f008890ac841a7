"""Security: the role matrix with real logins, deployment isolation between
agents, SECURITY DEFINER and pinned search_path on every function, hostile
objects in a caller's search_path, and audit_log's append-only rule.

Complements tests/pgtap/030_roles_privileges.sql (catalog privileges of the
three roles and SET ROLE samples): here every function and every table of the
schema is exercised, as logins that are members of each role, plus a login
with none of them and the owner, and what each call does is checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from conftest import Database, admin_conninfo
from helpers_queue import new_hash
from psycopg import sql
from reliability_helpers import table_snapshot, unique, write_figures

from stacker_queue import Agent, Client, PermissionDenied, connection_pool

AGENT_M = "00000000-0000-4000-8000-0000000005a1"
ROLES = ("service", "agent", "readonly", "plain", "owner")
MEMBERSHIP = {
    "service": "stacker_service",
    "agent": "stacker_agent",
    "readonly": "stacker_readonly",
    "plain": None,
    "both": "stacker_service, stacker_agent",
}

# The contract's Roles section: who may EXECUTE which function. Functions not
# listed here and not private (a leading underscore) fail the matrix until
# they are listed: a new function needs a deliberate decision.
EXECUTE: dict[str, set[str]] = {
    "create_command": {"service"},
    "create_commands": {"service"},
    "cancel_command": {"service"},
    "get_command": {"service"},
    "list_commands": {"service"},
    "get_app_status": {"service"},
    "update_app_status": {"service", "agent"},
    "register_agent": {"agent"},
    "claim_commands": {"agent"},
    "start_command": {"agent"},
    "extend_lease": {"agent"},
    "report_result": {"agent"},
    "report_results": {"agent"},  # batch report (issue 6): "report" is the agent's
    "requeue_expired": set(),
    "cleanup": set(),
    "purge_audit_log": set(),
    "stacker_command_queue_cleanup": set(),  # Stacker's pg_cron job (adoption): owner only
}

# A valid call of each function, run in a transaction that is rolled back.
CALLS: dict[str, str] = {
    "create_command": "SELECT stacker.create_command('dep-m', 'health')",
    "create_commands": (
        'SELECT stacker.create_commands(\'[{"deployment_hash": "dep-m", "command_type": "x"}]\')'
    ),
    "cancel_command": "SELECT stacker.cancel_command('cmd-q')",
    "get_command": "SELECT stacker.get_command('cmd-q')",
    "list_commands": "SELECT * FROM stacker.list_commands('dep-m')",
    "get_app_status": "SELECT * FROM stacker.get_app_status('dep-m')",
    "update_app_status": "SELECT stacker.update_app_status('dep-m', 'web', 'running')",
    "register_agent": "SELECT stacker.register_agent('dep-m')",
    "claim_commands": f"SELECT * FROM stacker.claim_commands('dep-m', '{AGENT_M}')",
    "start_command": f"SELECT stacker.start_command('cmd-s', '{AGENT_M}')",
    "extend_lease": f"SELECT stacker.extend_lease('cmd-s', '{AGENT_M}', 60)",
    "report_result": f"SELECT stacker.report_result('cmd-e', '{AGENT_M}', 'completed')",
    "report_results": (
        f"SELECT * FROM stacker.report_results('{AGENT_M}', "
        '\'[{"command_id": "cmd-e", "status": "completed"}]\')'
    ),
    "requeue_expired": "SELECT stacker.requeue_expired()",
    "cleanup": "SELECT stacker.cleanup()",
    "purge_audit_log": "SELECT stacker.purge_audit_log('30 days')",
    "stacker_command_queue_cleanup": "SELECT stacker.stacker_command_queue_cleanup()",
}

# SELECT on these for stacker_service and stacker_readonly; nothing else for anyone.
READABLE = {"commands", "command_queue", "agents", "app_status", "audit_log", "queue_stats"}
TABLE_OPS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


def as_user(db: Database, user: str, **kwargs: Any) -> psycopg.Connection[Any]:
    conninfo = psycopg.conninfo.make_conninfo(db.conninfo, user=user)
    conn = psycopg.connect(conninfo, autocommit=True, **kwargs)
    db._conns.append(conn)
    return conn


@pytest.fixture(scope="module")
def logins(pg_server: Any) -> Iterator[dict[str, str]]:
    """Login roles (cluster-wide, named for this session): members of each
    contract role, of both service and agent, and of none."""
    names = {key: unique(f"sq5_{key}") for key in MEMBERSHIP}
    with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
        for key, name in names.items():
            member = MEMBERSHIP[key]
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN{}").format(
                    sql.Identifier(name), sql.SQL(f" IN ROLE {member}" if member else "")
                )
            )
    try:
        yield names
    finally:
        with psycopg.connect(admin_conninfo(pg_server), autocommit=True) as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def seed(conn: psycopg.Connection[Any]) -> None:
    """dep-m's agent, and a queued, a sent and an executing command."""
    conn.execute("SELECT stacker.register_agent('dep-m', %s)", [AGENT_M])
    for command_id in ("cmd-e", "cmd-s"):
        conn.execute(
            "SELECT stacker.create_command('dep-m', 'health', p_command_id => %s)", [command_id]
        )
        conn.execute("SELECT stacker.claim_commands('dep-m', %s)", [AGENT_M])
    conn.execute("SELECT stacker.start_command('cmd-e', %s)", [AGENT_M])
    conn.execute("SELECT stacker.create_command('dep-m', 'health', p_command_id => 'cmd-q')")
    conn.execute(
        "INSERT INTO stacker.audit_log (action, created_at, actor) "
        "VALUES ('test.old', now() - interval '40 days', 'test')"
    )


def attempt(conn: psycopg.Connection[Any], statement: str) -> str | None:
    """Run a statement in a transaction that is rolled back; its SQLSTATE or None."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    return None


def schema_functions(conn: psycopg.Connection[Any]) -> list[tuple[str, str, list[str]]]:
    """(name, identity arguments, argument types) of every function of the schema."""
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid), "
            "ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes) t) "
            "FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'stacker'::regnamespace "
            "ORDER BY 1, 2"
        ).fetchall()
    ]


def schema_relations(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c "
            "WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm') "
            "ORDER BY 1"
        ).fetchall()
    ]


def table_statement(op: str, table: str, first_column: str) -> str:
    t = f"stacker.{table}"
    return {
        "SELECT": f"SELECT * FROM {t} LIMIT 1",
        "INSERT": f"INSERT INTO {t} DEFAULT VALUES",
        "UPDATE": f"UPDATE {t} SET {first_column} = {first_column}",
        "DELETE": f"DELETE FROM {t}",
        "TRUNCATE": f"TRUNCATE {t}",
    }[op]


# -- the role matrix ------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(db: Database, logins: dict[str, str], role: str) -> None:
    owner = db.connect()
    seed(owner)
    conn = owner if role == "owner" else as_user(db, logins[role])
    before = table_snapshot(owner)
    wrong: list[str] = []
    checked = 0

    for name, args, arg_types in schema_functions(owner):
        private = name.startswith("_")
        if not private and name not in EXECUTE:
            wrong.append(f"{name}({args}) is not in the matrix: decide who may execute it")
            continue
        if role == "owner":
            if private:
                continue  # the owner may call its helpers; what they do is tested elsewhere
            allowed = True
        else:
            allowed = not private and role in EXECUTE[name]
        if private:
            nulls = ", ".join(f"NULL::{t}" for t in arg_types)
            statement = f"SELECT stacker.{name}({nulls})"
        else:
            statement = CALLS[name]
        state = attempt(conn, statement)
        checked += 1
        if allowed and state is not None:
            wrong.append(f"{role} may call {name} but got {state}")
        if not allowed and state != "42501":
            wrong.append(f"{role} may not call {name} but got {state or 'success'}")
        if role != "owner":
            catalog = conn.execute(
                "SELECT pg_catalog.has_function_privilege(current_user, p.oid, 'EXECUTE') "
                "FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'stacker'::regnamespace "
                "AND p.proname = %s AND pg_catalog.pg_get_function_identity_arguments(p.oid) = %s",
                [name, args],
            ).fetchone()
            if catalog != (allowed,):
                wrong.append(f"{role}: has_function_privilege on {name} is {catalog}")

    for table, kind in schema_relations(owner):
        first = owner.execute(
            "SELECT attname FROM pg_catalog.pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum = 1",
            [f"stacker.{table}"],
        ).fetchone()
        assert first is not None
        for op in TABLE_OPS:
            if kind == "v" and op != "SELECT":
                # Not updatable: PostgreSQL refuses before looking at privileges,
                # so the catalog answers for the privilege itself.
                if role != "owner":
                    oid = owner.execute("SELECT %s::regclass::oid", [f"stacker.{table}"]).fetchone()
                    assert oid is not None
                    granted = conn.execute(
                        "SELECT pg_catalog.has_table_privilege(current_user, %s::oid, %s)",
                        [oid[0], op],
                    ).fetchone()
                    checked += 1
                    if granted != (False,):
                        wrong.append(f"{role} holds {op} on view {table}")
                continue
            if role == "owner":
                allowed = not (table == "audit_log" and op in ("UPDATE", "DELETE", "TRUNCATE"))
            else:
                allowed = op == "SELECT" and table in READABLE and role in ("service", "readonly")
            state = attempt(conn, table_statement(op, table, sql.Identifier(first[0]).as_string()))
            checked += 1
            # The owner's allowed statements may still break a constraint
            # (NOT NULL, a TRUNCATE of a referenced table): anything but 42501.
            if allowed and (state == "42501" if role == "owner" else state is not None):
                wrong.append(f"{role} may {op} {table} but got {state}")
            if not allowed and state != "42501":
                wrong.append(f"{role} may not {op} {table} but got {state or 'success'}")

    # Nobody but the owner may create objects in the schema (a planted function
    # there would be found by every caller).
    state = attempt(conn, "CREATE TABLE stacker.sq5_planted (x int)")
    if role != "owner" and state != "42501":
        wrong.append(f"{role} may not CREATE in schema stacker but got {state or 'success'}")

    assert not wrong, "\n".join(map(str, wrong))
    assert table_snapshot(owner) == before, "a rolled-back attempt left a trace"
    write_figures(f"role_matrix_{role}", {"checks": checked})


# -- deployment isolation -------------------------------------------------------------------
def test_an_agent_never_touches_another_deployments_commands(
    db: Database, logins: dict[str, str]
) -> None:
    owner = db.connect()
    agent_a = "00000000-0000-4000-8000-00000000000a"
    agent_b = "00000000-0000-4000-8000-00000000000b"
    owner.execute("SELECT stacker.register_agent('dep-a', %s)", [agent_a])
    owner.execute("SELECT stacker.register_agent('dep-b', %s)", [agent_b])
    # dep-b's commands in every status; dep-a has one of its own, queued.
    for cid in ("b-exec", "b-sent", "b-done", "b-failed", "b-cancel", "b-queued"):
        owner.execute(
            "SELECT stacker.create_command('dep-b', 'restart', p_command_id => %s)", [cid]
        )
        if cid != "b-queued":
            owner.execute("SELECT stacker.claim_commands('dep-b', %s)", [agent_b])
    owner.execute("SELECT stacker.start_command('b-exec', %s)", [agent_b])
    owner.execute("SELECT stacker.report_result('b-done', %s, 'completed')", [agent_b])
    owner.execute("SELECT stacker.report_result('b-failed', %s, 'failed')", [agent_b])
    owner.execute("SELECT stacker.cancel_command('b-cancel')")
    owner.execute("SELECT stacker.create_command('dep-a', 'restart', p_command_id => 'a-1')")
    # b-sent's lease has run out: even a due redelivery is not A's to take.
    owner.execute(
        "UPDATE stacker.commands SET lease_expires_at = now() - interval '1 minute' "
        "WHERE command_id = 'b-sent'"
    )

    conn = as_user(db, logins["agent"])
    before = table_snapshot(owner)
    b_ids = ["b-exec", "b-sent", "b-done", "b-failed", "b-cancel", "b-queued"]
    attempts = [f"SELECT * FROM stacker.claim_commands('dep-b', '{agent_a}', 10)"]
    for cid in b_ids:
        attempts += [
            f"SELECT stacker.start_command('{cid}', '{agent_a}')",
            f"SELECT stacker.extend_lease('{cid}', '{agent_a}', 600)",
            f"SELECT stacker.report_result('{cid}', '{agent_a}', 'completed', '{{\"by\": \"a\"}}')",
            f"SELECT stacker.report_result('{cid}', '{agent_a}', 'failed')",
        ]
    refused = [(s, attempt(conn, s)) for s in attempts]
    assert [r for r in refused if r[1] != "42501"] == []
    # Nor can A take over dep-b's registration with its own id.
    assert attempt(conn, f"SELECT stacker.register_agent('dep-b', '{agent_a}')") == "23505"
    assert table_snapshot(owner) == before

    # Through the wrapper: PermissionDenied, and still nothing changed.
    conninfo = psycopg.conninfo.make_conninfo(db.conninfo, user=logins["agent"])
    with Agent.connect(conninfo, "dep-b", agent_a, listen=False) as impostor:
        with pytest.raises(PermissionDenied):
            impostor.claim(10)
        with pytest.raises(PermissionDenied):
            impostor.wait_for_commands(timeout=0)
        for cid in b_ids:
            for call in (impostor.start, impostor.extend_lease):
                with pytest.raises(PermissionDenied):
                    call(cid)
            with pytest.raises(PermissionDenied):
                impostor.report_result(cid, "completed", {"by": "a"})
    assert table_snapshot(owner) == before
    # A still works its own deployment.
    assert owner.execute(
        "SELECT command_id FROM stacker.claim_commands('dep-a', %s)", [agent_a]
    ).fetchall() == [("a-1",)]
    write_figures("deployment_isolation", {"refused_calls": len(refused) + 1 + 2 + 3 * len(b_ids)})


def test_agent_ids_are_bearer_credentials(db: Database, logins: dict[str, str]) -> None:
    """By the contract, registering a deployment again returns its agent id:
    any holder of stacker_agent can learn any deployment's id. Deployment
    isolation therefore rests on who holds stacker_agent (Stacker's service,
    which authenticates each agent with its bearer token), not on the id
    being secret. This test pins that documented behaviour."""
    owner = db.connect()
    agent_b = owner.execute("SELECT id FROM stacker.register_agent('dep-b')").fetchone()
    conn = as_user(db, logins["agent"])
    learned = conn.execute("SELECT id FROM stacker.register_agent('dep-b')").fetchone()
    assert learned == agent_b


# -- SECURITY DEFINER and the pinned search_path --------------------------------------------
#: Functions deliberately not SECURITY DEFINER with the pinned path: none.
NOT_DEFINER: set[str] = set()


def test_every_function_is_security_definer_with_a_pinned_search_path(db: Database) -> None:
    conn = db.connect()
    rows = conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig, l.lanname,
               p.proowner = n.nspowner AS owned_by_schema_owner
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'stacker'
        """
    ).fetchall()
    assert len(rows) >= 28
    wrong = []
    for signature, definer, config, language, owned in rows:
        name = signature.split("(")[0].removeprefix("stacker.")
        if name in NOT_DEFINER:
            continue
        if not definer:
            wrong.append((signature, "not SECURITY DEFINER"))
        if config != [
            "search_path=pg_catalog, pg_temp",
            "enable_seqscan=off",
            "plan_cache_mode=force_generic_plan",
        ]:
            wrong.append((signature, f"proconfig {config}"))
        if language not in ("plpgsql", "sql"):
            wrong.append((signature, f"language {language}"))
        if not owned:
            wrong.append((signature, "not owned by the schema's owner"))
    assert not wrong, "\n".join(map(str, wrong))
    write_figures("definer_catalog", {"functions": len(rows), "not_definer": sorted(NOT_DEFINER)})


# -- hostile objects in the caller's search_path --------------------------------------------
HOSTILE = r"""
CREATE SCHEMA hostile;
GRANT USAGE ON SCHEMA hostile TO PUBLIC;
CREATE SEQUENCE hostile.hits;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE hostile.hits TO PUBLIC;
CREATE FUNCTION hostile.hit() RETURNS boolean LANGUAGE plpgsql
    SET search_path = pg_catalog AS $$ BEGIN PERFORM nextval('hostile.hits'); RETURN true; END $$;

-- Tables named like ours, in the hostile schema and (per session) in pg_temp.
CREATE TABLE hostile.commands (LIKE stacker.commands);
CREATE TABLE hostile.command_queue (LIKE stacker.command_queue);
CREATE TABLE hostile.agents (LIKE stacker.agents);
CREATE TABLE hostile.app_status (LIKE stacker.app_status);
CREATE TABLE hostile.audit_log (LIKE stacker.audit_log);
GRANT ALL ON ALL TABLES IN SCHEMA hostile TO PUBLIC;

-- Functions named like the ones ours call, each leaving a hit and a wrong answer.
CREATE FUNCTION hostile.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT '2000-01-01 00:00+00'::pg_catalog.timestamptz WHERE hostile.hit() $$;
CREATE FUNCTION hostile.clock_timestamp() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT '2000-01-01 00:00+00'::pg_catalog.timestamptz WHERE hostile.hit() $$;
CREATE FUNCTION hostile.gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ SELECT '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid WHERE hostile.hit() $$;
CREATE FUNCTION hostile.length(pg_catalog.text) RETURNS integer LANGUAGE sql
    AS $$ SELECT 1 WHERE hostile.hit() $$;
CREATE FUNCTION hostile.octet_length(pg_catalog.text) RETURNS integer LANGUAGE sql
    AS $$ SELECT 1 WHERE hostile.hit() $$;
CREATE FUNCTION hostile.left(pg_catalog.text, integer) RETURNS pg_catalog.text LANGUAGE sql
    AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.lower(pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
    AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.format(pg_catalog.text, VARIADIC pg_catalog.text[])
    RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.quote_literal(pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
    AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.jsonb_build_object(VARIADIC pg_catalog.text[]) RETURNS pg_catalog.jsonb
    LANGUAGE sql AS $$ SELECT '{}'::pg_catalog.jsonb WHERE hostile.hit() $$;
CREATE FUNCTION hostile.jsonb_typeof(pg_catalog.jsonb) RETURNS pg_catalog.text LANGUAGE sql
    AS $$ SELECT 'object'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.jsonb_strip_nulls(pg_catalog.jsonb) RETURNS pg_catalog.jsonb
    LANGUAGE sql AS $$ SELECT '{}'::pg_catalog.jsonb WHERE hostile.hit() $$;
CREATE FUNCTION hostile.isfinite(timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT true WHERE hostile.hit() $$;
CREATE FUNCTION hostile.make_interval(secs double precision) RETURNS interval LANGUAGE sql
    AS $$ SELECT '0'::interval WHERE hostile.hit() $$;
CREATE FUNCTION hostile.cardinality(anyarray) RETURNS integer LANGUAGE sql
    AS $$ SELECT 0 WHERE hostile.hit() $$;
CREATE FUNCTION hostile.set_config(pg_catalog.text, pg_catalog.text, boolean)
    RETURNS pg_catalog.text LANGUAGE sql AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.current_setting(pg_catalog.text, boolean) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT 'hostile'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.pg_notify(pg_catalog.text, pg_catalog.text) RETURNS void LANGUAGE sql
    AS $$ SELECT WHERE hostile.hit() $$;
CREATE FUNCTION hostile.pg_trigger_depth() RETURNS integer LANGUAGE sql
    AS $$ SELECT 0 WHERE hostile.hit() $$;
CREATE FUNCTION hostile."coalesce"(pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT 'x'::pg_catalog.text WHERE hostile.hit() $$;
CREATE FUNCTION hostile.agg_step(pg_catalog.text[], pg_catalog.text) RETURNS pg_catalog.text[]
    LANGUAGE sql AS $$ SELECT pg_catalog.array_append($1, $2) WHERE hostile.hit() $$;
CREATE AGGREGATE hostile.array_agg(pg_catalog.text)
    (sfunc = hostile.agg_step, stype = pg_catalog.text[]);

-- Operators on the types our functions compare, each leaving a hit.
CREATE FUNCTION hostile.eq(pg_catalog.text, pg_catalog.text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.texteq($1, $2) AND hostile.hit() $$;
CREATE FUNCTION hostile.ne(pg_catalog.text, pg_catalog.text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.textne($1, $2) AND hostile.hit() $$;
CREATE FUNCTION hostile.cat(pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
    AS $$ SELECT pg_catalog.textcat($1, $2) WHERE hostile.hit() $$;
CREATE FUNCTION hostile.veq(pg_catalog.varchar, pg_catalog.varchar) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.texteq($1, $2) AND hostile.hit() $$;
CREATE FUNCTION hostile.vteq(pg_catalog.varchar, pg_catalog.text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.texteq($1, $2) AND hostile.hit() $$;
CREATE FUNCTION hostile.jget(pg_catalog.jsonb, pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql AS $$ SELECT pg_catalog.jsonb_object_field_text($1, $2) WHERE hostile.hit() $$;
CREATE FUNCTION hostile.tsle(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.timestamptz_le($1, $2) AND hostile.hit() $$;
CREATE FUNCTION hostile.tsmi(timestamptz, interval) RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT pg_catalog.timestamptz_mi_interval($1, $2) WHERE hostile.hit() $$;
CREATE FUNCTION hostile.ueq(uuid, uuid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT pg_catalog.uuid_eq($1, $2) AND hostile.hit() $$;
CREATE OPERATOR hostile.= (
    leftarg = pg_catalog.text, rightarg = pg_catalog.text,
    function = hostile.eq);
CREATE OPERATOR hostile.<> (
    leftarg = pg_catalog.text, rightarg = pg_catalog.text,
    function = hostile.ne);
CREATE OPERATOR hostile.|| (
    leftarg = pg_catalog.text, rightarg = pg_catalog.text,
    function = hostile.cat);
CREATE OPERATOR hostile.= (
    leftarg = pg_catalog.varchar, rightarg = pg_catalog.varchar,
    function = hostile.veq);
CREATE OPERATOR hostile.= (
    leftarg = pg_catalog.varchar, rightarg = pg_catalog.text,
    function = hostile.vteq);
CREATE OPERATOR hostile.->> (
    leftarg = pg_catalog.jsonb, rightarg = pg_catalog.text,
    function = hostile.jget);
CREATE OPERATOR hostile.<= (leftarg = timestamptz, rightarg = timestamptz, function = hostile.tsle);
CREATE OPERATOR hostile.- (leftarg = timestamptz, rightarg = interval, function = hostile.tsmi);
CREATE OPERATOR hostile.= (leftarg = uuid, rightarg = uuid, function = hostile.ueq);

-- Types named like the ones a caller casts to (a domain's CHECK runs code).
CREATE DOMAIN hostile.text AS pg_catalog.text CHECK (hostile.hit());
CREATE DOMAIN hostile.jsonb AS pg_catalog.jsonb CHECK (hostile.hit());
CREATE DOMAIN hostile.uuid AS pg_catalog.uuid CHECK (hostile.hit());
CREATE DOMAIN hostile.timestamptz AS pg_catalog.timestamptz CHECK (hostile.hit());
"""

HOSTILE_PATH = "pg_temp, hostile, public, pg_catalog"

TEMP_OBJECTS = """
CREATE TEMP TABLE commands (LIKE stacker.commands);
CREATE TEMP TABLE command_queue (LIKE stacker.command_queue);
CREATE TEMP TABLE agents (LIKE stacker.agents);
CREATE TEMP TABLE audit_log (LIKE stacker.audit_log);
CREATE TEMP TABLE app_status (LIKE stacker.app_status);
CREATE FUNCTION pg_temp.now() RETURNS pg_catalog.timestamptz LANGUAGE sql
    AS $$ SELECT '2000-01-01 00:00+00'::pg_catalog.timestamptz WHERE hostile.hit() $$;
"""


def hits(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM hostile.hits"
    ).fetchone()
    assert row is not None
    return int(row[0])


def hostile_session(db: Database, user: str | None = None) -> psycopg.Connection[Any]:
    conn = as_user(db, user) if user else db.connect()
    conn.execute(TEMP_OBJECTS)
    conn.execute(f"SET search_path = {HOSTILE_PATH}")
    return conn


def test_hostile_objects_in_the_callers_search_path_are_never_used(
    db: Database, logins: dict[str, str]
) -> None:
    owner = db.connect()
    owner.execute(HOSTILE)
    # The hostile objects work: a session that resolves names through them is hit.
    probe = hostile_session(db)
    probe.execute("SELECT now(), length('abc'), 'a'::text = 'b'")
    assert hits(owner) > 0
    owner.execute("SELECT setval('hostile.hits', 1, false)")
    assert hits(owner) == 0

    service = hostile_session(db, logins["both"])
    admin = hostile_session(db)
    agent_id = "00000000-0000-4000-8000-0000000000cc"
    calls: list[tuple[psycopg.Connection[Any], str]] = [
        (service, f"SELECT stacker.register_agent('dep-h', '{agent_id}', '1.0', '[\"health\"]')"),
        (
            service,
            "SELECT stacker.create_command('dep-h', 'health', '{\"app_code\": \"web\"}', "
            "'high', p_command_id => 'h-1', p_idempotency_key => 'k1')",
        ),
        (
            service,
            "SELECT stacker.create_command('dep-h', 'health', '{\"app_code\": \"web\"}', "
            "'high', p_command_id => 'h-1b', p_idempotency_key => 'k1')",
        ),
        (
            service,
            'SELECT * FROM stacker.create_commands(\'[{"deployment_hash": "dep-h", '
            '"command_type": "logs", "command_id": "h-2"}, {"deployment_hash": '
            '"dep-h", "command_type": "restart", "command_id": "h-3"}]\')',
        ),
        (service, f"SELECT * FROM stacker.claim_commands('dep-h', '{agent_id}', 3, 60)"),
        (service, f"SELECT stacker.start_command('h-1', '{agent_id}')"),
        (service, f"SELECT stacker.extend_lease('h-1', '{agent_id}', 120)"),
        (
            service,
            f"SELECT stacker.report_result('h-1', '{agent_id}', 'completed', "
            '\'{"app_code": "web", "container_state": "running", '
            '"timestamp": "2026-01-01T00:00:00Z"}\')',
        ),
        (
            service,
            f"SELECT stacker.report_result('h-1', '{agent_id}', 'completed', "
            '\'{"app_code": "web", "container_state": "running", '
            '"timestamp": "2026-01-01T00:00:00Z"}\')',
        ),
        (service, "SELECT stacker.cancel_command('h-2', 'hostile test')"),
        (service, "SELECT stacker.update_app_status('dep-h', 'db', 'stopped', '[\"down\"]')"),
        (service, "SELECT * FROM stacker.get_app_status('dep-h')"),
        (service, "SELECT stacker.get_command('h-3')"),
        (service, "SELECT * FROM stacker.list_commands('dep-h', 'queued', 5)"),
        (service, "SELECT * FROM stacker.queue_stats"),
        # The maintenance functions and Stacker's own SQL, as the owner.
        (
            admin,
            "UPDATE stacker.commands SET lease_expires_at = pg_catalog.now() "
            "OPERATOR(pg_catalog.-) interval '1 hour' WHERE command_id "
            "OPERATOR(pg_catalog.=) 'h-3'::pg_catalog.text",
        ),
        (admin, "SELECT stacker.requeue_expired()"),
        (admin, "SELECT stacker.cleanup('48 hours', '3650 days')"),
        (
            admin,
            "INSERT INTO stacker.audit_log (action, created_at) VALUES ('test.old', "
            "'2000-01-01 00:00+00')",
        ),
        (admin, "SELECT stacker.purge_audit_log('30 days')"),
        (
            admin,
            "INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by) "
            "VALUES ('h-legacy', 'dep-h', 'health', 'stacker')",
        ),
        (
            admin,
            "INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) "
            "VALUES ('h-legacy', 'dep-h', 1)",
        ),
        (
            admin,
            "DELETE FROM stacker.command_queue WHERE command_id OPERATOR(pg_catalog.=) "
            "'h-legacy'::pg_catalog.text",
        ),
    ]
    if owner.execute("SELECT to_regproc('stacker.stacker_command_queue_cleanup')").fetchone() != (
        None,
    ):
        calls.append((admin, "SELECT stacker.stacker_command_queue_cleanup()"))
    for conn, statement in calls:
        conn.execute(statement)
        assert hits(owner) == 0, f"a hostile object was used by: {statement}"

    # Nothing went to the look-alike tables, and the real ones hold real values.
    for table in ("commands", "command_queue", "agents", "app_status", "audit_log"):
        assert owner.execute(f"SELECT count(*) FROM hostile.{table}").fetchone() == (0,)
        for session in (service, admin):
            assert session.execute(
                f"SELECT pg_catalog.count(*) FROM pg_temp.{table}"
            ).fetchone() == (0,)
    rows = owner.execute(
        "SELECT command_id, status, created_at > now() - interval '1 hour', "
        "lease_expires_at IS NULL OR lease_expires_at > '2001-01-01' "
        "FROM stacker.commands ORDER BY command_id"
    ).fetchall()
    assert rows == [
        ("h-1", "completed", True, True),
        ("h-2", "cancelled", True, True),
        ("h-3", "queued", True, True),
        ("h-legacy", "queued", True, True),
    ]
    assert owner.execute(
        "SELECT count(*) FROM stacker.audit_log WHERE actor = 'hostile' "
        "OR created_at < now() - interval '1 hour'"
    ).fetchone() == (0,)
    assert owner.execute(
        "SELECT status FROM stacker.app_status WHERE app_code = 'web'"
    ).fetchone() == ("running",)
    write_figures("hostile_search_path", {"calls": len(calls), "hits": hits(owner)})


def test_the_wrapper_uses_no_hostile_object_either(db: Database, logins: dict[str, str]) -> None:
    """The wrapper's own statements (casts, the stats filter) under a hostile search_path."""
    owner = db.connect()
    owner.execute(HOSTILE)
    conninfo = psycopg.conninfo.make_conninfo(
        db.conninfo, user=logins["both"], options=f"-c search_path={HOSTILE_PATH.replace(' ', '')}"
    )
    dep = new_hash()
    pool = connection_pool(conninfo, max_size=1)
    try:
        client = Client(pool, actor="ops")
        agent = Agent(pool, dep, listen=False)
        agent.register(version="1", capabilities=["health"], system_info={"os": "linux"})
        cmd = client.create_command(
            dep,
            "health",
            {"app_code": "web"},
            priority="high",
            timeout_seconds=60,
            max_attempts=2,
            metadata={"m": 1},
        )
        client.create_commands([{"deployment_hash": dep, "command_type": "logs"}])
        (got,) = agent.claim(1, lease_seconds=30)
        agent.start(got.command_id)
        agent.extend_lease(got.command_id, 60)
        agent.report_result(got.command_id, "completed", {"app_code": "web", "status": "running"})
        client.get_command(cmd.command_id)
        client.list_commands(dep, status="queued", limit=10)
        client.update_app_status(dep, "db", "running", ["up"])
        client.app_status(dep)
        assert [s.deployment_hash for s in client.stats(dep)] == [dep]
        queued = client.list_commands(dep, status="queued")
        client.cancel_command(queued[0].command_id, reason="done")
    finally:
        pool.close()
    assert hits(owner) == 0


# -- audit_log: append-only for everyone, the owner included --------------------------------
def test_audit_log_is_append_only_for_the_owner_by_every_path(db: Database) -> None:
    """Beyond pgTAP 170 (plain UPDATE/DELETE/TRUNCATE): replica mode, a forged
    call stack, look-alike purge functions; only purge_audit_log removes rows,
    and a purge is audited."""
    owner = db.connect()
    owner.execute("SELECT stacker.create_command('dep-au', 'health')")
    owner.execute(
        "INSERT INTO stacker.audit_log (action, created_at, actor) VALUES "
        "('test.old', now() - interval '40 days', 't'), "
        "('test.old', now() - interval '41 days', 't')"
    )
    count = owner.execute("SELECT count(*) FROM stacker.audit_log").fetchone()
    assert count is not None and count[0] >= 3
    owner.execute("CREATE SCHEMA evil")
    owner.execute(
        "CREATE FUNCTION evil.purge_audit_log(interval) RETURNS bigint LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM stacker.audit_log; RETURN 0; END $$"
    )
    owner.execute(
        "CREATE FUNCTION pg_temp.purge_audit_log(interval) RETURNS bigint LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM stacker.audit_log; RETURN 0; END $$"
    )
    forged_stack = (
        "DELETE FROM stacker.audit_log /*\n"
        "PL/pgSQL function stacker.purge_audit_log(interval) line 16 at SQL statement\n*/"
    )
    exact_statement = 'DELETE FROM "stacker".audit_log a WHERE a.created_at < now() - p_older_than'
    attempts = {
        "update": "UPDATE stacker.audit_log SET actor = 'forged'",
        "delete": "DELETE FROM stacker.audit_log",
        "truncate": "TRUNCATE stacker.audit_log",
        "replica-update": "SET LOCAL session_replication_role = replica; "
        "UPDATE stacker.audit_log SET actor = 'forged'",
        "replica-delete": "SET LOCAL session_replication_role = replica; "
        "DELETE FROM stacker.audit_log",
        "replica-truncate": "SET LOCAL session_replication_role = replica; "
        "TRUNCATE stacker.audit_log",
        "look-alike-function": "SELECT evil.purge_audit_log('1 day')",
        "pg_temp-function": "SELECT pg_temp.purge_audit_log('1 day')",
        "forged-call-stack": f"DO $do$ BEGIN {forged_stack}; END $do$",
        "copied-statement": "DO $do$ DECLARE p_older_than interval := '1 day'; BEGIN "
        f"{exact_statement}; END $do$",
        "copied-statement-with-forged-stack": "DO $do$ DECLARE p_older_than interval := '1 day'; "
        f"BEGIN {exact_statement} /*\nPL/pgSQL function stacker.purge_audit_log(interval) "
        "line 16 at SQL statement\n*/; END $do$",
        "guc": "SET LOCAL stacker.audit_retention = 'on'; DELETE FROM stacker.audit_log",
    }
    outcome = {name: attempt(owner, statement) for name, statement in attempts.items()}
    assert outcome == dict.fromkeys(attempts, "42501")
    assert owner.execute("SELECT count(*) FROM stacker.audit_log").fetchone() == count

    # The retention path works, from a wrapper function too, and is itself audited.
    owner.execute(
        "CREATE FUNCTION evil.monthly_retention() RETURNS bigint LANGUAGE sql "
        "AS $$ SELECT stacker.purge_audit_log('30 days') $$"
    )
    owner.execute("SET stacker.actor = 'dba:test'")
    assert owner.execute("SELECT evil.monthly_retention()").fetchone() == (2,)
    assert owner.execute(
        "SELECT (details ->> 'rows')::int, actor FROM stacker.audit_log "
        "WHERE action = 'audit.purged'"
    ).fetchall() == [(2, "dba:test")]
    assert owner.execute("SELECT count(*) FROM stacker.audit_log").fetchone() == (count[0] - 2 + 1,)
    write_figures("audit_append_only", {"bypass_attempts": len(attempts)})


def test_audit_log_is_append_only_for_every_role(db: Database, logins: dict[str, str]) -> None:
    owner = db.connect()
    owner.execute("SELECT stacker.create_command('dep-au', 'health')")
    count = owner.execute("SELECT count(*) FROM stacker.audit_log").fetchone()
    for key in ("service", "agent", "readonly", "plain", "both"):
        conn = as_user(db, logins[key])
        for statement in (
            "UPDATE stacker.audit_log SET actor = 'forged'",
            "DELETE FROM stacker.audit_log",
            "TRUNCATE stacker.audit_log",
            "INSERT INTO stacker.audit_log (action) VALUES ('forged')",
            "SELECT stacker.purge_audit_log('1 day')",
        ):
            assert attempt(conn, statement) == "42501", (key, statement)
    assert owner.execute("SELECT count(*) FROM stacker.audit_log").fetchone() == count
