{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.claim_commands(
    p_deployment_hash text,
    p_agent_id uuid,
    p_limit integer DEFAULT 1,
    p_lease_seconds integer DEFAULT NULL
)
RETURNS SETOF {{ schema }}.commands
LANGUAGE plpgsql VOLATILE
ROWS 1
{{ m.definer() }}
AS $function$
DECLARE
    v_remaining integer;
    v_claim text[];
    v_exhausted text[];
    v_batch {{ schema }}.commands[];
    v_rows {{ schema }}.commands[] := '{}';
BEGIN
    {{ m.check_text('p_deployment_hash', 'deployment_hash', 128) }}
    {{ m.check_positive('p_limit', 'limit', 1000) }}
    IF p_lease_seconds IS NOT NULL AND (p_lease_seconds < 1 OR p_lease_seconds > {{ m.max_lease_seconds() }}) THEN
        {{ m.invalid('lease_seconds', 'p_lease_seconds', 'must be NULL or an integer from 1 to ' ~ m.max_lease_seconds()) }};
    END IF;
    PERFORM {{ schema }}._agent_seen(p_deployment_hash, p_agent_id);

    v_remaining := p_limit;
    LOOP
        -- Due rows of this deployment, best first: queued ones whose schedule has
        -- come and in-flight ones whose lease ran out. Rows another transaction
        -- holds (a concurrent claim, a report, a cancel) are skipped, never waited for.
        SELECT coalesce(pg_catalog.array_agg(d.command_id) FILTER (WHERE NOT d.exhausted), '{}'),
               coalesce(pg_catalog.array_agg(d.command_id) FILTER (WHERE d.exhausted), '{}')
          INTO v_claim, v_exhausted
          FROM (SELECT q.command_id,
                       c.status <> 'queued' AND c.attempts >= c.max_attempts AS exhausted
                  FROM {{ schema }}.command_queue q
                  JOIN {{ schema }}.commands c ON c.command_id = q.command_id
                 WHERE q.deployment_hash = p_deployment_hash
                   AND q.visible_at <= now()
                 ORDER BY q.priority DESC, q.created_at
                 LIMIT v_remaining
                   FOR NO KEY UPDATE OF q, c SKIP LOCKED) d;

        IF pg_catalog.cardinality(v_exhausted) > 0 THEN
            -- The lease ran out on the last allowed attempt: fail, do not redeliver.
            {{ m.fail_exhausted(schema, 'v_exhausted') | indent(12) }};
        END IF;

        EXIT WHEN pg_catalog.cardinality(v_claim) = 0 AND pg_catalog.cardinality(v_exhausted) = 0;

        IF pg_catalog.cardinality(v_claim) > 0 THEN
            WITH claimed AS (
                UPDATE {{ schema }}.commands c
                   SET status = 'sent',
                       sent_at = now(),
                       started_at = NULL,
                       agent_id = p_agent_id,
                       attempts = c.attempts + 1,
                       lease_expires_at = now() + pg_catalog.make_interval(
                           secs => coalesce(p_lease_seconds, c.timeout_seconds, 300)),
                       updated_at = now()
                 WHERE c.command_id = ANY (v_claim)
                RETURNING c AS claimed_row
            )
            SELECT coalesce(pg_catalog.array_agg(claimed.claimed_row), '{}') INTO v_batch
              FROM claimed;
            v_rows := v_rows || v_batch;
            v_remaining := v_remaining - pg_catalog.cardinality(v_batch);
        END IF;

        -- Only failed rows took places in this round: look again for the rest.
        EXIT WHEN v_remaining <= 0 OR pg_catalog.cardinality(v_exhausted) = 0;
    END LOOP;

    -- One batch, best first, even when it took more than one round (a later
    -- round's statement sees rows committed or unlocked since the first).
    RETURN QUERY
    SELECT * FROM pg_catalog.unnest(v_rows) r
     ORDER BY {{ m.priority_rank('r.priority') }} DESC, r.created_at;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.claim_commands(text, uuid, integer, integer) IS
'Claims up to p_limit (1 to 1000) due commands of a deployment for its registered agent: highest priority first, then oldest; queued ones whose scheduled_for has come and in-flight ones whose lease ran out (redelivery). Each becomes sent, attempts + 1, leased for p_lease_seconds (default: its timeout_seconds). A command whose lease ran out on its last attempt becomes failed (reason lease_expired) instead. Uses FOR NO KEY UPDATE SKIP LOCKED: never waits for, and never shares a command with, another claim. Errors: 22023 invalid argument, 42501 not the deployment''s agent.';
REVOKE ALL ON FUNCTION {{ schema }}.claim_commands(text, uuid, integer, integer) FROM PUBLIC;
