{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._commands_notify()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    -- Notifications are delivered at commit, and PostgreSQL folds identical
    -- ones of a transaction into one: a batch for one deployment wakes it once.
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_catalog.pg_notify({{ channel_commands }}, d.deployment_hash)
           FROM (SELECT DISTINCT n.deployment_hash FROM new_rows n
                  WHERE n.status = 'queued') d;
    ELSE
        -- New work (requeued) or work withdrawn (cancelled): wake the deployment's agent.
        PERFORM pg_catalog.pg_notify({{ channel_commands }}, d.deployment_hash)
           FROM (SELECT DISTINCT n.deployment_hash
                   FROM new_rows n JOIN old_rows o ON o.id = n.id
                  WHERE n.status IS DISTINCT FROM o.status
                    AND n.status IN ('queued', 'cancelled')) d;
        -- Every arrival at a terminal status.
        PERFORM pg_catalog.pg_notify({{ channel_events }},
                   pg_catalog.json_build_object('command_id', n.command_id,
                                                'deployment_hash', n.deployment_hash,
                                                'status', n.status)::text)
           FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE n.status IS DISTINCT FROM o.status
            AND n.status IN {{ m.terminal_statuses() }};
    END IF;
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._commands_notify() IS
'Triggers _900_notify_insert and _900_notify_update on commands (AFTER, statement): NOTIFY <schema>_commands with the deployment_hash for new, requeued and cancelled commands (a command scheduled for later is found by the agents'' polling when it comes due), and <schema>_command_events with {"command_id", "deployment_hash", "status"} at each terminal status; delivered at commit.';
REVOKE ALL ON FUNCTION {{ schema }}._commands_notify() FROM PUBLIC;
