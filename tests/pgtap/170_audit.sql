-- Audit: one audit_log row per transition with the contract's action, details
-- (command_id, from, to) and actor (stacker.actor when set, else session_user);
-- a heartbeat alone writes nothing; audit_log refuses UPDATE, DELETE and
-- TRUNCATE even for its owner; purge_audit_log is the retention path.
BEGIN;
SELECT plan(49);

-- A command's whole life, with actors -------------------------------------------------------------
SET LOCAL stacker.actor = 'svc:api';
SELECT lives_ok($$SELECT stacker.create_command('dep-au', 'deploy', '{"tag": "v3"}', 'high', p_command_id => 'au-1')$$,
                'create au-1 as svc:api');
SELECT results_eq(
    $$SELECT action::text, deployment_hash::text, status::text, agent_id, actor,
             details ->> 'command_id', details ->> 'to', details ->> 'type', details ->> 'priority'
        FROM stacker.audit_log WHERE details ->> 'command_id' = 'au-1'$$,
    $$VALUES ('command.created', 'dep-au', 'queued', NULL::uuid, 'svc:api', 'au-1', 'queued', 'deploy', 'high')$$,
    'command.created: command_id, to, type, priority; the actor is stacker.actor');
RESET stacker.actor;
SELECT lives_ok($$SELECT stacker.register_agent('dep-au', '00000000-0000-4000-8000-000000000201', '2.0')$$,
                'register the agent without an actor');
SELECT results_eq(
    $$SELECT action::text, status::text, agent_id::text, actor, details ->> 'version'
        FROM stacker.audit_log WHERE deployment_hash = 'dep-au' AND action LIKE 'agent.%'$$,
    $$VALUES ('agent.registered', 'online', '00000000-0000-4000-8000-000000000201', session_user::text COLLATE "default", '2.0')$$,
    'agent.registered, with the agent; without stacker.actor the actor is session_user');

SET LOCAL stacker.actor = 'agent:dep-au';
SELECT lives_ok($$
    SELECT stacker.claim_commands('dep-au', '00000000-0000-4000-8000-000000000201');
    SELECT stacker.start_command('au-1', '00000000-0000-4000-8000-000000000201');
    SELECT stacker.extend_lease('au-1', '00000000-0000-4000-8000-000000000201', 900);
    SELECT stacker.start_command('au-1', '00000000-0000-4000-8000-000000000201');
    SELECT stacker.report_result('au-1', '00000000-0000-4000-8000-000000000201', 'completed', '{"ok": true}');
    SELECT stacker.report_result('au-1', '00000000-0000-4000-8000-000000000201', 'completed', '{"ok": true}');
$$, 'claim, start, extend, start again, report, report again as agent:dep-au');
RESET stacker.actor;
SELECT bag_eq(
    $$SELECT action::text, status::text, details ->> 'from' AS from_status, details ->> 'to' AS to_status, actor,
             agent_id::text
        FROM stacker.audit_log WHERE details ->> 'command_id' = 'au-1'$$,
    $$VALUES ('command.created', 'queued', NULL, 'queued', 'svc:api', NULL),
             ('command.sent', 'sent', 'queued', 'sent', 'agent:dep-au', '00000000-0000-4000-8000-000000000201'),
             ('command.executing', 'executing', 'sent', 'executing', 'agent:dep-au', '00000000-0000-4000-8000-000000000201'),
             ('command.completed', 'completed', 'executing', 'completed', 'agent:dep-au', '00000000-0000-4000-8000-000000000201')$$,
    'exactly one row per transition (the lease extension and the repeated calls write nothing)');
SELECT is((SELECT (details ->> 'attempts')::int FROM stacker.audit_log
            WHERE details ->> 'command_id' = 'au-1' AND action = 'command.sent'), 1,
          'command.sent records the attempt number');

-- failed, cancelled, requeued, redelivered --------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.create_command('dep-au', 'deploy', p_command_id => 'au-2');
    SELECT stacker.create_command('dep-au', 'deploy', p_command_id => 'au-3');
    SELECT stacker.claim_commands('dep-au', '00000000-0000-4000-8000-000000000201', 2);
    SELECT stacker.report_result('au-2', '00000000-0000-4000-8000-000000000201', 'failed', NULL, '{"exit": 1}');
    SELECT stacker.create_command('dep-au', 'deploy', p_command_id => 'au-4');
$$, 'au-2 failed; au-3 delivered; au-4 queued');
SET LOCAL stacker.actor = '';
SELECT lives_ok($$SELECT stacker.cancel_command('au-4', 'obsolete')$$, 'au-4 cancelled with an empty stacker.actor');
RESET stacker.actor;
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'au-3';
SELECT is(stacker.requeue_expired(), 1, 'au-3 requeued');
SELECT lives_ok($$SELECT stacker.claim_commands('dep-au', '00000000-0000-4000-8000-000000000201')$$, 'au-3 redelivered');
SELECT bag_eq(
    $$SELECT details ->> 'command_id' AS command_id, action::text, details ->> 'from' AS from_status,
             details ->> 'to' AS to_status, details ->> 'reason' AS reason, actor
        FROM stacker.audit_log
       WHERE details ->> 'command_id' IN ('au-2', 'au-3', 'au-4') AND action <> 'command.created'$$,
    $$VALUES ('au-2', 'command.sent', 'queued', 'sent', NULL, session_user::text COLLATE "default"),
             ('au-2', 'command.failed', 'sent', 'failed', NULL, session_user::text COLLATE "default"),
             ('au-3', 'command.sent', 'queued', 'sent', NULL, session_user::text COLLATE "default"),
             ('au-3', 'command.requeued', 'sent', 'queued', NULL, session_user::text COLLATE "default"),
             ('au-3', 'command.sent', 'queued', 'sent', NULL, session_user::text COLLATE "default"),
             ('au-4', 'command.cancelled', 'queued', 'cancelled', 'cancelled', session_user::text COLLATE "default")$$,
    'command.failed, command.cancelled (reason), command.requeued and a second command.sent; an empty actor counts as unset');
SELECT results_eq(
    $$SELECT (details ->> 'attempts')::int FROM stacker.audit_log
       WHERE details ->> 'command_id' = 'au-3' AND action = 'command.sent' ORDER BY 1$$,
    ARRAY[1, 2], 'each delivery of au-3 is recorded with its attempt number');

-- Lease exhaustion is audited as command.failed with reason lease_expired.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-au', 'deploy', p_command_id => 'au-5', p_max_attempts => 1, p_priority => 'critical');
    SELECT stacker.claim_commands('dep-au', '00000000-0000-4000-8000-000000000201');
$$, 'au-5 (max_attempts 1) delivered');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'au-5';
SELECT is(stacker.requeue_expired(), 1, 'au-5 fails on the sweep');
SELECT results_eq(
    $$SELECT action::text, details ->> 'from', details ->> 'reason' FROM stacker.audit_log
       WHERE details ->> 'command_id' = 'au-5' AND action = 'command.failed'$$,
    $$VALUES ('command.failed', 'sent', 'lease_expired')$$,
    'command.failed with reason lease_expired');

-- Plain SQL on the tables is audited too.
SELECT lives_ok($$SELECT stacker.create_command('dep-au', 'deploy', p_command_id => 'au-6')$$, 'au-6 created');
SET LOCAL stacker.actor = 'stacker-rust';
UPDATE stacker.commands SET status = 'sent' WHERE command_id = 'au-6';
RESET stacker.actor;
SELECT results_eq(
    $$SELECT action::text, details ->> 'from', details ->> 'to', actor FROM stacker.audit_log
       WHERE details ->> 'command_id' = 'au-6' AND action <> 'command.created'$$,
    $$VALUES ('command.sent', 'queued', 'sent', 'stacker-rust')$$,
    'a direct UPDATE of the status writes its audit row with the actor');

-- A heartbeat alone writes nothing ---------------------------------------------------------------------
CREATE TEMP TABLE audit_count AS SELECT count(*) AS n FROM stacker.audit_log;
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-au';
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-au', '00000000-0000-4000-8000-000000000201')$$,
                'an empty claim (a heartbeat)');
SELECT is((SELECT last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-au'), now(), '... marked the agent seen');
SELECT is((SELECT count(*) FROM stacker.audit_log), (SELECT n FROM audit_count), '... and wrote no audit row');
SELECT lives_ok($$SELECT stacker.register_agent('dep-au', NULL, '2.1', '["health"]')$$, 'the agent registers again with a new version');
SELECT results_eq(
    $$SELECT action::text, details -> 'changed' FROM stacker.audit_log
       WHERE deployment_hash = 'dep-au' AND action = 'agent.registered' AND details ->> 'version' = '2.1'$$,
    $$VALUES ('agent.registered', '["capabilities", "version"]'::jsonb)$$,
    'a re-registration writes agent.registered with the changed fields');

-- app_status.changed ---------------------------------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.update_app_status('dep-au', 'web', 'running', '[]', now() - interval '3 minutes');
    SELECT stacker.update_app_status('dep-au', 'web', 'running', '["still fine"]', now() - interval '2 minutes');
    SELECT stacker.update_app_status('dep-au', 'web', 'error', '["down"]', now() - interval '1 minute');
    SELECT stacker.update_app_status('dep-au', 'web', 'stopped', '[]', now() - interval '10 minutes');
$$, 'web: running, running again, error, then an older stopped');
SELECT bag_eq(
    $$SELECT action::text, status::text, details ->> 'app_code' AS app_code, details ->> 'from' AS from_status,
             details ->> 'to' AS to_status
        FROM stacker.audit_log WHERE deployment_hash = 'dep-au' AND action = 'app_status.changed'$$,
    $$VALUES ('app_status.changed', 'running', 'web', NULL, 'running'),
             ('app_status.changed', 'error', 'web', 'running', 'error')$$,
    'app_status.changed for the first report and for each change of status only');

-- Every row names who did it.
SELECT is_empty(
    $$SELECT * FROM stacker.audit_log WHERE actor IS NULL OR actor = ''$$,
    'every audit row has an actor');

-- audit_log is append-only, even for its owner ------------------------------------------------------------
SELECT ok((SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
          OR pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'stacker.audit_log'::regclass), 'USAGE'),
          'this session is the owner (or a superuser)');
DELETE FROM audit_count;
INSERT INTO audit_count SELECT count(*) FROM stacker.audit_log;
SELECT throws_ok($$UPDATE stacker.audit_log SET actor = 'forged'$$,
                 '42501', 'audit_log is append-only: UPDATE is refused', 'UPDATE of audit_log: 42501');
SELECT throws_ok($$UPDATE stacker.audit_log SET agent_id = NULL WHERE agent_id IS NOT NULL AND action = 'command.sent'
                     AND details ->> 'command_id' = 'au-1'$$,
                 '42501', NULL, 'UPDATE of agent_id to NULL by hand: 42501 as well');
SELECT throws_ok($$DELETE FROM stacker.audit_log$$,
                 '42501', 'audit_log is append-only: DELETE is refused', 'DELETE from audit_log: 42501');
SELECT throws_ok($$DELETE FROM stacker.audit_log WHERE action = 'command.created'$$,
                 '42501', 'audit_log is append-only: DELETE is refused', 'a partial DELETE from audit_log: 42501');
SELECT throws_ok($q$DO $do$ BEGIN DELETE FROM stacker.audit_log; END $do$$q$,
                 '42501', 'audit_log is append-only: DELETE is refused',
                 'a DELETE from a function other than purge_audit_log is refused');
SELECT throws_ok($$SET LOCAL stacker.audit_retention = 'on'; DELETE FROM stacker.audit_log$$,
                 '42501', 'audit_log is append-only: DELETE is refused',
                 'no setting opens the retention path');
SELECT throws_ok($$TRUNCATE stacker.audit_log$$,
                 '42501', 'audit_log is append-only: TRUNCATE is refused', 'TRUNCATE audit_log: 42501');
SET LOCAL client_min_messages = warning;  -- no NOTICE about the cascade
SELECT throws_ok($$TRUNCATE stacker.agents, stacker.audit_log$$,
                 '42501', 'audit_log is append-only: TRUNCATE is refused', 'TRUNCATE of audit_log beside another table: 42501');
SELECT is((SELECT count(*) FROM stacker.audit_log), (SELECT n FROM audit_count), 'no audit row changed');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE actor = 'forged'), 0, 'no audit row was forged');

-- Deleting an agent keeps its audit rows exactly as they were, agent_id included.
CREATE TEMP TABLE agent_rows AS
SELECT id, to_jsonb(a) AS rest FROM stacker.audit_log a
 WHERE agent_id = '00000000-0000-4000-8000-000000000201';
SELECT cmp_ok((SELECT count(*)::int FROM agent_rows), '>=', 7, 'setup: the agent appears in its audit rows');
SELECT lives_ok($$DELETE FROM stacker.agents WHERE deployment_hash = 'dep-au'$$, 'the agent of dep-au can be deleted');
SELECT results_eq(
    $$SELECT count(*)::int, count(a.agent_id)::int, bool_and(to_jsonb(a) = r.rest)
        FROM agent_rows r JOIN stacker.audit_log a USING (id)$$,
    $$SELECT count(*)::int, count(*)::int, true FROM agent_rows$$,
    'its audit rows stay unchanged, agent_id included');

-- purge_audit_log: the retention path ----------------------------------------------------------------------
INSERT INTO stacker.audit_log (action, deployment_hash, created_at, actor) VALUES
    ('test.old', 'dep-purge', now() - interval '40 days', 'test'),
    ('test.old', 'dep-purge', now() - interval '35 days', 'test'),
    ('test.recent', 'dep-purge', now() - interval '29 days', 'test');
DELETE FROM audit_count;
INSERT INTO audit_count SELECT count(*) FROM stacker.audit_log;
SET LOCAL stacker.actor = 'dba:erin';
SELECT is(stacker.purge_audit_log('30 days'), 2::bigint, 'purge_audit_log deletes the rows older than 30 days and counts them');
RESET stacker.actor;
SELECT results_eq(
    $$SELECT action::text FROM stacker.audit_log WHERE deployment_hash = 'dep-purge'$$,
    ARRAY['test.recent'], 'the newer row stays');
SELECT results_eq(
    $$SELECT (details ->> 'rows')::int, (details ->> 'oldest')::timestamptz, (details ->> 'newest')::timestamptz, actor
        FROM stacker.audit_log WHERE action = 'audit.purged'$$,
    $$VALUES (2, now() - interval '40 days', now() - interval '35 days', 'dba:erin')$$,
    'the purge wrote audit.purged with the count, the time range and the actor');
SELECT is((SELECT count(*) FROM stacker.audit_log), (SELECT n FROM audit_count) - 2 + 1,
          'audit_log lost exactly the two purged rows and gained the audit.purged row');
SELECT is(stacker.purge_audit_log('30 days'), 0::bigint, 'a second purge finds nothing');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE action = 'audit.purged'), 1,
          '... and writes no audit.purged row');
SELECT throws_ok($$DELETE FROM stacker.audit_log WHERE action = 'test.recent'$$,
                 '42501', 'audit_log is append-only: DELETE is refused', 'after the purge DELETE is refused again');
SELECT throws_ok($$SELECT stacker.purge_audit_log('1 hour')$$,
                 '22023', 'invalid older_than ''01:00:00'': must be an interval of at least 1 day',
                 'purge_audit_log of less than a day: 22023');
SELECT throws_ok($$SELECT stacker.purge_audit_log(NULL)$$,
                 '22023', 'invalid older_than NULL: must be an interval of at least 1 day', 'purge_audit_log(NULL): 22023');

SELECT * FROM finish();
ROLLBACK;
