{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.report_results(p_agent_id uuid, p_reports jsonb)
RETURNS SETOF {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_count integer;
    v_bad record;
    v_element record;
    v_deployment text;
    v_command {{ schema }}.commands;
    v_accepted jsonb := '{}';
    v_earlier jsonb;
    v_ids uuid[] := '{}';
    v_statuses text[] := '{}';
    v_results jsonb[] := '{}';
    v_errors jsonb[] := '{}';
    v_command_ids text[];
BEGIN
    {{ m.check_batch('p_reports', 'reports', 'report objects', 1000, 'v_count') | indent(4) }}

    -- report_result's argument checks, for every element; the first offending
    -- element is named by its 0-based index.
    SELECT e.ord, e.x, r.reason INTO v_bad
      FROM pg_catalog.jsonb_array_elements(p_reports) WITH ORDINALITY AS e(x, ord)
     CROSS JOIN LATERAL (SELECT CASE
        WHEN pg_catalog.jsonb_typeof(e.x) <> 'object' THEN 'must be a JSON object'
        WHEN EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(e.x) k
                      WHERE k NOT IN ('command_id', 'status', 'result', 'error'))
            THEN 'has an unknown key; known keys are command_id, status, result and error'
        WHEN pg_catalog.jsonb_typeof(e.x -> 'status') IS DISTINCT FROM 'string'
          OR e.x ->> 'status' NOT IN ('completed', 'failed')
            THEN 'status must be completed or failed'
        WHEN pg_catalog.jsonb_typeof(e.x -> 'command_id') IS DISTINCT FROM 'string'
          OR pg_catalog.length(e.x ->> 'command_id') NOT BETWEEN 1 AND 64
            THEN 'command_id must be a string of 1 to 64 characters'
        END AS reason) r
     WHERE r.reason IS NOT NULL
     ORDER BY e.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('invalid reports[%s] %s: %s', v_bad.ord - 1, {{ m.show('v_bad.x') }}, v_bad.reason);
    END IF;
    IF p_agent_id IS NULL THEN
        {{ m.invalid('agent_id', 'p_agent_id', 'must be the agent id returned by register_agent') }};
    END IF;

    -- Looked up by = ANY of an array: an index scan whatever the table's size or
    -- statistics (a join to jsonb_array_elements may be planned as a seq scan).
    v_command_ids := ARRAY(SELECT e.x ->> 'command_id'
                             FROM pg_catalog.jsonb_array_elements(p_reports) WITH ORDINALITY AS e(x, ord)
                            ORDER BY e.ord);

    -- Element by element, in order, report_result's checks: the command exists
    -- (P0002), the agent is its deployment's (42501), its state allows the report
    -- (55000). The commands are locked in command_id order, so two batches never
    -- deadlock; like report_result, this waits for a row another call holds.
    FOR v_element IN
        SELECT e.ord, e.x ->> 'command_id' AS command_id, e.x ->> 'status' AS status,
               CASE WHEN pg_catalog.jsonb_typeof(e.x -> 'result') <> 'null' THEN e.x -> 'result' END AS result,
               CASE WHEN pg_catalog.jsonb_typeof(e.x -> 'error') <> 'null' THEN e.x -> 'error' END AS error,
               c.id, c.status AS c_status, c.deployment_hash AS c_deployment, c.attempts AS c_attempts,
               c.result AS c_result, c.error AS c_error
          FROM pg_catalog.jsonb_array_elements(p_reports) WITH ORDINALITY AS e(x, ord)
          LEFT JOIN (SELECT l.id, l.command_id, l.status, l.deployment_hash, l.attempts, l.result, l.error
                       FROM {{ schema }}.commands l
                      WHERE l.command_id = ANY (v_command_ids)
                      ORDER BY l.command_id
                        FOR NO KEY UPDATE) c ON c.command_id = e.x ->> 'command_id'
         ORDER BY e.ord
    LOOP
        IF v_element.id IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002',
                MESSAGE = pg_catalog.format('invalid reports[%s]: command %s does not exist',
                                            v_element.ord - 1, {{ m.show('v_element.command_id') }});
        END IF;
        IF v_deployment IS DISTINCT FROM v_element.c_deployment THEN
            -- One agent serves one deployment: a second deployment raises 42501 here.
            PERFORM {{ schema }}._agent_seen(v_element.c_deployment, p_agent_id);
            v_deployment := v_element.c_deployment;
        END IF;
        IF v_element.c_status = 'cancelled' THEN
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = pg_catalog.format('invalid reports[%s]: command %s was cancelled; its result is not recorded',
                                            v_element.ord - 1, pg_catalog.quote_literal(v_element.command_id));
        END IF;
        IF v_accepted ? v_element.command_id THEN
            -- Given twice: the earlier element has finished it by now.
            v_earlier := v_accepted -> v_element.command_id;
            IF v_earlier ->> 'status' = v_element.status
               AND v_earlier -> 'result' = coalesce(v_element.result, 'null')
               AND v_earlier -> 'error' = coalesce(v_element.error, 'null') THEN
                CONTINUE;  -- the same report again
            END IF;
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = pg_catalog.format('invalid reports[%s]: command %s is already %s by an earlier element; a different report (%s) is refused',
                                            v_element.ord - 1, pg_catalog.quote_literal(v_element.command_id),
                                            v_earlier ->> 'status', v_element.status);
        END IF;
        IF v_element.c_status IN ('completed', 'failed') THEN
            IF v_element.c_status = v_element.status
               AND v_element.c_result IS NOT DISTINCT FROM v_element.result
               AND v_element.c_error IS NOT DISTINCT FROM v_element.error THEN
                CONTINUE;  -- the same report again
            END IF;
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = pg_catalog.format('invalid reports[%s]: command %s is already %s; a different report (%s) is refused',
                                            v_element.ord - 1, pg_catalog.quote_literal(v_element.command_id),
                                            v_element.c_status, v_element.status);
        END IF;
        IF v_element.c_attempts = 0 THEN
            RAISE EXCEPTION USING ERRCODE = '55000',
                MESSAGE = pg_catalog.format('invalid reports[%s]: command %s was never delivered; claim it before reporting',
                                            v_element.ord - 1, pg_catalog.quote_literal(v_element.command_id));
        END IF;
        v_accepted := v_accepted || pg_catalog.jsonb_build_object(v_element.command_id,
            pg_catalog.jsonb_build_object('status', v_element.status, 'result', v_element.result,
                                          'error', v_element.error));
        v_ids := pg_catalog.array_append(v_ids, v_element.id);
        v_statuses := pg_catalog.array_append(v_statuses, v_element.status);
        v_results := pg_catalog.array_append(v_results, v_element.result);
        v_errors := pg_catalog.array_append(v_errors, v_element.error);
    END LOOP;

    -- Every accepted report in one statement: the queue rows, audit rows and
    -- notifications of the whole batch are written by one firing of each trigger.
    -- Accepted even after the lease ran out or the command was requeued: the work was done.
    FOR v_command IN
        UPDATE {{ schema }}.commands c
           SET status = r.status,
               result = r.result,
               error = r.error,
               completed_at = now(),
               lease_expires_at = NULL,
               updated_at = now()
          FROM ROWS FROM (pg_catalog.unnest(v_ids), pg_catalog.unnest(v_statuses),
                         pg_catalog.unnest(v_results), pg_catalog.unnest(v_errors)) AS r(id, status, result, error)
         WHERE c.id = r.id
        RETURNING c.*
    LOOP
        IF v_command.type = 'health' THEN
            PERFORM {{ schema }}._apply_health_result(v_command);
        END IF;
    END LOOP;

    RETURN QUERY
    {{ m.commands_in_order(schema, 'v_command_ids') | indent(4) }};
END
$function$;

COMMENT ON FUNCTION {{ schema }}.report_results(uuid, jsonb) IS
'Batch report_result for one agent: p_reports is a JSON array (1 to 1000) of {"command_id", "status", "result", "error"} objects (command_id and status required). The same checks and outcome per element as report_result, in one statement: all reports are recorded or none, the first offending element is named by its index. Returns one row per element, in order. Errors: 22023 invalid argument, P0002 unknown command, 42501 not the agent of a command''s deployment, 55000 never delivered, cancelled, or finished with another outcome.';
REVOKE ALL ON FUNCTION {{ schema }}.report_results(uuid, jsonb) FROM PUBLIC;
