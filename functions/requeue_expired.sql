{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.requeue_expired()
RETURNS integer
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_requeue text[];
    v_exhausted text[];
    v_moved integer := 0;
    v_count integer;
BEGIN
    -- The same rule as claim_commands, for every deployment at once; rows held
    -- by another transaction are left for the next sweep.
    SELECT coalesce(pg_catalog.array_agg(d.command_id) FILTER (WHERE NOT d.exhausted), '{}'),
           coalesce(pg_catalog.array_agg(d.command_id) FILTER (WHERE d.exhausted), '{}')
      INTO v_requeue, v_exhausted
      FROM (SELECT q.command_id, c.attempts >= c.max_attempts AS exhausted
              FROM {{ schema }}.command_queue q
              JOIN {{ schema }}.commands c ON c.command_id = q.command_id
             WHERE q.lease_expires_at <= now()
               AND c.status IN {{ m.in_flight_statuses() }}
               FOR NO KEY UPDATE OF q, c SKIP LOCKED) d;

    IF pg_catalog.cardinality(v_exhausted) > 0 THEN
        {{ m.fail_exhausted(schema, 'v_exhausted') | indent(8) }};
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_moved := v_moved + v_count;
    END IF;
    IF pg_catalog.cardinality(v_requeue) > 0 THEN
        UPDATE {{ schema }}.commands c
           SET status = 'queued', lease_expires_at = NULL, updated_at = now()
         WHERE c.command_id = ANY (v_requeue);
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_moved := v_moved + v_count;
    END IF;
    RETURN v_moved;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.requeue_expired() IS
'Sweeps expired leases now, with the rule claim_commands applies: a sent or executing command whose lease ran out goes back to queued (command.requeued, agents woken), or to failed with reason lease_expired when it used its last attempt. Returns how many commands it moved. Skips rows other transactions hold.';
REVOKE ALL ON FUNCTION {{ schema }}.requeue_expired() FROM PUBLIC;
