{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._apply_health_result(p_command {{ schema }}.commands)
RETURNS void
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_result jsonb := p_command.result;
    v_app_code text;
    v_status text;
    v_logs jsonb := '[]';
    v_checked_at timestamptz;
BEGIN
    IF pg_catalog.jsonb_typeof(v_result) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    v_app_code := coalesce(v_result ->> 'app_code', p_command.parameters ->> 'app_code');
    IF v_app_code IS NULL OR v_app_code = '' OR pg_catalog.length(v_app_code) > 255 THEN
        RETURN;  -- not about one app: the result stays on the command only
    END IF;

    -- The contract's mapping: our words first, then Stacker's health shape.
    v_status := CASE
        WHEN v_result ->> 'status' IN ('running', 'stopped', 'error', 'unknown') THEN v_result ->> 'status'
        WHEN v_result ->> 'container_state' = 'running' THEN 'running'
        WHEN v_result ->> 'container_state' = 'exited' THEN 'stopped'
        WHEN v_result ->> 'container_state' = 'failed' THEN 'error'
        WHEN v_result ->> 'status' = 'unhealthy' THEN 'error'
        ELSE 'unknown' END;

    IF pg_catalog.jsonb_typeof(v_result -> 'logs') = 'array' THEN
        SELECT coalesce(pg_catalog.jsonb_agg(
                   CASE WHEN pg_catalog.jsonb_typeof(e.value) = 'string' THEN e.value
                        ELSE pg_catalog.to_jsonb(e.value #>> '{}') END ORDER BY e.ordinality), '[]')
          INTO v_logs
          FROM pg_catalog.jsonb_array_elements(v_result -> 'logs') WITH ORDINALITY e;
    END IF;

    v_checked_at := now();
    IF v_result ? 'timestamp' THEN
        BEGIN
            v_checked_at := (v_result ->> 'timestamp')::timestamptz;
        EXCEPTION WHEN data_exception THEN
            v_checked_at := now();  -- unreadable: the report time stands in
        END;
        IF v_checked_at IS NULL OR NOT pg_catalog.isfinite(v_checked_at)
           OR v_checked_at > now() + interval '5 minutes' THEN
            v_checked_at := now();
        END IF;
    END IF;

    PERFORM {{ schema }}._set_app_status(p_command.deployment_hash, v_app_code, v_status, v_logs,
                                         v_checked_at, p_command.command_id);
END
$function$;

COMMENT ON FUNCTION {{ schema }}._apply_health_result({{ schema }}.commands) IS
'Private. Turns the result of a health command into its app''s app_status row: app_code from the result (or the command''s parameters); status from result.status when it is running, stopped, error or unknown, else container_state running/exited/failed, else unhealthy -> error, else unknown; logs from result.logs; checked_at from result.timestamp (now when absent, unreadable or over 5 minutes ahead).';
REVOKE ALL ON FUNCTION {{ schema }}._apply_health_result({{ schema }}.commands) FROM PUBLIC;
