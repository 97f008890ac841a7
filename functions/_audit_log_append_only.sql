{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._audit_log_append_only()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_stack text;
    v_special constant text := '([.()\[\]{}*+?^$|\\])';
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- The retention path: only the DELETE that purge_audit_log itself runs.
        -- The call stack must begin with this trigger, then that very statement,
        -- then purge_audit_log at it. A statement's text (a comment) or a
        -- function's name may hold line breaks, so the stack is matched from its
        -- start with every part verbatim: no forged line can stand in for one.
        GET DIAGNOSTICS v_stack = PG_CONTEXT;
        IF v_stack ~ ('^PL/pgSQL function '
                      || pg_catalog.regexp_replace(
                             pg_catalog.to_regprocedure(pg_catalog.format(
                                 '%I._audit_log_append_only()', {{ schema_literal }}))::text,
                             v_special, '\\\1', 'g')
                      || ' line [0-9]+ at GET DIAGNOSTICS\nSQL statement "'
                      || pg_catalog.regexp_replace(
                             '{{ m.purge_statement(schema) | replace("'", "''") }}',
                             v_special, '\\\1', 'g')
                      || '"\nPL/pgSQL function '
                      || pg_catalog.regexp_replace(
                             pg_catalog.to_regprocedure(pg_catalog.format(
                                 '%I.purge_audit_log(interval)', {{ schema_literal }}))::text,
                             v_special, '\\\1', 'g')
                      || ' line [0-9]+ at SQL statement(\n|$)') THEN
            RETURN OLD;
        END IF;
    END IF;
    -- The agents foreign key's ON DELETE SET NULL, nothing else (the key exists
    -- only where migration 0005, which drops it, is not applied or was rolled
    -- back): the referential action runs inside the foreign key's own trigger
    -- (depth > 1), whereas a statement run by hand fires this trigger at depth 1.
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
'Triggers _100_append_only and _100_no_truncate on audit_log (BEFORE): refuse UPDATE, DELETE and TRUNCATE for every role, the owner included (42501). Exceptions: the DELETE that purge_audit_log runs (recognised on the call stack, which must begin with this trigger, that statement verbatim and purge_audit_log) and the agents foreign key''s ON DELETE SET NULL of agent_id.';
REVOKE ALL ON FUNCTION {{ schema }}._audit_log_append_only() FROM PUBLIC;
