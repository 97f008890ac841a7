{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.cleanup(
    p_queue_ttl interval DEFAULT '48 hours',
    p_retention interval DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_expired integer := 0;
    v_removed integer := 0;
    v_deleted integer := 0;
    v_fits boolean;
BEGIN
    -- An interval reaching back past the first representable timestamp (e.g.
    -- '10000 years') cannot be subtracted from now(): 22023 naming it, not 22008.
    BEGIN
        v_fits := pg_catalog.isfinite(now() - p_queue_ttl);
    EXCEPTION WHEN datetime_field_overflow THEN
        v_fits := false;
    END;
    IF p_queue_ttl IS NULL OR p_queue_ttl <= interval '0' OR NOT v_fits THEN
        {{ m.invalid('queue_ttl', 'p_queue_ttl', 'must be a positive interval') }};
    END IF;
    IF p_retention IS NOT NULL THEN
        BEGIN
            v_fits := pg_catalog.isfinite(now() - p_retention);
        EXCEPTION WHEN datetime_field_overflow THEN
            v_fits := false;
        END;
        IF p_retention <= interval '0' OR NOT v_fits THEN
            {{ m.invalid('retention', 'p_retention', 'must be NULL or a positive interval') }};
        END IF;
    END IF;

    -- Queued commands nobody claimed within the TTL (counted from when they
    -- became due) are cancelled with reason expired.
    UPDATE {{ schema }}.commands c
       SET status = 'cancelled',
           error = pg_catalog.jsonb_build_object('reason', 'expired', 'queue_ttl', p_queue_ttl::text),
           completed_at = now(),
           updated_at = now()
     WHERE c.command_id IN (
               SELECT q.command_id
                 FROM {{ schema }}.command_queue q
                 JOIN {{ schema }}.commands k ON k.command_id = q.command_id
                WHERE q.lease_expires_at IS NULL
                  AND k.status = 'queued'
                  AND coalesce(k.scheduled_for, k.created_at) < now() - p_queue_ttl
                  FOR NO KEY UPDATE OF q, k SKIP LOCKED);
    GET DIAGNOSTICS v_expired = ROW_COUNT;

    -- Queue rows whose command is finished (possible only if triggers were
    -- bypassed, or in data from before adoption).
    DELETE FROM {{ schema }}.command_queue q
     WHERE NOT EXISTS (SELECT FROM {{ schema }}.commands c
                        WHERE c.command_id = q.command_id AND c.status IN {{ m.pending_statuses() }});
    GET DIAGNOSTICS v_removed = ROW_COUNT;

    IF p_retention IS NOT NULL THEN
        DELETE FROM {{ schema }}.commands c
         WHERE c.status IN {{ m.terminal_statuses() }}
           AND c.created_at < now() - p_retention
           AND coalesce(c.completed_at, c.updated_at) < now() - p_retention;
        GET DIAGNOSTICS v_deleted = ROW_COUNT;
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'expired', v_expired,
        'queue_rows_removed', v_removed,
        'deleted', v_deleted);
END
$function$;

COMMENT ON FUNCTION {{ schema }}.cleanup(interval, interval) IS
'Stacker''s cleanup job: cancels queued commands due for longer than p_queue_ttl (error reason expired), removes queue rows whose command is finished (left by SQL that bypassed the triggers), and with p_retention deletes finished commands older than it. Returns {"expired", "queue_rows_removed", "deleted"}. Errors: 22023 invalid interval.';
REVOKE ALL ON FUNCTION {{ schema }}.cleanup(interval, interval) FROM PUBLIC;
