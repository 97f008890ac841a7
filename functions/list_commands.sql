{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.list_commands(
    p_deployment_hash text,
    p_status text DEFAULT NULL,
    p_limit integer DEFAULT 100
)
RETURNS SETOF {{ schema }}.commands
LANGUAGE plpgsql STABLE
{{ m.definer() }}
AS $function$
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    IF p_status IS NOT NULL
       AND p_status NOT IN ('queued', 'sent', 'executing', 'completed', 'failed', 'cancelled') THEN
        {{ m.invalid('status', 'p_status', 'must be NULL or queued, sent, executing, completed, failed or cancelled') }};
    END IF;
    {{ m.check_positive('p_limit', 'limit', 10000) }}
    RETURN QUERY
    SELECT c.* FROM {{ schema }}.commands c
     WHERE c.deployment_hash = p_deployment_hash
       AND (p_status IS NULL OR c.status = p_status)
     ORDER BY c.created_at DESC
     LIMIT p_limit;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.list_commands(text, text, integer) IS
'The newest p_limit (1 to 10000) commands of a deployment, optionally of one status, newest first. Errors: 22023 invalid argument.';
REVOKE ALL ON FUNCTION {{ schema }}.list_commands(text, text, integer) FROM PUBLIC;
