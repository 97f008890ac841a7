{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._audit_log_append_only()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_stack text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- The retention path: only a DELETE that purge_audit_log itself runs.
        GET DIAGNOSTICS v_stack = PG_CONTEXT;
        IF v_stack ~ ('(^|\n)PL/pgSQL function '
                      || pg_catalog.regexp_replace(
                             pg_catalog.to_regprocedure(pg_catalog.format(
                                 '%I.purge_audit_log(interval)', {{ schema_literal }}))::text,
                             '([.()\[\]{}*+?^$|\\])', '\\\1', 'g')
                      || ' line [0-9]+ at SQL statement(\n|$)') THEN
            RETURN OLD;
        END IF;
    END IF;
    -- The agents foreign key's ON DELETE SET NULL, nothing else: the referential
    -- action runs inside the foreign key's own trigger (depth > 1), whereas a
    -- statement run by hand fires this trigger at depth 1.
    IF TG_OP = 'UPDATE'
       AND pg_catalog.pg_trigger_depth() > 1
       AND OLD.agent_id IS NOT NULL AND NEW.agent_id IS NULL
       AND pg_catalog.to_jsonb(NEW) - 'agent_id' = pg_catalog.to_jsonb(OLD) - 'agent_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = pg_catalog.format('audit_log is append-only: %s is refused', TG_OP),
        HINT = 'Rows leave audit_log only through the retention path, purge_audit_log(interval).';
END
$function$;

COMMENT ON FUNCTION {{ schema }}._audit_log_append_only() IS
'Triggers _100_append_only and _100_no_truncate on audit_log (BEFORE): refuse UPDATE, DELETE and TRUNCATE for every role, the owner included (42501). Exceptions: the DELETE that purge_audit_log runs (recognised on the call stack) and the agents foreign key''s ON DELETE SET NULL of agent_id.';
REVOKE ALL ON FUNCTION {{ schema }}._audit_log_append_only() FROM PUBLIC;
