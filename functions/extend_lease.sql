{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.extend_lease(
    p_command_id text,
    p_agent_id uuid,
    p_lease_seconds integer DEFAULT NULL
)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
    v_lease_expires_at timestamptz;
BEGIN
    IF p_lease_seconds IS NOT NULL AND (p_lease_seconds < 1 OR p_lease_seconds > {{ m.max_lease_seconds() }}) THEN
        {{ m.invalid('lease_seconds', 'p_lease_seconds', 'must be NULL or an integer from 1 to ' ~ m.max_lease_seconds()) }};
    END IF;
    v_command := {{ schema }}._command_for_agent(p_command_id, p_agent_id);
    IF v_command.status NOT IN {{ m.in_flight_statuses() }} THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('command %s is %s; only a sent or executing command has a lease',
                                        pg_catalog.quote_literal(p_command_id), v_command.status);
    END IF;
    IF v_command.lease_expires_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = pg_catalog.format('the lease of command %s ran out at %s; it is due for redelivery',
                                        pg_catalog.quote_literal(p_command_id), v_command.lease_expires_at);
    END IF;

    v_lease_expires_at := now() + pg_catalog.make_interval(
        secs => coalesce(p_lease_seconds, v_command.timeout_seconds, 300));
    UPDATE {{ schema }}.commands c
       SET lease_expires_at = v_lease_expires_at, updated_at = now()
     WHERE c.id = v_command.id;
    RETURN v_lease_expires_at;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.extend_lease(text, uuid, integer) IS
'Sets the lease of a sent or executing command to now + p_lease_seconds (default: its timeout_seconds) for the deployment''s agent while the lease still runs, and returns the new lease end. Errors: 22023 invalid argument, P0002 unknown command, 42501 not the deployment''s agent, 55000 not in flight or lease ran out.';
REVOKE ALL ON FUNCTION {{ schema }}.extend_lease(text, uuid, integer) FROM PUBLIC;
