{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.report_result(
    p_command_id text,
    p_agent_id uuid,
    p_status text,
    p_result jsonb DEFAULT NULL,
    p_error jsonb DEFAULT NULL
)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('completed', 'failed') THEN
        {{ m.invalid('status', 'p_status', 'must be completed or failed') }};
    END IF;
    v_command := {{ schema }}._command_for_agent(p_command_id, p_agent_id);

    IF v_command.status = 'cancelled' THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s was cancelled; its result is not recorded',
                                        pg_catalog.quote_literal(p_command_id));
    END IF;
    IF v_command.status IN ('completed', 'failed') THEN
        IF v_command.status = p_status
           AND v_command.result IS NOT DISTINCT FROM p_result
           AND v_command.error IS NOT DISTINCT FROM p_error THEN
            RETURN v_command;  -- the same report again
        END IF;
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s is already %s; a different report (%s) is refused',
                                        pg_catalog.quote_literal(p_command_id), v_command.status, p_status);
    END IF;
    IF v_command.attempts = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s was never delivered; claim it before reporting',
                                        pg_catalog.quote_literal(p_command_id));
    END IF;

    -- Accepted even after the lease ran out or the command was requeued: the work was done.
    UPDATE {{ schema }}.commands c
       SET status = p_status,
           result = p_result,
           error = p_error,
           completed_at = now(),
           lease_expires_at = NULL,
           updated_at = now()
     WHERE c.id = v_command.id
    RETURNING c.* INTO v_command;

    IF v_command.type = 'health' THEN
        PERFORM {{ schema }}._apply_health_result(v_command);
    END IF;
    RETURN v_command;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.report_result(text, uuid, text, jsonb, jsonb) IS
'Records the outcome (completed or failed) of a command delivered at least once, from the deployment''s agent, even after its lease ran out or it was requeued; removes its queue row. The same report again returns the row unchanged. A health command''s result updates app_status. Errors: 22023 invalid argument, P0002 unknown command, 42501 not the deployment''s agent, 55000 never delivered, cancelled, or finished with another outcome.';
REVOKE ALL ON FUNCTION {{ schema }}.report_result(text, uuid, text, jsonb, jsonb) FROM PUBLIC;
