{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._commands_audit()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {{ schema }}.audit_log (agent_id, deployment_hash, action, status, details, actor)
        SELECT NULL, n.deployment_hash, 'command.created', n.status,
               pg_catalog.jsonb_build_object(
                   'command_id', n.command_id, 'type', n.type, 'priority', n.priority,
                   'created_by', n.created_by, 'to', n.status),
               {{ m.actor() }}
          FROM new_rows n;
    ELSE
        -- One row per status change, and per redelivery (sent again, attempts + 1).
        INSERT INTO {{ schema }}.audit_log (agent_id, deployment_hash, action, status, details, actor)
        SELECT n.agent_id,
               n.deployment_hash,
               CASE WHEN n.status = 'queued' THEN 'command.requeued' ELSE 'command.' || n.status END,
               n.status,
               pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                   'command_id', n.command_id, 'from', o.status, 'to', n.status,
                   'attempts', n.attempts,
                   'agent_id', n.agent_id,
                   'lease_expires_at', n.lease_expires_at,
                   'reason', CASE WHEN n.status IN ('failed', 'cancelled') THEN n.error ->> 'reason' END)),
               {{ m.actor() }}
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
         WHERE n.status IS DISTINCT FROM o.status
            OR (n.status = 'sent' AND n.attempts IS DISTINCT FROM o.attempts);
    END IF;
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._commands_audit() IS
'Triggers _800_audit_insert and _800_audit_update on commands (AFTER, statement, transition tables): one audit_log row per creation (command.created), status change (command.sent, .executing, .completed, .failed, .cancelled, .requeued) and redelivery, with the actor.';
REVOKE ALL ON FUNCTION {{ schema }}._commands_audit() FROM PUBLIC;
