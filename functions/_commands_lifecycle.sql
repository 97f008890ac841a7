{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._commands_lifecycle()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- A finished command stays finished: no later statement may change its
        -- outcome (Stacker's report used to overwrite cancelled commands).
        IF OLD.status IN {{ m.terminal_statuses() }} THEN
            IF (NEW.status, NEW.result, NEW.error) IS DISTINCT FROM (OLD.status, OLD.result, OLD.error) THEN
                RAISE EXCEPTION USING ERRCODE = '55000',
                    MESSAGE = pg_catalog.format('command %s is already %s; it cannot become %s',
                                                pg_catalog.quote_literal(OLD.command_id), OLD.status,
                                                NEW.status),
                    HINT = 'Finished commands (completed, failed, cancelled) are immutable; create a new command instead.';
            END IF;
            RETURN NEW;
        END IF;
        -- Same status: nothing to fill in, except for trigger _100_lifecycle_resend
        -- (a statement that set status = 'sent' on a sent command: Stacker's old
        -- binary handing out a command again), which counts as a new delivery.
        IF NEW.status IS NOT DISTINCT FROM OLD.status AND TG_ARGV[0] IS DISTINCT FROM 'resend' THEN
            RETURN NEW;
        END IF;
        NEW.updated_at := now();
    END IF;

    -- Fill in what a plain UPDATE/INSERT of the status left out, so that SQL
    -- written for Stacker's tables (no lease, no attempts) still leaves a
    -- command that is redelivered when its agent goes quiet.
    IF NEW.status IN {{ m.in_flight_statuses() }} THEN
        IF TG_OP = 'INSERT' THEN
            NEW.attempts := greatest(NEW.attempts, 1);
            NEW.sent_at := coalesce(NEW.sent_at, now());
            NEW.lease_expires_at := coalesce(NEW.lease_expires_at,
                now() + pg_catalog.make_interval(secs => coalesce(NEW.timeout_seconds, 300)));
        ELSIF OLD.status = 'queued' OR NEW.status = 'sent' THEN
            -- A delivery the statement did not describe: count it and lease it.
            IF NEW.attempts IS NOT DISTINCT FROM OLD.attempts THEN
                NEW.attempts := OLD.attempts + 1;
            END IF;
            IF NEW.sent_at IS NOT DISTINCT FROM OLD.sent_at THEN
                NEW.sent_at := now();
            END IF;
            IF NEW.lease_expires_at IS NOT DISTINCT FROM OLD.lease_expires_at THEN
                NEW.lease_expires_at :=
                    now() + pg_catalog.make_interval(secs => coalesce(NEW.timeout_seconds, 300));
            END IF;
        END IF;
        IF NEW.status = 'executing'
           AND (CASE WHEN TG_OP = 'INSERT' THEN NEW.started_at IS NULL
                     ELSE NEW.started_at IS NOT DISTINCT FROM OLD.started_at END) THEN
            NEW.started_at := now();
        END IF;
    ELSIF NEW.status = 'queued' THEN
        NEW.lease_expires_at := NULL;
    ELSE
        IF (CASE WHEN TG_OP = 'INSERT' THEN NEW.completed_at IS NULL
                 ELSE NEW.completed_at IS NOT DISTINCT FROM OLD.completed_at END) THEN
            NEW.completed_at := now();
        END IF;
        NEW.lease_expires_at := NULL;
    END IF;
    RETURN NEW;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._commands_lifecycle() IS
'Triggers _100_lifecycle_insert, _100_lifecycle_update and _100_lifecycle_resend on commands (BEFORE, row): refuses any change to the status, result or error of a finished command (55000) and fills in the delivery fields (attempts, sent_at, lease, started_at, completed_at) that a plain status UPDATE left out; an UPDATE that sets status = ''sent'' on a sent command (Stacker''s old binary redelivering it) counts as a new delivery.';
REVOKE ALL ON FUNCTION {{ schema }}._commands_lifecycle() FROM PUBLIC;
