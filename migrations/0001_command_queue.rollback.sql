-- Undo 0001: remove stacker-queue's objects from the schema. The repeatable
-- objects (functions, the view, triggers) depend on these tables, so they go
-- first. Only the package's own functions and view are dropped (the schema may
-- be shared, e.g. Stacker's public); the schema itself and yoyo's bookkeeping
-- tables in it stay.
DROP VIEW IF EXISTS {{ schema }}.queue_stats;
DO $rollback$
DECLARE
    v_function text;
BEGIN
    FOR v_function IN
        SELECT p.oid::pg_catalog.regprocedure::text
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = {{ schema_literal }}
           AND p.proname = ANY ({{ function_names }})
    LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || v_function || ' CASCADE';
    END LOOP;
END
$rollback$;

DROP TABLE {{ schema }}.schema_repeatables;
DROP TABLE {{ schema }}.audit_log;
DROP TABLE {{ schema }}.app_status;
DROP TABLE {{ schema }}.agents;
DROP TABLE {{ schema }}.command_queue;
DROP TABLE {{ schema }}.commands;
