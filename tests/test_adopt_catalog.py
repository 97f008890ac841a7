"""The adopted catalog equals a fresh ``stacker-queue migrate`` of the same
schema, compared independently of adopt's own check: ``pg_dump --schema-only``
of both, entry by entry, allowing only the differences docs/adopting-stacker.md
lists (column order, owners, row-level security on command_queue, and what is
Stacker's: its deployment table and the foreign keys to it, its secondary
indexes, its later columns, the old binary role's grants)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import stacker_fixtures as sf
from adopt_helpers import app_role, dump, dump_entries
from conftest import Database, new_database
from psycopg import sql

from stacker_queue.adopt import Adopter
from stacker_queue.migrate import Installer

YOYO = ["--exclude-table=public._yoyo*", "--exclude-table=public.yoyo_lock"]

# Stacker's own objects that adoption keeps (docs/adopting-stacker.md).
STACKER_EXTRAS = re.compile(
    r"deployment|^idx_(commands|agents|audit_log)_|^COLUMN agents\.token_hash"
    r"|^(commands|agents) \w+_deployment_hash_fkey$"
)
STACKER_COLUMNS = re.compile(r"^(token_hash|token_hash_updated_at) ")


@pytest.fixture(scope="module")
def role(pg_server: Any) -> Iterator[str]:
    yield from app_role(pg_server)


@pytest.fixture
def fresh_db(pg_server: Any, empty_db: Database) -> Iterator[Database]:
    """A second empty database, with a fresh install into public."""
    with new_database(pg_server, f"{empty_db.dbname}_fresh") as fresh:
        Installer(fresh.conninfo, "public").migrate()
        yield fresh


def _normalise(entries: dict[tuple[str, str], str], role: str) -> dict[tuple[str, str], str]:
    out = {}
    for (kind, name), body in entries.items():
        if STACKER_EXTRAS.search(name):
            continue
        lines = [
            ln
            for ln in body.splitlines()
            if role not in ln  # the old binary role's grants
            and not STACKER_COLUMNS.match(ln.strip())
            and "FORCE ROW LEVEL SECURITY" not in ln
        ]
        if kind == "ROW SECURITY":  # ENABLE ROW LEVEL SECURITY on command_queue
            continue
        out[(kind, name)] = "\n".join(lines)
    return out


@pytest.mark.parametrize("state", sf.STATES)
def test_adopted_catalog_equals_a_fresh_install(
    empty_db: Database, fresh_db: Database, role: str, state: str
) -> None:
    stacker = sf.build(empty_db, role, state)
    sf.fill(stacker)
    Adopter(empty_db.conninfo, "public").adopt()

    adopted_raw = dump_entries(dump(empty_db, "--schema-only", "-n", "public", *YOYO))
    fresh_raw = dump_entries(dump(fresh_db, "--schema-only", "-n", "public", *YOYO))
    adopted = _normalise(adopted_raw, role)
    fresh = _normalise(fresh_raw, role)

    missing = sorted(k for k in fresh if k not in adopted)
    extra = sorted(k for k in adopted if k not in fresh)
    different = sorted(k for k in fresh if k in adopted and adopted[k] != fresh[k])
    assert missing == []
    assert extra == []
    assert different == [], "\n\n".join(
        f"{k}\n--- adopted\n{adopted[k]}\n--- fresh\n{fresh[k]}" for k in different[:3]
    )
    # ... and the differences allowed are the documented ones, and present.
    allowed = sorted(k for k in adopted_raw if k not in fresh_raw)
    assert ("ROW SECURITY", "command_queue") in allowed
    assert all(k[0] == "ROW SECURITY" or STACKER_EXTRAS.search(k[1]) for k in allowed), allowed


def test_adopting_a_fresh_install_only_fences_the_old_binary(
    empty_db: Database, fresh_db: Database, role: str
) -> None:
    """adopt on a schema migrate installed: nothing but the legacy guard."""
    with psycopg.connect(fresh_db.conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE public.command_queue OWNER TO {}").format(sql.Identifier(role))
        )
        # (roles are cluster-wide: an earlier test may have made it a member)
        conn.execute(sql.SQL("REVOKE stacker_legacy FROM {}").format(sql.Identifier(role)))
    report = Adopter(fresh_db.conninfo, "public", legacy_role=role).adopt()
    assert report.marked_migrations == []
    assert report.applied_repeatables == []
    assert report.statements == [
        'ALTER TABLE "public"."command_queue" ENABLE ROW LEVEL SECURITY',
        'ALTER TABLE "public"."command_queue" FORCE ROW LEVEL SECURITY',
        f'GRANT stacker_legacy TO "{role}"',
        f'GRANT EXECUTE ON FUNCTION "public"."stacker_command_queue_cleanup"(interval) TO "{role}"',
    ]
