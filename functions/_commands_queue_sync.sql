{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._commands_queue_sync()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    -- Invariant: a command_queue row exists exactly while its command is
    -- queued, sent or executing. visible_at is when it may next be claimed:
    -- its schedule when queued, its lease end when in flight.
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM {{ schema }}.command_queue q
         USING new_rows n
         WHERE q.command_id = n.command_id
           AND n.status IN {{ m.terminal_statuses() }};

        UPDATE {{ schema }}.command_queue q
           SET deployment_hash = n.deployment_hash,
               priority = {{ m.priority_rank('n.priority') }},
               visible_at = {{ m.queue_visible_at('n') }},
               lease_expires_at = {{ m.queue_lease('n') }}
          FROM new_rows n
         WHERE q.command_id = n.command_id
           AND n.status IN {{ m.pending_statuses() }}
           AND (q.deployment_hash, q.priority, q.visible_at, q.lease_expires_at)
               IS DISTINCT FROM
               (n.deployment_hash, {{ m.priority_rank('n.priority') }},
                {{ m.queue_visible_at('n') }},
                {{ m.queue_lease('n') }});
    END IF;

    INSERT INTO {{ schema }}.command_queue
           (command_id, deployment_hash, priority, created_at, visible_at, lease_expires_at)
    SELECT n.command_id, n.deployment_hash, {{ m.priority_rank('n.priority') }}, n.created_at,
           {{ m.queue_visible_at('n') }},
           {{ m.queue_lease('n') }}
      FROM new_rows n
     WHERE n.status IN {{ m.pending_statuses() }}
       AND (TG_OP = 'INSERT'
            OR NOT EXISTS (SELECT FROM {{ schema }}.command_queue q WHERE q.command_id = n.command_id))
    ON CONFLICT (command_id) DO NOTHING;
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._commands_queue_sync() IS
'Triggers _500_queue_insert and _500_queue_update on commands (AFTER, statement, transition tables): keep exactly one command_queue row per queued, sent or executing command and none for finished ones, whatever statement changed the commands.';
REVOKE ALL ON FUNCTION {{ schema }}._commands_queue_sync() FROM PUBLIC;
