{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._app_status_audit()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    INSERT INTO {{ schema }}.audit_log (agent_id, deployment_hash, action, status, details, actor)
    VALUES ((SELECT a.id FROM {{ schema }}.agents a WHERE a.deployment_hash = NEW.deployment_hash),
            NEW.deployment_hash, 'app_status.changed', NEW.status,
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'app_code', NEW.app_code,
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
                'to', NEW.status,
                'checked_at', NEW.checked_at,
                'command_id', NEW.command_id)),
            {{ m.actor() }});
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._app_status_audit() IS
'Triggers _800_audit_insert and _800_audit_update on app_status (AFTER, row): one app_status.changed audit row when an app first reports and whenever its status changes.';
REVOKE ALL ON FUNCTION {{ schema }}._app_status_audit() FROM PUBLIC;
