"""An install into a schema it shares with other objects (Stacker's public
schema, extensions installed there) leaves those objects' privileges alone."""

from __future__ import annotations

from conftest import Database

from stacker_queue.migrate import Installer


def test_migrate_into_public_keeps_other_objects_privileges(empty_db: Database) -> None:
    with empty_db.connect() as conn:
        # Like an extension's function in public: EXECUTE for PUBLIC by default.
        conn.execute("CREATE FUNCTION public.foreign_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("CREATE TABLE public.foreign_table (id int)")
        conn.execute("GRANT SELECT ON public.foreign_table TO PUBLIC")
        before = conn.execute(
            "SELECT (SELECT proacl FROM pg_proc WHERE oid = 'public.foreign_fn()'::regprocedure),"
            " (SELECT relacl FROM pg_class WHERE oid = 'public.foreign_table'::regclass)"
        ).fetchone()

    Installer(empty_db.conninfo, "public").migrate()

    with empty_db.connect() as conn:
        after = conn.execute(
            "SELECT (SELECT proacl FROM pg_proc WHERE oid = 'public.foreign_fn()'::regprocedure),"
            " (SELECT relacl FROM pg_class WHERE oid = 'public.foreign_table'::regclass)"
        ).fetchone()
        # ... while the package's own functions and tables got theirs.
        ours = conn.execute(
            "SELECT has_function_privilege('public', 'public.cleanup(interval, interval)', "
            "'EXECUTE'), has_table_privilege('stacker_readonly', 'public.commands', 'SELECT')"
        ).fetchone()
    assert after == before
    assert ours == (False, True)
