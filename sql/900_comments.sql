-- COMMENT ON every table, column and view (functions carry theirs in their files).

COMMENT ON SCHEMA {{ schema }} IS
'stacker-queue: Stacker''s command pipeline (commands, their queue, agents, app status, audit log) behind a function API. Install and upgrade with stacker-queue migrate.';

COMMENT ON TABLE {{ schema }}.commands IS
'Every command ever created for a deployment''s agent, with its lifecycle (queued -> sent -> executing -> completed | failed | cancelled). Stacker''s columns first, then stacker-queue''s. Write through the functions; plain SQL is kept consistent by triggers.';
COMMENT ON COLUMN {{ schema }}.commands.id IS 'Internal id (Stacker''s primary key).';
COMMENT ON COLUMN {{ schema }}.commands.command_id IS 'Public id, cmd_<uuid> unless the creator chose one; unique.';
COMMENT ON COLUMN {{ schema }}.commands.deployment_hash IS 'The deployment whose agent runs the command.';
COMMENT ON COLUMN {{ schema }}.commands.type IS 'Command type: health, logs, restart, deploy, ... (command_type in the API).';
COMMENT ON COLUMN {{ schema }}.commands.status IS 'queued, sent, executing (pending) or completed, failed, cancelled (terminal, immutable).';
COMMENT ON COLUMN {{ schema }}.commands.priority IS 'low, normal, high or critical; claims take higher priority first.';
COMMENT ON COLUMN {{ schema }}.commands.parameters IS 'Arguments for the agent, a JSON object of at most 1 MiB (e.g. {"app_code": "fastapi"}).';
COMMENT ON COLUMN {{ schema }}.commands.result IS 'The agent''s result, as reported.';
COMMENT ON COLUMN {{ schema }}.commands.error IS 'The agent''s error as reported, or why the command ended: {"reason": "cancelled" | "expired" | "lease_expired", ...}.';
COMMENT ON COLUMN {{ schema }}.commands.created_by IS 'Who created the command: the caller''s value, else the actor (stacker.actor or the login role).';
COMMENT ON COLUMN {{ schema }}.commands.created_at IS 'When the command was created; claims take older first within a priority.';
COMMENT ON COLUMN {{ schema }}.commands.updated_at IS 'When the row last changed.';
COMMENT ON COLUMN {{ schema }}.commands.scheduled_for IS 'Not claimable before this time; NULL means at once.';
COMMENT ON COLUMN {{ schema }}.commands.sent_at IS 'When the command was last handed to the agent.';
COMMENT ON COLUMN {{ schema }}.commands.started_at IS 'When the agent last reported it started executing.';
COMMENT ON COLUMN {{ schema }}.commands.completed_at IS 'When the command reached its terminal status.';
COMMENT ON COLUMN {{ schema }}.commands.timeout_seconds IS 'The default lease, in seconds, each delivery gets.';
COMMENT ON COLUMN {{ schema }}.commands.metadata IS 'Free-form JSON object for the creator.';
COMMENT ON COLUMN {{ schema }}.commands.attempts IS 'How many times the command was delivered (claimed).';
COMMENT ON COLUMN {{ schema }}.commands.max_attempts IS 'Deliveries allowed; a lease running out on the last one fails the command (reason lease_expired).';
COMMENT ON COLUMN {{ schema }}.commands.idempotency_key IS 'Optional creator key, unique per deployment: creating again with it returns the same command.';
COMMENT ON COLUMN {{ schema }}.commands.agent_id IS 'The agent that holds or last held the command.';
COMMENT ON COLUMN {{ schema }}.commands.lease_expires_at IS 'While sent or executing: when the command becomes due for redelivery unless reported or extended.';

COMMENT ON TABLE {{ schema }}.command_queue IS
'The claimable work: exactly one row per queued, sent or executing command, none for finished ones (kept so by triggers on commands and on this table). Claims lock rows here (and their commands) with FOR NO KEY UPDATE SKIP LOCKED.';
COMMENT ON COLUMN {{ schema }}.command_queue.id IS 'Row id (Stacker''s primary key).';
COMMENT ON COLUMN {{ schema }}.command_queue.command_id IS 'The queued command; unique; deleted with it (ON DELETE CASCADE).';
COMMENT ON COLUMN {{ schema }}.command_queue.deployment_hash IS 'The command''s deployment (copied from it).';
COMMENT ON COLUMN {{ schema }}.command_queue.priority IS 'The command''s priority as a number: low 0, normal 1, high 2, critical 3.';
COMMENT ON COLUMN {{ schema }}.command_queue.created_at IS 'The command''s creation time (copied from it): the age order of claims.';
COMMENT ON COLUMN {{ schema }}.command_queue.visible_at IS 'Claimable from this time on: the schedule (or -infinity) while queued, the lease end while in flight.';
COMMENT ON COLUMN {{ schema }}.command_queue.lease_expires_at IS 'NULL while queued; the lease end while sent or executing.';

COMMENT ON TABLE {{ schema }}.agents IS
'One agent per deployment, as registered by register_agent; every agent call marks it seen.';
COMMENT ON COLUMN {{ schema }}.agents.id IS 'Agent id; agent calls must present it.';
COMMENT ON COLUMN {{ schema }}.agents.deployment_hash IS 'The agent''s deployment; unique.';
COMMENT ON COLUMN {{ schema }}.agents.capabilities IS 'What the agent can run, a JSON array.';
COMMENT ON COLUMN {{ schema }}.agents.version IS 'The agent''s version as it reported it.';
COMMENT ON COLUMN {{ schema }}.agents.system_info IS 'The agent''s host facts, a JSON object.';
COMMENT ON COLUMN {{ schema }}.agents.last_heartbeat IS 'When the agent was last seen (any agent call).';
COMMENT ON COLUMN {{ schema }}.agents.status IS 'online, offline or degraded; set online by every agent call.';
COMMENT ON COLUMN {{ schema }}.agents.created_at IS 'When the agent first registered.';
COMMENT ON COLUMN {{ schema }}.agents.updated_at IS 'When the row last changed.';
COMMENT ON COLUMN {{ schema }}.agents.registered_at IS 'When the agent last registered.';

COMMENT ON TABLE {{ schema }}.app_status IS
'The status panel''s data: the latest reported state of each app of each deployment, from update_app_status or health command results.';
COMMENT ON COLUMN {{ schema }}.app_status.deployment_hash IS 'The app''s deployment.';
COMMENT ON COLUMN {{ schema }}.app_status.app_code IS 'The app within the deployment (e.g. fastapi).';
COMMENT ON COLUMN {{ schema }}.app_status.status IS 'running, stopped, error or unknown.';
COMMENT ON COLUMN {{ schema }}.app_status.logs IS 'The last check''s log lines, a JSON array of strings.';
COMMENT ON COLUMN {{ schema }}.app_status.checked_at IS 'When the agent checked; older reports never overwrite newer ones.';
COMMENT ON COLUMN {{ schema }}.app_status.command_id IS 'The health command the report came from, or NULL.';
COMMENT ON COLUMN {{ schema }}.app_status.updated_at IS 'When the row last changed.';

COMMENT ON TABLE {{ schema }}.audit_log IS
'Append-only record of every meaningful change (command.*, agent.registered, app_status.changed, audit.purged), written by triggers with the actor. UPDATE, DELETE and TRUNCATE are refused for every role; rows leave only through purge_audit_log.';
COMMENT ON COLUMN {{ schema }}.audit_log.id IS 'Row id.';
COMMENT ON COLUMN {{ schema }}.audit_log.agent_id IS 'The agent involved, if any; kept as recorded even after the agent is deleted (no foreign key: history is not rewritten).';
COMMENT ON COLUMN {{ schema }}.audit_log.deployment_hash IS 'The deployment involved.';
COMMENT ON COLUMN {{ schema }}.audit_log.action IS 'What happened: command.created, command.sent, command.executing, command.completed, command.failed, command.cancelled, command.requeued, agent.registered, app_status.changed, audit.purged.';
COMMENT ON COLUMN {{ schema }}.audit_log.status IS 'The status after the change.';
COMMENT ON COLUMN {{ schema }}.audit_log.details IS 'command_id, from and to status, attempts, changed fields, ...';
COMMENT ON COLUMN {{ schema }}.audit_log.ip_address IS 'Stacker''s column: the client address, when the application records it.';
COMMENT ON COLUMN {{ schema }}.audit_log.user_agent IS 'Stacker''s column: the client user agent, when the application records it.';
COMMENT ON COLUMN {{ schema }}.audit_log.created_at IS 'When it happened (timestamptz).';
COMMENT ON COLUMN {{ schema }}.audit_log.actor IS 'Who did it: the transaction''s stacker.actor setting when set, else the login role.';

COMMENT ON TABLE {{ schema }}.schema_repeatables IS
'stacker-queue migrate''s bookkeeping: the sha256 of each function and sql/ file as last applied (re-applied only when changed).';
COMMENT ON COLUMN {{ schema }}.schema_repeatables.name IS 'File name without .sql.';
COMMENT ON COLUMN {{ schema }}.schema_repeatables.kind IS 'function or sql.';
COMMENT ON COLUMN {{ schema }}.schema_repeatables.sha256 IS 'sha256 of the rendered text (for sql files, of the text and everything applied before it).';
COMMENT ON COLUMN {{ schema }}.schema_repeatables.applied_at IS 'When it was last applied.';

COMMENT ON VIEW {{ schema }}.queue_stats IS
'Per deployment: queued and in-flight commands, the oldest queued one, expired leases and when its agent was last seen.';
COMMENT ON COLUMN {{ schema }}.queue_stats.deployment_hash IS 'The deployment.';
COMMENT ON COLUMN {{ schema }}.queue_stats.queued IS 'Commands waiting to be claimed (including scheduled ones).';
COMMENT ON COLUMN {{ schema }}.queue_stats.in_flight IS 'Commands sent or executing.';
COMMENT ON COLUMN {{ schema }}.queue_stats.oldest_queued_at IS 'Creation time of the oldest queued command.';
COMMENT ON COLUMN {{ schema }}.queue_stats.expired_leases IS 'In-flight commands whose lease ran out (due for redelivery).';
COMMENT ON COLUMN {{ schema }}.queue_stats.agent_last_seen IS 'The agent''s last_heartbeat, NULL when no agent is registered.';

COMMENT ON TRIGGER _100_lifecycle_insert ON {{ schema }}.commands IS 'Fills delivery fields of commands inserted in a status other than queued.';
COMMENT ON TRIGGER _100_lifecycle_update ON {{ schema }}.commands IS 'Refuses changes to finished commands; fills delivery fields a status UPDATE left out.';
COMMENT ON TRIGGER _100_lifecycle_resend ON {{ schema }}.commands IS 'Counts an UPDATE setting status = ''sent'' on a sent command (Stacker''s old binary handing it out again) as a new delivery: attempts + 1, new lease.';
COMMENT ON TRIGGER _500_queue_insert ON {{ schema }}.commands IS 'Creates the queue row of each new pending command in the same transaction.';
COMMENT ON TRIGGER _500_queue_update ON {{ schema }}.commands IS 'Keeps queue rows in step with status, priority, schedule and lease; removes them at terminal statuses.';
COMMENT ON TRIGGER _800_audit_insert ON {{ schema }}.commands IS 'Writes command.created audit rows.';
COMMENT ON TRIGGER _800_audit_update ON {{ schema }}.commands IS 'Writes one audit row per status change or redelivery.';
COMMENT ON TRIGGER _900_notify_insert ON {{ schema }}.commands IS 'Wakes the deployments of new due commands at commit.';
COMMENT ON TRIGGER _900_notify_update ON {{ schema }}.commands IS 'Wakes deployments of requeued and cancelled commands; announces terminal statuses.';
COMMENT ON TRIGGER _100_guard_insert ON {{ schema }}.command_queue IS 'Makes direct INSERTs (Stacker''s second step) idempotent and derived from the command.';
COMMENT ON TRIGGER _100_guard_delete ON {{ schema }}.command_queue IS 'Keeps the queue row of a pending command when a statement deletes it directly.';
COMMENT ON TRIGGER _800_audit_insert ON {{ schema }}.agents IS 'Writes agent.registered for new agents.';
COMMENT ON TRIGGER _800_audit_update ON {{ schema }}.agents IS 'Writes agent.registered for re-registrations; heartbeats write nothing.';
COMMENT ON TRIGGER _800_audit_insert ON {{ schema }}.app_status IS 'Writes app_status.changed for an app''s first report.';
COMMENT ON TRIGGER _800_audit_update ON {{ schema }}.app_status IS 'Writes app_status.changed when an app''s status changes.';
COMMENT ON TRIGGER _100_append_only ON {{ schema }}.audit_log IS 'Refuses UPDATE and DELETE except through the retention path.';
COMMENT ON TRIGGER _100_no_truncate ON {{ schema }}.audit_log IS 'Refuses TRUNCATE.';
COMMENT ON TRIGGER _900_audit_purge ON {{ schema }}.audit_log IS 'Records every retention purge as an audit.purged row.';

-- yoyo's bookkeeping tables live in this schema too when installed by
-- stacker-queue migrate (a rendered install run with psql has none).
DO $comments$
DECLARE
    v_table record;
BEGIN
    FOR v_table IN
        SELECT * FROM (VALUES
            ('_yoyo_migration', 'yoyo (stacker-queue migrate): the migrations applied to this schema.'),
            ('_yoyo_log', 'yoyo (stacker-queue migrate): log of migrations applied and rolled back.'),
            ('_yoyo_version', 'yoyo (stacker-queue migrate): version of yoyo''s own bookkeeping tables.'),
            ('yoyo_lock', 'yoyo (stacker-queue migrate): lock row held while migrations run.')
        ) AS t(name, description)
    LOOP
        IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', {{ schema_literal }}, v_table.name)) IS NOT NULL THEN
            EXECUTE pg_catalog.format('COMMENT ON TABLE %I.%I IS %L',
                                      {{ schema_literal }}, v_table.name, v_table.description);
        END IF;
    END LOOP;
END
$comments$;
