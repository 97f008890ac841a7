{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._agents_audit()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    INSERT INTO {{ schema }}.audit_log (agent_id, deployment_hash, action, status, details, actor)
    VALUES (NEW.id, NEW.deployment_hash, 'agent.registered', NEW.status,
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'agent_id', NEW.id,
                'version', NEW.version,
                'capabilities', NEW.capabilities,
                'system_info', NEW.system_info,
                'changed', CASE WHEN TG_OP = 'UPDATE' THEN
                    (SELECT pg_catalog.jsonb_agg(n.key ORDER BY n.key)
                       FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(NEW)) n
                       JOIN pg_catalog.jsonb_each(pg_catalog.to_jsonb(OLD)) o USING (key)
                      WHERE n.value IS DISTINCT FROM o.value
                        AND n.key NOT IN ('last_heartbeat', 'status', 'updated_at')) END)),
            {{ m.actor() }});
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._agents_audit() IS
'Triggers _800_audit_insert and _800_audit_update on agents (AFTER, row): one agent.registered audit row per registration or change of identity, version, capabilities or system_info; heartbeats alone write nothing.';
REVOKE ALL ON FUNCTION {{ schema }}._agents_audit() FROM PUBLIC;
