-- requeue_expired (the lease sweep) and cleanup (TTL cancellation with reason
-- expired, stray queue rows, retention), with their counts.
BEGIN;
SELECT plan(31);

-- requeue_expired -----------------------------------------------------------------------------
SELECT is(stacker.requeue_expired(), 0, 'requeue_expired on an empty queue moves nothing');
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-q', '00000000-0000-4000-8000-000000000101');
    SELECT stacker.register_agent('dep-q2', '00000000-0000-4000-8000-000000000102');
    SELECT stacker.create_command('dep-q', 'deploy', p_command_id => 'q-1');
    SELECT stacker.create_command('dep-q', 'deploy', p_command_id => 'q-2', p_max_attempts => 1);
    SELECT stacker.create_command('dep-q', 'deploy', p_command_id => 'q-3');
    SELECT stacker.create_command('dep-q', 'deploy', p_command_id => 'q-4');
    SELECT stacker.create_command('dep-q2', 'deploy', p_command_id => 'q2-1');
    SELECT stacker.claim_commands('dep-q', '00000000-0000-4000-8000-000000000101', 10);
    SELECT stacker.claim_commands('dep-q2', '00000000-0000-4000-8000-000000000102', 10);
    SELECT stacker.start_command('q-4', '00000000-0000-4000-8000-000000000101');
    SELECT stacker.create_command('dep-q', 'deploy', p_command_id => 'q-5');
$$, 'setup: q-1..q-4 and q2-1 delivered (q-4 executing, q-2 with max_attempts 1); q-5 queued');
SELECT is(stacker.requeue_expired(), 0, 'no lease has run out yet: nothing moves');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second'
 WHERE command_id IN ('q-1', 'q-2', 'q-4', 'q2-1');
SELECT is(stacker.requeue_expired(), 4, 'requeue_expired returns how many commands it moved (all deployments)');
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, lease_expires_at, error
        FROM stacker.commands WHERE command_id IN ('q-1', 'q-2', 'q-3', 'q-4', 'q-5', 'q2-1') ORDER BY command_id$$,
    $$VALUES ('q-1', 'queued', 1, NULL::timestamptz, NULL::jsonb),
             ('q-2', 'failed', 1, NULL::timestamptz, '{"reason": "lease_expired", "attempts": 1}'::jsonb),
             ('q-3', 'sent', 1, now() + interval '300 seconds', NULL::jsonb),
             ('q-4', 'queued', 1, NULL::timestamptz, NULL::jsonb),
             ('q-5', 'queued', 0, NULL::timestamptz, NULL::jsonb),
             ('q2-1', 'queued', 1, NULL::timestamptz, NULL::jsonb)$$,
    'expired leases go back to queued (executing too); the last attempt fails with lease_expired; running leases stay');
SELECT results_eq(
    $$SELECT command_id::text, lease_expires_at, visible_at <= now()
        FROM stacker.command_queue WHERE deployment_hash IN ('dep-q', 'dep-q2') ORDER BY command_id$$,
    $$VALUES ('q-1', NULL::timestamptz, true), ('q-3', now() + interval '300 seconds', false),
             ('q-4', NULL::timestamptz, true), ('q-5', NULL::timestamptz, true), ('q2-1', NULL::timestamptz, true)$$,
    'requeued commands are claimable queue rows again; the failed one left the queue');
SELECT is(stacker.requeue_expired(), 0, 'a second sweep finds nothing');
SELECT results_eq(
    $$SELECT command_id::text, attempts FROM stacker.claim_commands('dep-q', '00000000-0000-4000-8000-000000000101', 10)$$,
    $$VALUES ('q-1', 2), ('q-4', 2), ('q-5', 1)$$,
    'the requeued commands are claimed again with attempts + 1, in age order');

-- cleanup: counts, TTL -------------------------------------------------------------------------
SELECT is(stacker.cleanup(), '{"expired": 0, "queue_rows_removed": 0, "deleted": 0}'::jsonb,
          'cleanup with nothing to do returns zero counts');
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-t', '00000000-0000-4000-8000-000000000103');
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-sent-old');
    SELECT stacker.claim_commands('dep-t', '00000000-0000-4000-8000-000000000103');
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-old');
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-2h');
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-new');
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-sched', p_scheduled_for => now() - interval '1 hour');
$$, 'setup: dep-t commands');
UPDATE stacker.commands SET created_at = now() - interval '3 days' WHERE command_id IN ('t-old', 't-sent-old', 't-sched');
UPDATE stacker.commands SET created_at = now() - interval '2 hours' WHERE command_id = 't-2h';
SELECT is(stacker.cleanup(), '{"expired": 1, "queue_rows_removed": 0, "deleted": 0}'::jsonb,
          'cleanup() with the default 48 hours expires one command');
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-t' ORDER BY command_id$$,
    $$VALUES ('t-2h', 'queued'), ('t-new', 'queued'), ('t-old', 'cancelled'), ('t-sched', 'queued'), ('t-sent-old', 'sent')$$,
    'only the queued command older than the TTL is cancelled (not a sent one, not one due for only an hour)');
SELECT results_eq(
    $$SELECT error ->> 'reason', completed_at FROM stacker.commands WHERE command_id = 't-old'$$,
    $$VALUES ('expired', now())$$, 'the expired command''s error reason is expired');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 't-old'$$, 'its queue row is gone');
SELECT is((SELECT count(*)::int FROM stacker.audit_log
            WHERE details ->> 'command_id' = 't-old' AND action = 'command.cancelled' AND details ->> 'reason' = 'expired'), 1,
          'the expiry is audited as command.cancelled with reason expired');
SELECT is(stacker.cleanup('90 minutes'), '{"expired": 1, "queue_rows_removed": 0, "deleted": 0}'::jsonb,
          'a shorter TTL (90 minutes) expires the two-hour-old command ...');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.commands
       WHERE deployment_hash = 'dep-t' AND status = 'queued' ORDER BY command_id$$,
    ARRAY['t-new', 't-sched'], '... but not the one due for only an hour, nor the new one');

-- cleanup: queue rows of finished or missing commands (left by SQL that bypassed the triggers).
SELECT lives_ok($$
    SELECT stacker.create_command('dep-t', 'health', p_command_id => 't-done', p_priority => 'critical');
    SELECT stacker.claim_commands('dep-t', '00000000-0000-4000-8000-000000000103', 1);
    SELECT stacker.report_result('t-done', '00000000-0000-4000-8000-000000000103', 'completed');
$$, 'setup: t-done completed');
SET LOCAL session_replication_role = replica;
INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('t-done', 'dep-t', 1);
INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('t-missing', 'dep-t', 1);
SET LOCAL session_replication_role = origin;
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id IN ('t-done', 't-missing')), 2,
          'setup: two stray queue rows written with triggers off');
SELECT is(stacker.cleanup(), '{"expired": 0, "queue_rows_removed": 2, "deleted": 0}'::jsonb,
          'cleanup removes queue rows whose command is finished or missing, and counts them');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id IN ('t-done', 't-missing')$$,
                'the stray rows are gone');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.command_queue WHERE deployment_hash = 'dep-t' ORDER BY command_id$$,
    ARRAY['t-new', 't-sched', 't-sent-old'], 'the pending commands'' rows stay');

-- cleanup: retention -------------------------------------------------------------------------------
SELECT lives_ok($$SELECT stacker.update_app_status('dep-t', 'web', 'running', '[]', now(), 't-done')$$,
                'setup: an app_status row that names t-done');
UPDATE stacker.commands SET created_at = now() - interval '5 days', completed_at = now() - interval '5 days'
 WHERE command_id IN ('t-done', 't-old');
SELECT is(stacker.cleanup('48 hours', '2 days'), '{"expired": 0, "queue_rows_removed": 0, "deleted": 2}'::jsonb,
          'with a retention of 2 days the two commands finished 5 days ago are deleted');
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-t' ORDER BY command_id$$,
    $$VALUES ('t-2h', 'cancelled'), ('t-new', 'queued'), ('t-sched', 'queued'), ('t-sent-old', 'sent')$$,
    'pending commands (even 3 days old) and recently finished ones stay');
SELECT is((SELECT command_id FROM stacker.app_status WHERE deployment_hash = 'dep-t' AND app_code = 'web'), NULL,
          'app_status loses its reference to the deleted command (ON DELETE SET NULL) and stays');
SELECT cmp_ok((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' = 't-done'), '>', 0,
              'the deleted command''s audit rows stay');

-- cleanup: invalid input.
SELECT throws_ok($$SELECT stacker.cleanup('0')$$,
                 '22023', 'invalid queue_ttl ''00:00:00'': must be a positive interval', 'a TTL of 0: 22023');
SELECT throws_ok($$SELECT stacker.cleanup('-1 hour')$$,
                 '22023', 'invalid queue_ttl ''-01:00:00'': must be a positive interval', 'a negative TTL: 22023');
SELECT throws_ok($$SELECT stacker.cleanup(NULL)$$,
                 '22023', 'invalid queue_ttl NULL: must be a positive interval', 'a NULL TTL: 22023');
SELECT throws_ok($$SELECT stacker.cleanup('48 hours', '0')$$,
                 '22023', 'invalid retention ''00:00:00'': must be NULL or a positive interval', 'a retention of 0: 22023');

SELECT * FROM finish();
ROLLBACK;
