{% import 'sql/_macros.sql' as m %}
-- Stacker's hourly pg_cron job calls this by name
-- (migration 20260312210000_command_queue_cleanup_cron: SELECT stacker_command_queue_cleanup();),
-- so it keeps Stacker's name, argument name and default. Stacker's own version
-- deleted the queue rows of sent commands and every row older than the TTL,
-- which would now lose in-flight commands; this one does what cleanup() does,
-- then sweeps expired leases, since the old binary never calls requeue_expired().
CREATE OR REPLACE FUNCTION {{ schema }}.stacker_command_queue_cleanup(
    queue_ttl interval DEFAULT '48 hours'
)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    RETURN {{ schema }}.cleanup(queue_ttl)
           || pg_catalog.jsonb_build_object('leases_swept', {{ schema }}.requeue_expired());
END
$function$;

COMMENT ON FUNCTION {{ schema }}.stacker_command_queue_cleanup(interval) IS
'Stacker''s cleanup job under its own name (pg_cron calls it hourly on adopted databases): cleanup(queue_ttl), then requeue_expired(). Returns cleanup''s counts plus {"leases_swept"}. Errors: 22023 invalid interval.';
REVOKE ALL ON FUNCTION {{ schema }}.stacker_command_queue_cleanup(interval) FROM PUBLIC;
