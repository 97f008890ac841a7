{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.create_command(
    p_deployment_hash text,
    p_command_type text,
    p_parameters jsonb DEFAULT '{}'::jsonb,
    p_priority text DEFAULT 'normal',
    p_created_by text DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_timeout_seconds integer DEFAULT 300,
    p_scheduled_for timestamptz DEFAULT NULL,
    p_max_attempts integer DEFAULT 3,
    p_command_id text DEFAULT NULL,
    p_metadata jsonb DEFAULT '{}'::jsonb
)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    {{ m.check_text('p_command_type', 'command_type', 100) }}
    {{ m.check_json('p_parameters', 'parameters', 'object') }}
    IF pg_catalog.octet_length(p_parameters::text) > 1048576 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('invalid parameters %s: %s bytes is over the 1 MiB limit',
                                        {{ m.show('p_parameters') }}, pg_catalog.octet_length(p_parameters::text));
    END IF;
    IF p_priority IS NULL OR p_priority NOT IN ('low', 'normal', 'high', 'critical') THEN
        {{ m.invalid('priority', 'p_priority', 'must be low, normal, high or critical') }};
    END IF;
    {{ m.check_optional_text('p_created_by', 'created_by', 255) }}
    {{ m.check_optional_text('p_idempotency_key', 'idempotency_key', 255) }}
    {{ m.check_positive('p_timeout_seconds', 'timeout_seconds', m.max_lease_seconds()) }}
    IF p_scheduled_for IS NOT NULL
       AND (NOT pg_catalog.isfinite(p_scheduled_for)
            OR p_scheduled_for NOT BETWEEN now() - interval '1 year' AND now() + interval '1 year') THEN
        {{ m.invalid('scheduled_for', 'p_scheduled_for', 'must be NULL or a time within a year of now') }};
    END IF;
    {{ m.check_positive('p_max_attempts', 'max_attempts', 100) }}
    {{ m.check_optional_text('p_command_id', 'command_id', 64) }}
    {{ m.check_json('p_metadata', 'metadata', 'object') }}

    -- The command and (by trigger) its queue row, in this statement's transaction.
    INSERT INTO {{ schema }}.commands AS c
           (command_id, deployment_hash, type, status, priority, parameters, created_by,
            created_at, updated_at, scheduled_for, timeout_seconds, metadata, max_attempts,
            idempotency_key)
    VALUES (coalesce(p_command_id, 'cmd_' || pg_catalog.gen_random_uuid()::text),
            p_deployment_hash, p_command_type, 'queued', p_priority, p_parameters,
            coalesce(p_created_by, {{ m.actor() }}),
            pg_catalog.clock_timestamp(), now(), p_scheduled_for, p_timeout_seconds, p_metadata,
            p_max_attempts, p_idempotency_key)
    ON CONFLICT DO NOTHING
    RETURNING c.* INTO v_command;
    IF FOUND THEN
        RETURN v_command;
    END IF;

    -- Nothing inserted: the idempotency key was used before, or the command_id exists.
    IF p_idempotency_key IS NOT NULL THEN
        SELECT c.* INTO v_command
          FROM {{ schema }}.commands c
         WHERE c.deployment_hash = p_deployment_hash AND c.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            IF v_command.type = p_command_type AND v_command.parameters = p_parameters THEN
                RETURN v_command;
            END IF;
            RAISE EXCEPTION USING ERRCODE = '23505',
                MESSAGE = pg_catalog.format(
                    'idempotency_key %s of deployment %s was already used by command %s with another type or parameters',
                    {{ m.show('p_idempotency_key') }}, {{ m.show('p_deployment_hash') }},
                    pg_catalog.quote_literal(v_command.command_id));
        END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '23505',
        MESSAGE = pg_catalog.format('command_id %s already exists', {{ m.show('p_command_id') }});
END
$function$;

COMMENT ON FUNCTION {{ schema }}.create_command(text, text, jsonb, text, text, text, integer, timestamptz, integer, text, jsonb) IS
'Creates a command, status queued, and its queue row in one transaction; waiting agents of the deployment are woken at commit. command_id defaults to cmd_<uuid>, created_by to the actor. The same idempotency_key for the same deployment returns the existing command when type and parameters match and raises 23505 when they differ. Errors: 22023 invalid argument, 23505 duplicate command_id or reused key.';
REVOKE ALL ON FUNCTION {{ schema }}.create_command(text, text, jsonb, text, text, text, integer, timestamptz, integer, text, jsonb) FROM PUBLIC;
