-- Undo 0001: remove every stacker-queue object of the schema. The repeatable
-- objects (functions, views, triggers) depend on these tables, so they go first.
-- The schema itself and yoyo's bookkeeping tables in it stay.
DO $rollback$
DECLARE
    v_object record;
BEGIN
    FOR v_object IN
        SELECT format('%I.%I', n.nspname, c.relname) AS name
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = {{ schema_literal }} AND c.relkind IN ('v', 'm')
    LOOP
        EXECUTE 'DROP VIEW IF EXISTS ' || v_object.name || ' CASCADE';
    END LOOP;
    FOR v_object IN
        SELECT p.oid::pg_catalog.regprocedure::text AS name
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = {{ schema_literal }}::regnamespace
    LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || v_object.name || ' CASCADE';
    END LOOP;
END
$rollback$;

DROP TABLE {{ schema }}.schema_repeatables;
DROP TABLE {{ schema }}.audit_log;
DROP TABLE {{ schema }}.app_status;
DROP TABLE {{ schema }}.agents;
DROP TABLE {{ schema }}.command_queue;
DROP TABLE {{ schema }}.commands;
