{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.cancel_command(
    p_command_id text,
    p_reason text DEFAULT NULL,
    p_cancelled_by text DEFAULT NULL
)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    {{ m.check_text('p_command_id', 'command_id', 64) }}
    {{ m.check_optional_text('p_reason', 'reason', 1000) }}
    {{ m.check_optional_text('p_cancelled_by', 'cancelled_by', 255) }}

    SELECT c.* INTO v_command
      FROM {{ schema }}.commands c
     WHERE c.command_id = p_command_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = pg_catalog.format('command %s does not exist', {{ m.show('p_command_id') }});
    END IF;
    IF v_command.status = 'cancelled' THEN
        RETURN v_command;
    END IF;
    IF v_command.status IN ('completed', 'failed') THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s is already %s and cannot be cancelled',
                                        pg_catalog.quote_literal(p_command_id), v_command.status);
    END IF;

    UPDATE {{ schema }}.commands c
       SET status = 'cancelled',
           error = pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'reason', 'cancelled',
               'message', p_reason,
               'cancelled_by', coalesce(p_cancelled_by, {{ m.actor() }}),
               'previous_status', v_command.status)),
           completed_at = now(),
           lease_expires_at = NULL,
           updated_at = now()
     WHERE c.id = v_command.id
    RETURNING c.* INTO v_command;
    RETURN v_command;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.cancel_command(text, text, text) IS
'Cancels a queued, sent or executing command: status cancelled, error {"reason": "cancelled", "message", "cancelled_by", "previous_status"}, queue row removed, the deployment''s agent notified. Cancelling a cancelled command returns it. Errors: 22023 invalid argument, P0002 unknown command, 55000 already completed or failed.';
REVOKE ALL ON FUNCTION {{ schema }}.cancel_command(text, text, text) FROM PUBLIC;
