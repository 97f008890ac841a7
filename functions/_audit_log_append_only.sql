{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._audit_log_append_only()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    IF TG_OP = 'DELETE'
       AND pg_catalog.current_setting('stacker.audit_retention', true) = 'on' THEN
        RETURN OLD;  -- the retention path (purge_audit_log)
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
'Triggers _100_append_only and _100_no_truncate on audit_log (BEFORE): refuse UPDATE, DELETE and TRUNCATE for every role, the owner included (42501). Exceptions: DELETE inside purge_audit_log, which sets stacker.audit_retention for its transaction, and the agents foreign key setting agent_id to NULL.';
REVOKE ALL ON FUNCTION {{ schema }}._audit_log_append_only() FROM PUBLIC;
