{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._agent_seen(p_deployment_hash text, p_agent_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_registered uuid;
    v_last_heartbeat timestamptz;
    v_status text;
BEGIN
    IF p_agent_id IS NULL THEN
        {{ m.invalid('agent_id', 'p_agent_id', 'must be the agent id returned by register_agent') }};
    END IF;

    SELECT a.id, a.last_heartbeat, a.status
      INTO v_registered, v_last_heartbeat, v_status
      FROM {{ schema }}.agents a
     WHERE a.deployment_hash = p_deployment_hash;

    IF v_registered IS DISTINCT FROM p_agent_id THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = pg_catalog.format('agent %s is not the registered agent of deployment %s',
                                        p_agent_id, {{ m.show('p_deployment_hash') }}),
            HINT = CASE WHEN v_registered IS NULL
                        THEN 'No agent is registered for this deployment; call register_agent first.'
                        ELSE 'Use the agent id that register_agent returned for this deployment.' END;
    END IF;

    -- Mark the agent seen. Never wait for it: a concurrent call of the same agent
    -- that holds the row is marking it seen anyway. At most one write a second.
    IF v_last_heartbeat IS NULL OR v_last_heartbeat < now() - interval '1 second'
       OR v_status IS DISTINCT FROM 'online' THEN
        UPDATE {{ schema }}.agents a
           SET last_heartbeat = now(), status = 'online'
         WHERE a.id = (SELECT l.id FROM {{ schema }}.agents l
                        WHERE l.id = p_agent_id
                          FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._agent_seen(text, uuid) IS
'Private. Raises 42501 unless p_agent_id is the agent registered for p_deployment_hash (22023 when it is NULL), then marks the agent seen (last_heartbeat, status online) without ever waiting on a row lock.';
REVOKE ALL ON FUNCTION {{ schema }}._agent_seen(text, uuid) FROM PUBLIC;
