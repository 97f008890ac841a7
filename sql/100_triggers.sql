-- Triggers, named for their order and purpose (graphile-worker style): within
-- one timing and level PostgreSQL fires them in name order.
{% import 'sql/_macros.sql' as m %}

-- commands ------------------------------------------------------------------
CREATE OR REPLACE TRIGGER _100_lifecycle_insert
    BEFORE INSERT ON {{ schema }}.commands
    FOR EACH ROW WHEN (NEW.status <> 'queued')
    EXECUTE FUNCTION {{ schema }}._commands_lifecycle();
CREATE OR REPLACE TRIGGER _100_lifecycle_update
    BEFORE UPDATE ON {{ schema }}.commands
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.status IN {{ m.terminal_statuses() }})
    EXECUTE FUNCTION {{ schema }}._commands_lifecycle();
-- An UPDATE that names status and leaves a sent command sent: Stacker's old
-- binary handing it out again (UPDATE commands SET status = 'sent'), a new delivery.
CREATE OR REPLACE TRIGGER _100_lifecycle_resend
    BEFORE UPDATE OF status ON {{ schema }}.commands
    FOR EACH ROW WHEN (OLD.status = 'sent' AND NEW.status = 'sent')
    EXECUTE FUNCTION {{ schema }}._commands_lifecycle('resend');

CREATE OR REPLACE TRIGGER _500_queue_insert
    AFTER INSERT ON {{ schema }}.commands
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_queue_sync();
CREATE OR REPLACE TRIGGER _500_queue_update
    AFTER UPDATE ON {{ schema }}.commands
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_queue_sync();

CREATE OR REPLACE TRIGGER _800_audit_insert
    AFTER INSERT ON {{ schema }}.commands
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_audit();
CREATE OR REPLACE TRIGGER _800_audit_update
    AFTER UPDATE ON {{ schema }}.commands
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_audit();

CREATE OR REPLACE TRIGGER _900_notify_insert
    AFTER INSERT ON {{ schema }}.commands
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_notify();
CREATE OR REPLACE TRIGGER _900_notify_update
    AFTER UPDATE ON {{ schema }}.commands
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._commands_notify();

-- command_queue: only statements run directly against it (depth 0); the
-- commands triggers above maintain it themselves.
CREATE OR REPLACE TRIGGER _100_guard_insert
    BEFORE INSERT ON {{ schema }}.command_queue
    FOR EACH ROW WHEN (pg_catalog.pg_trigger_depth() = 0)
    EXECUTE FUNCTION {{ schema }}._command_queue_guard();
CREATE OR REPLACE TRIGGER _100_guard_delete
    BEFORE DELETE ON {{ schema }}.command_queue
    FOR EACH ROW WHEN (pg_catalog.pg_trigger_depth() = 0)
    EXECUTE FUNCTION {{ schema }}._command_queue_guard();

-- agents ------------------------------------------------------------------------
CREATE OR REPLACE TRIGGER _800_audit_insert
    AFTER INSERT ON {{ schema }}.agents
    FOR EACH ROW EXECUTE FUNCTION {{ schema }}._agents_audit();
CREATE OR REPLACE TRIGGER _800_audit_update
    AFTER UPDATE ON {{ schema }}.agents
    FOR EACH ROW WHEN ((OLD.id, OLD.deployment_hash, OLD.version, OLD.capabilities,
                        OLD.system_info, OLD.registered_at)
                       IS DISTINCT FROM
                       (NEW.id, NEW.deployment_hash, NEW.version, NEW.capabilities,
                        NEW.system_info, NEW.registered_at))
    EXECUTE FUNCTION {{ schema }}._agents_audit();

-- app_status --------------------------------------------------------------------
CREATE OR REPLACE TRIGGER _800_audit_insert
    AFTER INSERT ON {{ schema }}.app_status
    FOR EACH ROW EXECUTE FUNCTION {{ schema }}._app_status_audit();
CREATE OR REPLACE TRIGGER _800_audit_update
    AFTER UPDATE ON {{ schema }}.app_status
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION {{ schema }}._app_status_audit();

-- audit_log ----------------------------------------------------------------------
CREATE OR REPLACE TRIGGER _100_append_only
    BEFORE UPDATE OR DELETE ON {{ schema }}.audit_log
    FOR EACH ROW EXECUTE FUNCTION {{ schema }}._audit_log_append_only();
CREATE OR REPLACE TRIGGER _100_no_truncate
    BEFORE TRUNCATE ON {{ schema }}.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._audit_log_append_only();
CREATE OR REPLACE TRIGGER _900_audit_purge
    AFTER DELETE ON {{ schema }}.audit_log
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{ schema }}._audit_log_purged();
