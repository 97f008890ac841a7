{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._command_for_agent(p_command_id text, p_agent_id uuid)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    {{ m.check_text('p_command_id', 'command_id', 64) }}
    IF p_agent_id IS NULL THEN
        {{ m.invalid('agent_id', 'p_agent_id', 'must be the agent id returned by register_agent') }};
    END IF;

    SELECT c.* INTO v_command
      FROM {{ schema }}.commands c
     WHERE c.command_id = p_command_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = pg_catalog.format('command %s does not exist', {{ m.show('p_command_id') }});
    END IF;

    PERFORM {{ schema }}._agent_seen(v_command.deployment_hash, p_agent_id);
    RETURN v_command;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._command_for_agent(text, uuid) IS
'Private. Locks and returns a command for an agent call: 22023 for a bad argument, P0002 when the command does not exist, 42501 unless p_agent_id is the registered agent of the command''s deployment; marks the agent seen.';
REVOKE ALL ON FUNCTION {{ schema }}._command_for_agent(text, uuid) FROM PUBLIC;
