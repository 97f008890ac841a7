{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.register_agent(
    p_deployment_hash text,
    p_agent_id uuid DEFAULT NULL,
    p_version text DEFAULT NULL,
    p_capabilities jsonb DEFAULT '[]'::jsonb,
    p_system_info jsonb DEFAULT '{}'::jsonb
)
RETURNS {{ schema }}.agents
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_agent {{ schema }}.agents;
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    {{ m.check_optional_text('p_version', 'version', 50) }}
    {{ m.check_json('p_capabilities', 'capabilities', 'array') }}
    {{ m.check_json('p_system_info', 'system_info', 'object') }}
    IF p_agent_id IS NOT NULL AND EXISTS (
           SELECT FROM {{ schema }}.agents a
            WHERE a.id = p_agent_id AND a.deployment_hash <> p_deployment_hash) THEN
        RAISE EXCEPTION USING ERRCODE = '23505',
            MESSAGE = pg_catalog.format('agent_id %s is already registered for another deployment', p_agent_id);
    END IF;

    -- One agent per deployment: registering again keeps its id.
    INSERT INTO {{ schema }}.agents AS a
           (id, deployment_hash, capabilities, version, system_info, last_heartbeat, status,
            created_at, updated_at, registered_at)
    VALUES (coalesce(p_agent_id, pg_catalog.gen_random_uuid()), p_deployment_hash, p_capabilities,
            p_version, p_system_info, now(), 'online', now(), now(), now())
    ON CONFLICT (deployment_hash) DO UPDATE
       SET capabilities = excluded.capabilities,
           version = coalesce(excluded.version, a.version),
           system_info = excluded.system_info,
           last_heartbeat = now(),
           status = 'online',
           updated_at = now(),
           registered_at = now()
    RETURNING a.* INTO v_agent;
    RETURN v_agent;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.register_agent(text, uuid, text, jsonb, jsonb) IS
'Registers the agent of a deployment (one per deployment) and marks it seen. Registering again returns the same agent id and updates version (when given), capabilities and system_info. p_agent_id chooses the id of a new agent. Errors: 22023 invalid argument, 23505 agent id registered for another deployment.';
REVOKE ALL ON FUNCTION {{ schema }}.register_agent(text, uuid, text, jsonb, jsonb) FROM PUBLIC;
