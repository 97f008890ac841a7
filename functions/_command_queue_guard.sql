{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._command_queue_guard()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    -- Fires only for statements run directly against command_queue (not from
    -- our own triggers): it is what keeps SQL written for Stacker's two-step
    -- queue from breaking the "one queue row while pending" invariant.
    IF TG_OP = 'INSERT' THEN
        SELECT c.* INTO v_command FROM {{ schema }}.commands c WHERE c.command_id = NEW.command_id;
        IF NOT FOUND THEN
            RETURN NEW;  -- the foreign key reports the unknown command
        END IF;
        IF v_command.status NOT IN {{ m.pending_statuses() }} THEN
            RETURN NULL;  -- a finished command has no queue row
        END IF;
        IF EXISTS (SELECT FROM {{ schema }}.command_queue q WHERE q.command_id = NEW.command_id) THEN
            RETURN NULL;  -- already queued (by the insert of the command itself)
        END IF;
        -- The row is derived from its command, whatever the statement said.
        NEW.deployment_hash := v_command.deployment_hash;
        NEW.priority := {{ m.priority_rank('v_command.priority') }};
        NEW.created_at := v_command.created_at;
        NEW.visible_at := {{ m.queue_visible_at('v_command') }};
        NEW.lease_expires_at := {{ m.queue_lease('v_command') }};
        RETURN NEW;
    END IF;

    -- DELETE: the row of a command that is still pending stays; it leaves when
    -- the command finishes (report_result, cancel_command) or is deleted.
    IF EXISTS (SELECT FROM {{ schema }}.commands c
                WHERE c.command_id = OLD.command_id AND c.status IN {{ m.pending_statuses() }}) THEN
        RETURN NULL;
    END IF;
    RETURN OLD;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._command_queue_guard() IS
'Trigger _100_guard_insert and _100_guard_delete on command_queue (BEFORE, row, direct statements only): an INSERT for a command that already has its row or is finished does nothing, and fills the row from its command otherwise; a DELETE of the row of a still-pending command does nothing. Together with the commands triggers this keeps one queue row exactly while a command is queued, sent or executing.';
REVOKE ALL ON FUNCTION {{ schema }}._command_queue_guard() FROM PUBLIC;
