{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.start_command(p_command_id text, p_agent_id uuid)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    v_command := {{ schema }}._command_for_agent(p_command_id, p_agent_id);
    IF v_command.status = 'executing' THEN
        RETURN v_command;  -- started already
    END IF;
    IF v_command.status <> 'sent' THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s is %s; only a sent command can start',
                                        pg_catalog.quote_literal(p_command_id), v_command.status);
    END IF;
    IF v_command.lease_expires_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('the lease of command %s ran out at %s; it is due for redelivery',
                                        pg_catalog.quote_literal(p_command_id), v_command.lease_expires_at);
    END IF;

    UPDATE {{ schema }}.commands c
       SET status = 'executing', started_at = now(), updated_at = now()
     WHERE c.id = v_command.id
    RETURNING c.* INTO v_command;
    RETURN v_command;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.start_command(text, uuid) IS
'Marks a sent command executing (started_at) for the deployment''s agent while its lease runs; starting an executing command returns it unchanged. Errors: 22023 invalid argument, P0002 unknown command, 42501 not the deployment''s agent, 55000 not sent or lease ran out.';
REVOKE ALL ON FUNCTION {{ schema }}.start_command(text, uuid) FROM PUBLIC;
