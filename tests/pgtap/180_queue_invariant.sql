-- The queue invariant, enforced in the database: a command_queue row exists exactly
-- while its command is queued, sent or executing, whatever SQL touches the tables,
-- including Stacker's own statements (two-step create, delivery by UPDATE + DELETE,
-- report by UPDATE). Finished commands are immutable.
BEGIN;
SELECT plan(47);

-- Stacker's create, step 1: INSERT INTO commands with its 14 columns ----------------------------
SELECT lives_ok($$
    INSERT INTO stacker.commands (id, command_id, deployment_hash, type, status, priority, parameters,
                                  result, error, created_by, created_at, updated_at, timeout_seconds, metadata)
    VALUES (gen_random_uuid(), 'cmd_stk-1', 'dep-stk', 'health', 'queued', 'high', '{"app_code": "fastapi"}',
            NULL, NULL, 'stacker', now() - interval '1 minute', now(), 300, '{}')
$$, 'Stacker''s INSERT INTO commands (14 columns) works');
SELECT results_eq(
    $$SELECT count(*)::int, min(q.deployment_hash)::text, min(q.priority), bool_and(q.created_at = c.created_at),
             bool_and(q.lease_expires_at IS NULL)
        FROM stacker.command_queue q JOIN stacker.commands c USING (command_id) WHERE command_id = 'cmd_stk-1'$$,
    $$VALUES (1, 'dep-stk', 2, true, true)$$,
    'the INSERT alone created exactly one queue row (deployment, priority high = 2, the command''s created_at)');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' = 'cmd_stk-1' AND action = 'command.created'), 1,
          'and its command.created audit row');

-- Stacker's create, step 2: INSERT INTO command_queue.
SELECT lives_ok($$INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('cmd_stk-1', 'dep-stk', 2)$$,
                'Stacker''s second INSERT (into command_queue) still works ...');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'), 1,
          '... and leaves exactly one queue row');
SELECT lives_ok($$INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('cmd_stk-1', 'dep-wrong', 0)$$,
                'a second INSERT with wrong values ...');
SELECT results_eq($$SELECT count(*)::int, min(deployment_hash)::text, min(priority) FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$,
                  $$VALUES (1, 'dep-stk', 2)$$, '... changes nothing either');
SELECT throws_ok($$INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('cmd_stk-nope', 'dep-stk', 1)$$,
                 '23503', NULL, 'a queue row for an unknown command is refused by the foreign key');

-- Stacker's fetch still finds it.
SELECT results_eq(
    $$SELECT c.command_id::text FROM stacker.commands c JOIN stacker.command_queue q ON q.command_id = c.command_id
       WHERE q.deployment_hash = 'dep-stk' ORDER BY q.priority DESC, q.created_at LIMIT 1$$,
    ARRAY['cmd_stk-1'], 'Stacker''s fetch (join, priority DESC, created_at, LIMIT 1) finds the command');

-- Stacker's delivery: DELETE FROM command_queue, UPDATE commands SET status = 'sent'.
SELECT lives_ok($$DELETE FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$,
                'Stacker''s DELETE of a pending command''s queue row runs ...');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'), 1,
          '... and the row stays: the command is still pending');
SELECT lives_ok($$UPDATE stacker.commands SET status = 'sent', updated_at = now() WHERE command_id = 'cmd_stk-1'$$,
                'Stacker''s UPDATE ... SET status = ''sent''');
SELECT results_eq(
    $$SELECT status::text, attempts, sent_at, lease_expires_at FROM stacker.commands WHERE command_id = 'cmd_stk-1'$$,
    $$VALUES ('sent', 1, now(), now() + interval '300 seconds')$$,
    'the UPDATE is completed by the database: attempts 1, sent_at now, a lease of timeout_seconds');
SELECT results_eq(
    $$SELECT lease_expires_at, visible_at FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$,
    $$VALUES (now() + interval '300 seconds', now() + interval '300 seconds')$$,
    'the queue row stays, carrying the lease');
SELECT lives_ok($$DELETE FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$, 'Stacker''s DELETE after delivery ...');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'), 1,
          '... leaves the row of the sent command');

-- A lost response is no longer fatal: the lease runs out and the command is redelivered.
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'cmd_stk-1';
SELECT lives_ok($$SELECT stacker.register_agent('dep-stk', '00000000-0000-4000-8000-000000000301')$$, 'the agent registers');
SELECT results_eq(
    $$SELECT command_id::text, attempts FROM stacker.claim_commands('dep-stk', '00000000-0000-4000-8000-000000000301')$$,
    $$VALUES ('cmd_stk-1', 2)$$, 'the command delivered by Stacker''s UPDATE is redelivered once its lease ran out');

-- Stacker's report: UPDATE commands SET status, result.
SELECT lives_ok($$UPDATE stacker.commands SET status = 'completed', result = '{"status": "ok"}', updated_at = now()
                   WHERE command_id = 'cmd_stk-1'$$, 'Stacker''s report UPDATE');
SELECT results_eq(
    $$SELECT status::text, completed_at, lease_expires_at FROM stacker.commands WHERE command_id = 'cmd_stk-1'$$,
    $$VALUES ('completed', now(), NULL::timestamptz)$$, 'completed_at filled in, the lease cleared');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$, 'the queue row is gone');
SELECT lives_ok($$INSERT INTO stacker.command_queue (command_id, deployment_hash, priority) VALUES ('cmd_stk-1', 'dep-stk', 2)$$,
                'a late second-step INSERT for the finished command ...');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'cmd_stk-1'$$, '... makes no queue row');

-- Finished commands are immutable: 55000.
SELECT throws_ok($$UPDATE stacker.commands SET status = 'failed' WHERE command_id = 'cmd_stk-1'$$,
                 '55000', 'command ''cmd_stk-1'' is already completed; it cannot become failed',
                 'a status UPDATE of a completed command: 55000');
SELECT throws_ok($$UPDATE stacker.commands SET status = 'queued' WHERE command_id = 'cmd_stk-1'$$,
                 '55000', 'command ''cmd_stk-1'' is already completed; it cannot become queued',
                 'requeueing a completed command by hand: 55000');
SELECT throws_ok($$UPDATE stacker.commands SET result = '{"status": "changed"}' WHERE command_id = 'cmd_stk-1'$$,
                 '55000', NULL, 'rewriting the result of a completed command: 55000');
SELECT lives_ok($$SELECT stacker.create_command('dep-stk', 'restart', p_command_id => 'cmd_stk-2');
                  SELECT stacker.cancel_command('cmd_stk-2');$$, 'cmd_stk-2 created and cancelled');
SELECT throws_ok($$UPDATE stacker.commands SET status = 'completed', result = '{}' WHERE command_id = 'cmd_stk-2'$$,
                 '55000', 'command ''cmd_stk-2'' is already cancelled; it cannot become completed',
                 'Stacker''s report overwriting a cancelled command: 55000');
SELECT results_eq($$SELECT status::text, result FROM stacker.commands WHERE command_id IN ('cmd_stk-1', 'cmd_stk-2') ORDER BY command_id$$,
                  $$VALUES ('completed', '{"status": "ok"}'::jsonb), ('cancelled', NULL::jsonb)$$,
                  'both keep their outcome');

-- Inserts in any status ----------------------------------------------------------------------------
SELECT lives_ok($$
    INSERT INTO stacker.commands (command_id, deployment_hash, type, status, priority, created_by, timeout_seconds)
    VALUES ('ins-sent', 'dep-ins', 'logs', 'sent', 'low', 'sql', 60),
           ('ins-exec', 'dep-ins', 'logs', 'executing', 'critical', 'sql', 60),
           ('ins-done', 'dep-ins', 'logs', 'completed', 'normal', 'sql', 60),
           ('ins-q1', 'dep-ins', 'logs', 'queued', 'normal', 'sql', 60),
           ('ins-q2', 'dep-ins', 'logs', 'queued', 'normal', 'sql', 60)
$$, 'one multi-row INSERT of commands in several statuses');
SELECT results_eq(
    $$SELECT c.command_id::text, c.attempts, c.sent_at, c.started_at, c.completed_at, c.lease_expires_at,
             q.command_id IS NOT NULL, q.priority, q.lease_expires_at
        FROM stacker.commands c LEFT JOIN stacker.command_queue q USING (command_id)
       WHERE c.deployment_hash = 'dep-ins' ORDER BY c.command_id$$,
    $$VALUES ('ins-done', 0, NULL::timestamptz, NULL::timestamptz, now(), NULL::timestamptz, false, NULL::int, NULL::timestamptz),
             ('ins-exec', 1, now(), now(), NULL::timestamptz, now() + interval '60 seconds', true, 3, now() + interval '60 seconds'),
             ('ins-q1', 0, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, true, 1, NULL::timestamptz),
             ('ins-q2', 0, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, true, 1, NULL::timestamptz),
             ('ins-sent', 1, now(), NULL::timestamptz, NULL::timestamptz, now() + interval '60 seconds', true, 0, now() + interval '60 seconds')$$,
    'pending ones get exactly one queue row each (in flight with a lease and an attempt), the finished one none');

-- Updates keep the queue row in step -----------------------------------------------------------------
UPDATE stacker.commands SET priority = 'critical' WHERE command_id = 'ins-q1';
SELECT is((SELECT priority FROM stacker.command_queue WHERE command_id = 'ins-q1'), 3, 'a priority UPDATE moves the queue row''s priority');
UPDATE stacker.commands SET scheduled_for = now() + interval '1 hour' WHERE command_id = 'ins-q2';
SELECT is((SELECT visible_at FROM stacker.command_queue WHERE command_id = 'ins-q2'), now() + interval '1 hour',
          'a scheduled_for UPDATE moves its visibility');
UPDATE stacker.commands SET status = 'queued' WHERE command_id = 'ins-sent';
SELECT results_eq(
    $$SELECT c.lease_expires_at, q.lease_expires_at, q.visible_at FROM stacker.commands c
        JOIN stacker.command_queue q USING (command_id) WHERE command_id = 'ins-sent'$$,
    $$VALUES (NULL::timestamptz, NULL::timestamptz, '-infinity'::timestamptz)$$,
    'requeueing by hand clears the lease and makes it claimable at once');
UPDATE stacker.commands SET status = 'sent' WHERE deployment_hash = 'dep-ins' AND status = 'queued' AND command_id <> 'ins-q2';
SELECT results_eq(
    $$SELECT c.command_id::text, c.attempts, c.lease_expires_at, q.lease_expires_at FROM stacker.commands c
        JOIN stacker.command_queue q USING (command_id) WHERE c.command_id IN ('ins-q1', 'ins-sent') ORDER BY 1$$,
    $$VALUES ('ins-q1', 1, now() + interval '60 seconds', now() + interval '60 seconds'),
             ('ins-sent', 2, now() + interval '60 seconds', now() + interval '60 seconds')$$,
    'a multi-row status UPDATE fills attempts and the lease of each row');
UPDATE stacker.commands SET deployment_hash = 'dep-ins-moved' WHERE command_id = 'ins-q2';
SELECT is((SELECT deployment_hash::text FROM stacker.command_queue WHERE command_id = 'ins-q2'), 'dep-ins-moved',
          'a deployment_hash UPDATE moves the queue row with it');
DELETE FROM stacker.commands WHERE command_id = 'ins-exec';
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'ins-exec'$$,
                'deleting a command deletes its queue row (ON DELETE CASCADE)');
UPDATE stacker.commands SET status = 'failed' WHERE command_id = 'ins-q1';
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'ins-q1'$$,
                'a failed status set by hand removes the queue row');
SELECT lives_ok($$DELETE FROM stacker.command_queue WHERE deployment_hash LIKE 'dep-ins%'$$,
                'a DELETE of every dep-ins queue row ...');
SELECT results_eq($$SELECT command_id::text FROM stacker.command_queue WHERE deployment_hash LIKE 'dep-ins%' ORDER BY 1$$,
                  ARRAY['ins-q2', 'ins-sent'], '... keeps the rows of the pending commands');

-- The invariant after a sequence of calls ---------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-inv', '00000000-0000-4000-8000-000000000302');
    SELECT stacker.create_command('dep-inv', 'health', p_command_id => 'inv-' || n,
                                  p_priority => (ARRAY['low', 'normal', 'high', 'critical'])[1 + n % 4])
      FROM generate_series(1, 12) AS n;
    SELECT stacker.create_commands('[{"deployment_hash": "dep-inv", "command_type": "logs", "command_id": "inv-b1"},
                                     {"deployment_hash": "dep-inv", "command_type": "logs", "command_id": "inv-b2"}]');
    SELECT stacker.claim_commands('dep-inv', '00000000-0000-4000-8000-000000000302', 8);
    SELECT stacker.start_command(command_id, '00000000-0000-4000-8000-000000000302')
      FROM stacker.commands WHERE deployment_hash = 'dep-inv' AND status = 'sent' ORDER BY command_id LIMIT 3;
    SELECT stacker.report_result(command_id, '00000000-0000-4000-8000-000000000302', 'completed')
      FROM stacker.commands WHERE deployment_hash = 'dep-inv' AND status = 'executing' ORDER BY command_id LIMIT 2;
    SELECT stacker.cancel_command(command_id)
      FROM stacker.commands WHERE deployment_hash = 'dep-inv' AND status = 'queued' ORDER BY command_id LIMIT 2;
$$, 'a sequence of creates, claims, starts, reports and cancels');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second'
 WHERE deployment_hash = 'dep-inv' AND status = 'sent';
SELECT lives_ok($$
    SELECT stacker.requeue_expired();
    SELECT stacker.claim_commands('dep-inv', '00000000-0000-4000-8000-000000000302', 3);
    SELECT stacker.cleanup();
$$, 'then a lease sweep, another claim and a cleanup');
SELECT cmp_ok((SELECT count(DISTINCT status)::int FROM stacker.commands WHERE deployment_hash = 'dep-inv'), '>=', 4,
              'the sequence left commands in at least four statuses');
SELECT is((SELECT count(*)::int FROM stacker.commands WHERE status IN ('queued', 'sent', 'executing')),
          (SELECT count(*)::int FROM stacker.command_queue),
          'count of pending commands = count of queue rows');
SELECT is_empty(
    $$SELECT q.command_id FROM stacker.command_queue q LEFT JOIN stacker.commands c USING (command_id)
       WHERE c.command_id IS NULL OR c.status NOT IN ('queued', 'sent', 'executing')$$,
    'no queue row belongs to a finished or missing command');
SELECT is_empty(
    $$SELECT c.command_id FROM stacker.commands c LEFT JOIN stacker.command_queue q USING (command_id)
       WHERE c.status IN ('queued', 'sent', 'executing') AND q.command_id IS NULL$$,
    'no pending command lacks its queue row');
SELECT is_empty(
    $$SELECT c.command_id FROM stacker.commands c JOIN stacker.command_queue q USING (command_id)
       WHERE q.deployment_hash <> c.deployment_hash
          OR q.priority <> CASE c.priority WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'normal' THEN 1 ELSE 0 END
          OR q.lease_expires_at IS DISTINCT FROM CASE WHEN c.status <> 'queued' THEN c.lease_expires_at END
          OR (c.status <> 'queued' AND c.lease_expires_at IS NULL)$$,
    'every queue row agrees with its command (deployment, priority, lease)');

SELECT * FROM finish();
ROLLBACK;
