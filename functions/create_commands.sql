{% import 'sql/_macros.sql' as m %}
{#- The keys of an element: create_command's arguments without p_. -#}
{% set known_keys = "('deployment_hash', 'command_type', 'parameters', 'priority', 'created_by', "
                    "'idempotency_key', 'timeout_seconds', 'scheduled_for', 'max_attempts', "
                    "'command_id', 'metadata')" %}
CREATE OR REPLACE FUNCTION {{ schema }}.create_commands(p_commands jsonb)
RETURNS SETOF {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_count integer;
    v_bad record;
    v_ids text[];
    v_row_ids uuid[];
    v_inserted uuid[];
    v_element record;
    v_existing {{ schema }}.commands;
BEGIN
    {{ m.check_batch('p_commands', 'commands', 'command objects', 10000, 'v_count') | indent(4) }}

    -- The checks of create_command, for every element at once. The first
    -- offending element is reported with its position and, when one field is
    -- at fault, that field and its value (else the element itself).
    SELECT e.ord, e.x, r.bad[1] AS field, r.bad[2] AS reason INTO v_bad
      FROM pg_catalog.jsonb_array_elements(p_commands) WITH ORDINALITY AS e(x, ord)
     CROSS JOIN LATERAL (SELECT CASE
        WHEN pg_catalog.jsonb_typeof(e.x) <> 'object' THEN ARRAY[NULL, 'must be a JSON object']
        WHEN EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(e.x) k
                      WHERE k NOT IN {{ known_keys }})
            THEN ARRAY[NULL, pg_catalog.format(
                'has an unknown key %s; known keys are the arguments of create_command without p_',
                (SELECT pg_catalog.quote_literal(pg_catalog.min(k))
                   FROM pg_catalog.jsonb_object_keys(e.x) k
                  WHERE k NOT IN {{ known_keys }}))]
        WHEN pg_catalog.jsonb_typeof(e.x -> 'deployment_hash') IS DISTINCT FROM 'string'
          OR pg_catalog.length(e.x ->> 'deployment_hash') NOT BETWEEN 1 AND 128
            THEN ARRAY['deployment_hash', 'must be a string of 1 to 128 characters']
        WHEN pg_catalog.jsonb_typeof(e.x -> 'command_type') IS DISTINCT FROM 'string'
          OR pg_catalog.length(e.x ->> 'command_type') NOT BETWEEN 1 AND 100
            THEN ARRAY['command_type', 'must be a string of 1 to 100 characters']
        WHEN e.x ? 'parameters' AND pg_catalog.jsonb_typeof(e.x -> 'parameters') <> 'object'
            THEN ARRAY['parameters', 'must be a JSON object']
        WHEN e.x ? 'parameters' AND pg_catalog.octet_length((e.x -> 'parameters')::text) > 1048576
            THEN ARRAY['parameters', pg_catalog.format('%s bytes is over the 1 MiB limit',
                                                       pg_catalog.octet_length((e.x -> 'parameters')::text))]
        WHEN e.x ? 'priority' AND (pg_catalog.jsonb_typeof(e.x -> 'priority') <> 'string'
                                   OR e.x ->> 'priority' NOT IN ('low', 'normal', 'high', 'critical'))
            THEN ARRAY['priority', 'must be low, normal, high or critical']
        WHEN pg_catalog.jsonb_typeof(e.x -> 'created_by') NOT IN ('null', 'string')
          OR pg_catalog.length(e.x ->> 'created_by') NOT BETWEEN 1 AND 255
            THEN ARRAY['created_by', 'must be null or a string of 1 to 255 characters']
        WHEN pg_catalog.jsonb_typeof(e.x -> 'idempotency_key') NOT IN ('null', 'string')
          OR pg_catalog.length(e.x ->> 'idempotency_key') NOT BETWEEN 1 AND 255
            THEN ARRAY['idempotency_key', 'must be null or a string of 1 to 255 characters']
        WHEN e.x ? 'timeout_seconds' AND CASE
                WHEN pg_catalog.jsonb_typeof(e.x -> 'timeout_seconds') <> 'number' THEN true
                ELSE (e.x ->> 'timeout_seconds')::numeric NOT BETWEEN 1 AND {{ m.max_lease_seconds() }}
                     OR (e.x ->> 'timeout_seconds')::numeric % 1 <> 0 END
            THEN ARRAY['timeout_seconds', 'must be an integer from 1 to {{ m.max_lease_seconds() }}']
        WHEN pg_catalog.jsonb_typeof(e.x -> 'scheduled_for') NOT IN ('null', 'string')
            THEN ARRAY['scheduled_for', 'must be null or a timestamp string']
        WHEN e.x ? 'max_attempts' AND CASE
                WHEN pg_catalog.jsonb_typeof(e.x -> 'max_attempts') <> 'number' THEN true
                ELSE (e.x ->> 'max_attempts')::numeric NOT BETWEEN 1 AND 100
                     OR (e.x ->> 'max_attempts')::numeric % 1 <> 0 END
            THEN ARRAY['max_attempts', 'must be an integer from 1 to 100']
        WHEN pg_catalog.jsonb_typeof(e.x -> 'command_id') NOT IN ('null', 'string')
          OR pg_catalog.length(e.x ->> 'command_id') NOT BETWEEN 1 AND 64
            THEN ARRAY['command_id', 'must be null or a string of 1 to 64 characters']
        WHEN e.x ? 'metadata' AND pg_catalog.jsonb_typeof(e.x -> 'metadata') <> 'object'
            THEN ARRAY['metadata', 'must be a JSON object']
        END AS bad) r
     WHERE r.bad IS NOT NULL
     ORDER BY e.ord
     LIMIT 1;
    IF FOUND AND v_bad.field IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('invalid commands[%s] %s: %s', v_bad.ord - 1, {{ m.show('v_bad.x') }}, v_bad.reason);
    ELSIF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('invalid commands[%s] %s %s: %s', v_bad.ord - 1, v_bad.field,
                                        {{ m.show('v_bad.x ->> v_bad.field') }}, v_bad.reason);
    END IF;

    -- Timestamps: parse each given one, naming the element that does not parse.
    FOR v_element IN
        SELECT e.ord, e.x ->> 'scheduled_for' AS scheduled_for
          FROM pg_catalog.jsonb_array_elements(p_commands) WITH ORDINALITY AS e(x, ord)
         WHERE pg_catalog.jsonb_typeof(e.x -> 'scheduled_for') = 'string'
    LOOP
        DECLARE
            v_at timestamptz;
        BEGIN
            v_at := v_element.scheduled_for::timestamptz;
            IF NOT pg_catalog.isfinite(v_at)
               OR v_at NOT BETWEEN now() - interval '1 year' AND now() + interval '1 year' THEN
                RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'out of range';
            END IF;
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = pg_catalog.format('invalid commands[%s] scheduled_for %s: must be NULL or a time within a year of now',
                                            v_element.ord - 1, {{ m.show('v_element.scheduled_for') }});
        END;
    END LOOP;

    v_ids := ARRAY(
        SELECT coalesce(e.x ->> 'command_id', 'cmd_' || pg_catalog.gen_random_uuid()::text)
          FROM pg_catalog.jsonb_array_elements(p_commands) WITH ORDINALITY AS e(x, ord)
         ORDER BY e.ord);
    -- Each element's row id, chosen here: RETURNING it tells exactly which elements
    -- were inserted (a command_id given twice in the batch is inserted only once).
    v_row_ids := ARRAY(SELECT pg_catalog.gen_random_uuid() FROM pg_catalog.generate_series(1, v_count));

    WITH inserted AS (
        INSERT INTO {{ schema }}.commands AS c
               (id, command_id, deployment_hash, type, status, priority, parameters, created_by,
                created_at, updated_at, scheduled_for, timeout_seconds, metadata, max_attempts,
                idempotency_key)
        SELECT v_row_ids[e.ord], v_ids[e.ord], e.x ->> 'deployment_hash', e.x ->> 'command_type', 'queued',
               coalesce(e.x ->> 'priority', 'normal'),
               coalesce(e.x -> 'parameters', '{}'::jsonb),
               coalesce(e.x ->> 'created_by', {{ m.actor() }}),
               pg_catalog.clock_timestamp(), now(),
               (e.x ->> 'scheduled_for')::timestamptz,
               coalesce((e.x ->> 'timeout_seconds')::numeric::integer, 300),
               coalesce(e.x -> 'metadata', '{}'::jsonb),
               coalesce((e.x ->> 'max_attempts')::numeric::integer, 3),
               e.x ->> 'idempotency_key'
          FROM pg_catalog.jsonb_array_elements(p_commands) WITH ORDINALITY AS e(x, ord)
         ORDER BY e.ord
        ON CONFLICT DO NOTHING
        RETURNING c.id
    )
    SELECT pg_catalog.array_agg(i.id) INTO v_inserted FROM inserted i;

    IF coalesce(pg_catalog.cardinality(v_inserted), 0) < v_count THEN
        -- Elements not inserted: a reused idempotency key, or an existing command_id.
        FOR v_element IN
            SELECT e.ord, e.x
              FROM pg_catalog.jsonb_array_elements(p_commands) WITH ORDINALITY AS e(x, ord)
             WHERE v_row_ids[e.ord] <> ALL (coalesce(v_inserted, '{}'))
             ORDER BY e.ord
        LOOP
            SELECT c.* INTO v_existing
              FROM {{ schema }}.commands c
             WHERE c.deployment_hash = v_element.x ->> 'deployment_hash'
               AND c.idempotency_key = v_element.x ->> 'idempotency_key';
            IF FOUND AND v_existing.type = v_element.x ->> 'command_type'
               AND v_existing.parameters = coalesce(v_element.x -> 'parameters', '{}'::jsonb) THEN
                v_ids[v_element.ord] := v_existing.command_id;
            ELSIF FOUND THEN
                RAISE EXCEPTION USING ERRCODE = '23505',
                    MESSAGE = pg_catalog.format(
                        'invalid commands[%s]: idempotency_key %s of deployment %s was already used by command %s with another type or parameters',
                        v_element.ord - 1, pg_catalog.quote_literal(v_element.x ->> 'idempotency_key'),
                        pg_catalog.quote_literal(v_element.x ->> 'deployment_hash'),
                        pg_catalog.quote_literal(v_existing.command_id));
            ELSE
                RAISE EXCEPTION USING ERRCODE = '23505',
                    MESSAGE = pg_catalog.format('invalid commands[%s]: command_id %s already exists (or appears earlier in the batch)',
                                                v_element.ord - 1, pg_catalog.quote_literal(v_ids[v_element.ord]));
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY
    {{ m.commands_in_order(schema, 'v_ids') | indent(4) }};
END
$function$;

COMMENT ON FUNCTION {{ schema }}.create_commands(jsonb) IS
'Batch create_command: p_commands is a JSON array (1 to 10000) of objects whose keys are create_command''s arguments without the p_ prefix (deployment_hash and command_type required). Same checks and idempotency per element, all in one statement; returns one row per element, in order. A bad element rejects the whole batch, naming its index. Errors: 22023 invalid argument, 23505 duplicate command_id or reused key.';
REVOKE ALL ON FUNCTION {{ schema }}.create_commands(jsonb) FROM PUBLIC;
