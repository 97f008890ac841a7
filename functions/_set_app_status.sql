{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._set_app_status(
    p_deployment_hash text,
    p_app_code text,
    p_status text,
    p_logs jsonb,
    p_checked_at timestamptz,
    p_command_id text
)
RETURNS {{ schema }}.app_status
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_row {{ schema }}.app_status;
BEGIN
    INSERT INTO {{ schema }}.app_status AS s
           (deployment_hash, app_code, status, logs, checked_at, command_id, updated_at)
    VALUES (p_deployment_hash, p_app_code, p_status, p_logs, p_checked_at, p_command_id,
            pg_catalog.clock_timestamp())
    ON CONFLICT (deployment_hash, app_code) DO UPDATE
       SET status = excluded.status,
           logs = excluded.logs,
           checked_at = excluded.checked_at,
           command_id = excluded.command_id,
           updated_at = pg_catalog.clock_timestamp()
     WHERE s.checked_at <= excluded.checked_at
    RETURNING s.* INTO v_row;

    IF NOT FOUND THEN
        -- An older report than the one stored: leave the row as it is.
        SELECT s.* INTO v_row
          FROM {{ schema }}.app_status s
         WHERE s.deployment_hash = p_deployment_hash AND s.app_code = p_app_code;
    END IF;
    RETURN v_row;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._set_app_status(text, text, text, jsonb, timestamptz, text) IS
'Private. Upserts one app_status row unless the stored checked_at is newer, and returns the row as it stands. Callers validate the arguments.';
REVOKE ALL ON FUNCTION {{ schema }}._set_app_status(text, text, text, jsonb, timestamptz, text) FROM PUBLIC;
