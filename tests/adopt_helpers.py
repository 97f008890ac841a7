"""Helpers shared by the adoption and export suites (not a test module)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import stacker_fixtures as sf
from conftest import Database, conninfo_of
from psycopg import sql


def app_role(pg_server: Any) -> Iterator[str]:
    """A login role for Stacker's binary (unique per module), dropped afterwards."""
    name = f"sq_stacker_app_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = conninfo_of(pg_server.host, pg_server.port, pg_server.user, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        sf.create_app_role(conn, name)
    try:
        yield name
    finally:
        # (it may still own objects in a database a failed test left behind)
        with psycopg.connect(admin, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def dump(database: Database, *args: str) -> str:
    """pg_dump of the whole database (schema and data unless told), volatile lines removed."""
    out = subprocess.run(
        ["pg_dump", *args, "-d", database.conninfo], capture_output=True, text=True, check=True
    ).stdout
    return "\n".join(
        line
        for line in out.splitlines()
        if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict"))
    )


_HEADER = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*$")


def dump_entries(text: str) -> dict[tuple[str, str], str]:
    """A schema dump as {(type, name): normalised SQL}: one entry per TOC header,
    comment and blank lines dropped, a table's column lines sorted (column
    order is not compared), ALTER ... OWNER TO dropped."""
    entries: dict[tuple[str, str], list[str]] = {}
    key: tuple[str, str] | None = None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            key = (m.group(2), m.group(1))
            entries.setdefault(key, [])
            continue
        if key is None or not line.strip() or line.startswith("--"):
            continue
        if " OWNER TO " in line:
            continue
        entries[key].append(line)
    out: dict[tuple[str, str], str] = {}
    for k, lines in entries.items():
        if k[0] == "TABLE" and lines and lines[0].startswith("CREATE TABLE"):
            end = next(i for i, ln in enumerate(lines) if ln.startswith(")"))
            columns = sorted(ln.strip().rstrip(",") for ln in lines[1:end])
            lines = [lines[0], *columns, *lines[end:]]
        out[k] = "\n".join(lines)
    return out


def queue_rows(conn: psycopg.Connection[Any], schema: str = "public") -> dict[str, Any]:
    rows = conn.execute(
        sql.SQL(
            "SELECT q.command_id, count(*) OVER (PARTITION BY q.command_id), "
            "q.visible_at <= now(), q.lease_expires_at FROM {}.command_queue q"
        ).format(sql.Identifier(schema))
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def commands(conn: psycopg.Connection[Any], schema: str = "public") -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        sql.SQL("SELECT * FROM {}.commands ORDER BY created_at").format(sql.Identifier(schema))
    )
    assert cur.description is not None
    names = [d.name for d in cur.description]
    return {row[1]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
