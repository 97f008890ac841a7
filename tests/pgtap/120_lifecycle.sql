-- The lifecycle: create -> claim -> start -> extend -> report, field by field;
-- start_command and extend_lease errors (22023, P0002, 42501, 55000); every agent
-- call marks the agent seen.
BEGIN;
SELECT plan(54);

SELECT lives_ok($$
    SELECT stacker.register_agent('dep-lc', '00000000-0000-4000-8000-0000000000c1');
    SELECT stacker.register_agent('dep-lc-other', '00000000-0000-4000-8000-0000000000c2');
$$, 'setup: agents of dep-lc and dep-lc-other');

-- create ------------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, agent_id, sent_at, started_at, completed_at, lease_expires_at
        FROM stacker.create_command('dep-lc', 'deploy', '{"tag": "v2"}', p_command_id => 'lc-1')$$,
    $$VALUES ('lc-1', 'queued', 0, NULL::uuid, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz)$$,
    'create: queued, no delivery yet');

-- claim -------------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, agent_id::text, sent_at, started_at, lease_expires_at
        FROM stacker.claim_commands('dep-lc', '00000000-0000-4000-8000-0000000000c1')$$,
    $$VALUES ('lc-1', 'sent', 1, '00000000-0000-4000-8000-0000000000c1', now(), NULL::timestamptz,
              now() + interval '300 seconds')$$,
    'claim: sent, attempts 1, the agent, sent_at now, lease of timeout_seconds');

-- start -------------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, started_at, lease_expires_at
        FROM stacker.start_command('lc-1', '00000000-0000-4000-8000-0000000000c1')$$,
    $$VALUES ('lc-1', 'executing', 1, now(), now() + interval '300 seconds')$$,
    'start: executing, started_at now, the lease unchanged');
SELECT results_eq(
    $$SELECT * FROM stacker.start_command('lc-1', '00000000-0000-4000-8000-0000000000c1')$$,
    $$SELECT * FROM stacker.commands WHERE command_id = 'lc-1'$$,
    'starting an executing command again returns it unchanged');
SELECT is((SELECT status::text FROM stacker.commands WHERE command_id = 'lc-1'), 'executing', 'still executing');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id = 'lc-1'), 1,
          'an executing command keeps its queue row');

-- extend --------------------------------------------------------------------------------------
SELECT is(stacker.extend_lease('lc-1', '00000000-0000-4000-8000-0000000000c1', 600), now() + interval '600 seconds',
          'extend_lease returns the new lease end');
SELECT results_eq(
    $$SELECT c.lease_expires_at, q.lease_expires_at, q.visible_at, c.status::text
        FROM stacker.commands c JOIN stacker.command_queue q USING (command_id) WHERE command_id = 'lc-1'$$,
    $$VALUES (now() + interval '600 seconds', now() + interval '600 seconds', now() + interval '600 seconds', 'executing')$$,
    'the command and its queue row carry the new lease; the status stays executing');
SELECT is(stacker.extend_lease('lc-1', '00000000-0000-4000-8000-0000000000c1'), now() + interval '300 seconds',
          'extend_lease without p_lease_seconds uses the command''s timeout_seconds');

-- report ---------------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, result, error, completed_at, lease_expires_at, attempts, started_at
        FROM stacker.report_result('lc-1', '00000000-0000-4000-8000-0000000000c1', 'completed', '{"deployed": "v2"}')$$,
    $$VALUES ('lc-1', 'completed', '{"deployed": "v2"}'::jsonb, NULL::jsonb, now(), NULL::timestamptz, 1, now())$$,
    'report completed: result stored, completed_at now, lease cleared');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'lc-1'$$, 'the queue row is gone');
SELECT results_eq($$SELECT * FROM stacker.get_command('lc-1')$$,
                  $$SELECT * FROM stacker.commands WHERE command_id = 'lc-1'$$,
                  'get_command shows the finished command');

-- A failed outcome, reported straight from sent.
SELECT lives_ok($$SELECT stacker.create_command('dep-lc', 'restart', p_command_id => 'lc-f');
                  SELECT stacker.claim_commands('dep-lc', '00000000-0000-4000-8000-0000000000c1');$$,
                'setup: lc-f claimed');
SELECT results_eq(
    $$SELECT status::text, result, error, completed_at
        FROM stacker.report_result('lc-f', '00000000-0000-4000-8000-0000000000c1', 'failed', NULL,
                                   '{"message": "container not found"}')$$,
    $$VALUES ('failed', NULL::jsonb, '{"message": "container not found"}'::jsonb, now())$$,
    'report failed from sent (never started): error stored, completed_at now');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'lc-f'$$, 'its queue row is gone');

-- start_command errors ---------------------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.create_command('dep-lc', 'logs', p_command_id => 'lc-q');
    SELECT stacker.create_command('dep-lc', 'logs', p_command_id => 'lc-s', p_priority => 'critical');
    SELECT stacker.claim_commands('dep-lc', '00000000-0000-4000-8000-0000000000c1');
$$, 'setup: lc-q queued, lc-s sent');
SELECT is((SELECT status::text FROM stacker.commands WHERE command_id = 'lc-s'), 'sent', 'lc-s is sent');
SELECT throws_ok($$SELECT stacker.start_command('lc-nope', '00000000-0000-4000-8000-0000000000c1')$$,
                 'P0002', 'command ''lc-nope'' does not exist', 'start an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.start_command('', '00000000-0000-4000-8000-0000000000c1')$$,
                 '22023', 'invalid command_id '''': must be 1 to 64 characters', 'start with an empty command_id: 22023');
SELECT throws_ok(format($$SELECT stacker.start_command(%L, '00000000-0000-4000-8000-0000000000c1')$$, repeat('i', 65)),
                 '22023', NULL, 'start with an over-long command_id: 22023');
SELECT throws_ok($$SELECT stacker.start_command('lc-s', NULL)$$,
                 '22023', 'invalid agent_id NULL: must be the agent id returned by register_agent',
                 'start without an agent id: 22023');
SELECT throws_ok($$SELECT stacker.start_command('lc-s', '00000000-0000-4000-8000-0000000000c2')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000c2 is not the registered agent of deployment ''dep-lc''',
                 'start by another deployment''s agent: 42501');
SELECT throws_ok($$SELECT stacker.start_command('lc-q', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', 'command ''lc-q'' is queued; only a sent command can start', 'start a queued command: 55000');
SELECT throws_ok($$SELECT stacker.start_command('lc-1', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', 'command ''lc-1'' is completed; only a sent command can start', 'start a completed command: 55000');
SELECT throws_ok($$SELECT stacker.start_command('lc-f', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', 'command ''lc-f'' is failed; only a sent command can start', 'start a failed command: 55000');
SELECT lives_ok($$
    INSERT INTO stacker.commands (command_id, deployment_hash, type, status, created_by)
    VALUES ('lc-noagent', 'dep-lc-noagent', 'logs', 'sent', 'sql')
$$, 'setup: a sent command of a deployment without an agent');
SELECT throws_ok($$SELECT stacker.start_command('lc-noagent', '00000000-0000-4000-8000-0000000000c1')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000c1 is not the registered agent of deployment ''dep-lc-noagent''',
                 'start for a deployment without an agent: 42501');
SELECT results_eq($$SELECT status::text, started_at FROM stacker.commands WHERE command_id IN ('lc-q', 'lc-s') ORDER BY command_id$$,
                  $$VALUES ('queued', NULL::timestamptz), ('sent', NULL::timestamptz)$$,
                  'the refused starts changed nothing');

-- extend_lease errors --------------------------------------------------------------------------------
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c1', 0)$$,
                 '22023', 'invalid lease_seconds ''0'': must be NULL or an integer from 1 to 604800',
                 'extend with lease 0: 22023');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c1', -5)$$,
                 '22023', 'invalid lease_seconds ''-5'': must be NULL or an integer from 1 to 604800',
                 'extend with a negative lease: 22023');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c1', 604801)$$,
                 '22023', NULL, 'extend beyond a week: 22023');
SELECT throws_ok($$SELECT stacker.extend_lease('', '00000000-0000-4000-8000-0000000000c1')$$,
                 '22023', 'invalid command_id '''': must be 1 to 64 characters', 'extend with an empty command_id: 22023');
SELECT throws_ok(format($$SELECT stacker.extend_lease(%L, '00000000-0000-4000-8000-0000000000c1')$$, repeat('i', 65)),
                 '22023', NULL, 'extend with an over-long command_id: 22023');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', NULL)$$,
                 '22023', 'invalid agent_id NULL: must be the agent id returned by register_agent',
                 'extend without an agent id: 22023');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-nope', '00000000-0000-4000-8000-0000000000c1')$$,
                 'P0002', 'command ''lc-nope'' does not exist', 'extend an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c2')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000c2 is not the registered agent of deployment ''dep-lc''',
                 'extend by another deployment''s agent: 42501');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-q', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', 'command ''lc-q'' is queued; only a sent or executing command has a lease',
                 'extend a queued command: 55000');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-1', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', 'command ''lc-1'' is completed; only a sent or executing command has a lease',
                 'extend a completed command: 55000');
SELECT is((SELECT lease_expires_at FROM stacker.commands WHERE command_id = 'lc-s'), now() + interval '300 seconds',
          'the refused extensions left the lease as it was');

-- A lease that ran out can be neither started nor extended: it is due for redelivery.
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'lc-s';
SELECT throws_ok($$SELECT stacker.start_command('lc-s', '00000000-0000-4000-8000-0000000000c1')$$,
                 '55000', NULL, 'start after the lease ran out: 55000');
SELECT throws_like($$SELECT stacker.start_command('lc-s', '00000000-0000-4000-8000-0000000000c1')$$,
                   'the lease of command ''lc-s'' ran out at %; it is due for redelivery',
                   '... and the message names the command and the lease end');
SELECT throws_ok($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c1', 60)$$,
                 '55000', NULL, 'extend after the lease ran out: 55000');
SELECT throws_like($$SELECT stacker.extend_lease('lc-s', '00000000-0000-4000-8000-0000000000c1', 60)$$,
                   'the lease of command ''lc-s'' ran out at %; it is due for redelivery',
                   '... and the message names the command');

-- Every agent call marks the agent seen --------------------------------------------------------------
SELECT lives_ok($$SELECT stacker.create_command('dep-lc', 'logs', p_command_id => 'lc-seen', p_priority => 'critical');
                  SELECT stacker.claim_commands('dep-lc', '00000000-0000-4000-8000-0000000000c1', 10);$$,
                'setup: lc-seen claimed (with lc-s redelivered and lc-q)');
SELECT is((SELECT status::text FROM stacker.commands WHERE command_id = 'lc-seen'), 'sent', 'lc-seen is sent');
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-lc';
SELECT lives_ok($$SELECT stacker.start_command('lc-seen', '00000000-0000-4000-8000-0000000000c1')$$, 'start lc-seen');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-lc'$$,
                  $$VALUES ('online', now())$$, 'start_command marked the agent seen');
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-lc';
SELECT lives_ok($$SELECT stacker.extend_lease('lc-seen', '00000000-0000-4000-8000-0000000000c1')$$, 'extend lc-seen');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-lc'$$,
                  $$VALUES ('online', now())$$, 'extend_lease marked the agent seen');
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-lc';
SELECT lives_ok($$SELECT stacker.report_result('lc-seen', '00000000-0000-4000-8000-0000000000c1', 'completed')$$, 'report lc-seen');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-lc'$$,
                  $$VALUES ('online', now())$$, 'report_result marked the agent seen');
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-lc';
SELECT lives_ok($$SELECT stacker.register_agent('dep-lc')$$, 'register again');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-lc'$$,
                  $$VALUES ('online', now())$$, 'register_agent marked the agent seen');

SELECT * FROM finish();
ROLLBACK;
