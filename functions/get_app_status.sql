{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.get_app_status(p_deployment_hash text)
RETURNS TABLE (
    app_code text,
    status text,
    logs jsonb,
    checked_at timestamptz,
    state text,
    pending_command_id text,
    agent_last_seen timestamptz
)
LANGUAGE plpgsql STABLE
{{ m.definer() }}
AS $function$
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    RETURN QUERY
    WITH agent AS (
        SELECT a.last_heartbeat FROM {{ schema }}.agents a WHERE a.deployment_hash = p_deployment_hash
    ), pending AS (
        -- The newest pending health command of each app (pending rows are the queue's).
        SELECT DISTINCT ON (c.parameters ->> 'app_code')
               c.parameters ->> 'app_code' AS app_code, c.command_id, c.created_at
          FROM {{ schema }}.command_queue q
          JOIN {{ schema }}.commands c ON c.command_id = q.command_id
         WHERE q.deployment_hash = p_deployment_hash
           AND c.type = 'health'
           AND c.status IN {{ m.pending_statuses() }}
           AND coalesce(c.parameters ->> 'app_code', '') <> ''
         ORDER BY c.parameters ->> 'app_code', c.created_at DESC
    ), apps AS (
        SELECT s.app_code::text AS app_code FROM {{ schema }}.app_status s
         WHERE s.deployment_hash = p_deployment_hash
        UNION
        SELECT p.app_code FROM pending p
    )
    SELECT apps.app_code,
           coalesce(s.status, 'unknown')::text,
           coalesce(s.logs, '[]'::jsonb),
           s.checked_at,
           CASE
               WHEN p.command_id IS NOT NULL AND (s.updated_at IS NULL OR s.updated_at < p.created_at) THEN
                   CASE WHEN (SELECT ag.last_heartbeat FROM agent ag) IS NULL
                          OR (SELECT ag.last_heartbeat FROM agent ag) < now() - interval '300 seconds'
                        THEN 'awaiting_agent' ELSE 'awaiting_execution' END
               WHEN s.checked_at < now() - interval '5 minutes' THEN 'stale'
               ELSE 'reported'
           END,
           p.command_id::text,
           (SELECT ag.last_heartbeat FROM agent ag)
      FROM apps
      LEFT JOIN {{ schema }}.app_status s
             ON s.deployment_hash = p_deployment_hash AND s.app_code = apps.app_code
      LEFT JOIN pending p ON p.app_code = apps.app_code
     ORDER BY apps.app_code;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.get_app_status(text) IS
'The status panel of a deployment: one row per app known from app_status or from a pending health command''s parameters.app_code. state: awaiting_agent (a health command is pending, nothing was reported since it was created, and no agent is registered or none was seen for 300 s), awaiting_execution (the same with a live agent), stale (checked_at older than 5 minutes) or reported. pending_command_id is the newest pending health command of the app. Errors: 22023 invalid argument.';
REVOKE ALL ON FUNCTION {{ schema }}.get_app_status(text) FROM PUBLIC;
