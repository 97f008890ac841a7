{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.update_app_status(
    p_deployment_hash text,
    p_app_code text,
    p_status text,
    p_logs jsonb DEFAULT '[]'::jsonb,
    p_checked_at timestamptz DEFAULT now(),
    p_command_id text DEFAULT NULL
)
RETURNS {{ schema }}.app_status
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    {{ m.check_text('p_app_code', 'app_code', 255) }}
    IF p_status IS NULL OR p_status NOT IN ('running', 'stopped', 'error', 'unknown') THEN
        {{ m.invalid('status', 'p_status', 'must be running, stopped, error or unknown') }};
    END IF;
    IF p_logs IS NULL OR pg_catalog.jsonb_typeof(p_logs) <> 'array'
       OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(p_logs) e
                   WHERE pg_catalog.jsonb_typeof(e) <> 'string') THEN
        {{ m.invalid('logs', 'p_logs', 'must be a JSON array of strings') }};
    END IF;
    IF p_checked_at IS NULL OR NOT pg_catalog.isfinite(p_checked_at)
       OR p_checked_at > now() + interval '5 minutes' THEN
        {{ m.invalid('checked_at', 'p_checked_at', 'must be a finite time no later than 5 minutes from now') }};
    END IF;
    {{ m.check_optional_text('p_command_id', 'command_id', 64) }}
    IF p_command_id IS NOT NULL AND NOT EXISTS (
           SELECT FROM {{ schema }}.commands c WHERE c.command_id = p_command_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = pg_catalog.format('command %s does not exist', {{ m.show('p_command_id') }});
    END IF;

    RETURN {{ schema }}._set_app_status(p_deployment_hash, p_app_code, p_status, p_logs,
                                        p_checked_at, p_command_id);
END
$function$;

COMMENT ON FUNCTION {{ schema }}.update_app_status(text, text, text, jsonb, timestamptz, text) IS
'Upserts the status of one app of a deployment (running, stopped, error or unknown) with its logs (a JSON array of strings) and checked_at; a report older than the stored checked_at leaves the row as it is and returns it. Errors: 22023 invalid argument, P0002 unknown command_id.';
REVOKE ALL ON FUNCTION {{ schema }}.update_app_status(text, text, text, jsonb, timestamptz, text) FROM PUBLIC;
