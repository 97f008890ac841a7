-- register_agent and claim_commands: one agent per deployment, priorities (critical,
-- high, normal, low, then oldest first), scheduled_for, leases and redelivery,
-- max_attempts exhaustion, wrong agent (42501) and invalid input (22023).
-- now() is frozen inside the test's transaction: expiry is simulated by moving
-- lease_expires_at (or scheduled_for) into the past with a direct UPDATE.
BEGIN;
SELECT plan(68);

-- register_agent --------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT id::text, deployment_hash::text, version::text, capabilities, system_info, status::text, last_heartbeat
        FROM stacker.register_agent('dep-a', '00000000-0000-4000-8000-00000000000a', '1.0',
                                    '["health", "logs"]', '{"os": "linux"}')$$,
    $$VALUES ('00000000-0000-4000-8000-00000000000a', 'dep-a', '1.0', '["health", "logs"]'::jsonb,
              '{"os": "linux"}'::jsonb, 'online', now())$$,
    'register_agent stores the agent with the chosen id, online, seen now');
SELECT results_eq(
    $$SELECT id::text, version::text, capabilities, system_info
        FROM stacker.register_agent('dep-a', NULL, '1.1', '["health", "logs", "restart"]', '{"os": "linux", "arch": "arm64"}')$$,
    $$VALUES ('00000000-0000-4000-8000-00000000000a', '1.1', '["health", "logs", "restart"]'::jsonb,
              '{"os": "linux", "arch": "arm64"}'::jsonb)$$,
    'registering again returns the same agent id and updates version, capabilities and system_info');
SELECT is((stacker.register_agent('dep-a', '00000000-0000-4000-8000-0000000000ff')).id::text,
          '00000000-0000-4000-8000-00000000000a',
          'registering again with another id still returns the registered agent (one agent per deployment)');
SELECT is((SELECT version::text FROM stacker.agents WHERE deployment_hash = 'dep-a'), '1.1',
          'a re-registration without a version keeps the known version');
SELECT is((SELECT count(*)::int FROM stacker.agents WHERE deployment_hash = 'dep-a'), 1,
          'still exactly one agent for dep-a');
SELECT isnt((stacker.register_agent('dep-b', '00000000-0000-4000-8000-00000000000b')).id, NULL,
            'setup: agent of dep-b registered');
SELECT isnt((stacker.register_agent('dep-gen')).id, NULL, 'without p_agent_id a new agent gets a generated id');
SELECT throws_ok($$SELECT stacker.register_agent('dep-x', '00000000-0000-4000-8000-00000000000a')$$,
                 '23505', 'agent_id 00000000-0000-4000-8000-00000000000a is already registered for another deployment',
                 'an agent id of another deployment: 23505');
SELECT throws_ok($$SELECT stacker.register_agent('')$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters',
                 'register_agent with an empty deployment_hash: 22023');
SELECT throws_ok(format($$SELECT stacker.register_agent(%L)$$, repeat('h', 129)),
                 '22023', NULL, 'register_agent with an over-long deployment_hash: 22023');
SELECT throws_ok($$SELECT stacker.register_agent('dep-a', NULL, NULL, '{"health": true}')$$,
                 '22023', 'invalid capabilities ''{"health": true}'': must be a JSON array',
                 'capabilities that are not an array: 22023');
SELECT throws_ok($$SELECT stacker.register_agent('dep-a', NULL, NULL, '[]', '["linux"]')$$,
                 '22023', 'invalid system_info ''["linux"]'': must be a JSON object',
                 'system_info that is not an object: 22023');
SELECT throws_ok(format($$SELECT stacker.register_agent('dep-a', NULL, %L)$$, repeat('v', 51)),
                 '22023', NULL, 'a version over 50 characters: 22023');

-- Nothing to claim -------------------------------------------------------------------------------
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-a', '00000000-0000-4000-8000-00000000000a')$$,
                'claim on an empty queue returns no rows');

-- Priorities, then age ---------------------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'low', p_command_id => 'a-low-1');
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'normal', p_command_id => 'a-normal-1');
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'high', p_command_id => 'a-high-1');
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'critical', p_command_id => 'a-critical-1');
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'normal', p_command_id => 'a-normal-2');
    SELECT stacker.create_command('dep-a', 'health', p_priority => 'high', p_command_id => 'a-high-2');
    SELECT stacker.create_command('dep-b', 'health', p_priority => 'critical', p_command_id => 'b-critical-1');
$$, 'setup: six commands of mixed priority in dep-a, one in dep-b');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.claim_commands('dep-a', '00000000-0000-4000-8000-00000000000a', 10)$$,
    ARRAY['a-critical-1', 'a-high-1', 'a-high-2', 'a-normal-1', 'a-normal-2', 'a-low-1'],
    'claim returns critical, high, normal, low; oldest first within a priority; only its own deployment');
SELECT results_eq(
    $$SELECT count(*)::int, min(attempts), max(attempts), bool_and(status = 'sent'), bool_and(sent_at = now()),
             bool_and(agent_id = '00000000-0000-4000-8000-00000000000a'),
             bool_and(lease_expires_at = now() + interval '300 seconds')
        FROM stacker.commands WHERE deployment_hash = 'dep-a'$$,
    $$VALUES (6, 1, 1, true, true, true, true)$$,
    'each claimed command is sent, attempts 1, sent_at now, held by the agent, leased for its timeout_seconds');
SELECT results_eq(
    $$SELECT count(*)::int, bool_and(q.lease_expires_at = c.lease_expires_at), bool_and(q.visible_at = c.lease_expires_at)
        FROM stacker.command_queue q JOIN stacker.commands c USING (command_id)
       WHERE c.deployment_hash = 'dep-a'$$,
    $$VALUES (6, true, true)$$,
    'claimed commands keep their queue rows, with the lease');
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-a', '00000000-0000-4000-8000-00000000000a', 10)$$,
                'commands with a running lease are not claimed again');
SELECT results_eq($$SELECT status::text, attempts FROM stacker.commands WHERE command_id = 'b-critical-1'$$,
                  $$VALUES ('queued', 0)$$, 'the other deployment''s command was not touched');

-- One at a time, the same order.
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-p', '00000000-0000-4000-8000-0000000000a2');
    SELECT stacker.create_command('dep-p', 'health', p_priority => 'normal', p_command_id => 'p-normal-1');
    SELECT stacker.create_command('dep-p', 'health', p_priority => 'low', p_command_id => 'p-low-1');
    SELECT stacker.create_command('dep-p', 'health', p_priority => 'critical', p_command_id => 'p-critical-1');
    SELECT stacker.create_command('dep-p', 'health', p_priority => 'normal', p_command_id => 'p-normal-2');
$$, 'setup: four commands in dep-p');
SELECT results_eq($$SELECT command_id::text FROM stacker.claim_commands('dep-p', '00000000-0000-4000-8000-0000000000a2')$$,
                  ARRAY['p-critical-1'], 'first claim (limit 1): the critical one');
SELECT results_eq($$SELECT command_id::text FROM stacker.claim_commands('dep-p', '00000000-0000-4000-8000-0000000000a2')$$,
                  ARRAY['p-normal-1'], 'second claim: the older normal one');
SELECT results_eq($$SELECT command_id::text FROM stacker.claim_commands('dep-p', '00000000-0000-4000-8000-0000000000a2', 5)$$,
                  ARRAY['p-normal-2', 'p-low-1'], 'third claim (limit 5): the rest, normal before low');

-- Lease length: p_lease_seconds, else the command's timeout_seconds.
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-l', '00000000-0000-4000-8000-0000000000a3');
    SELECT stacker.create_command('dep-l', 'logs', p_timeout_seconds => 120, p_command_id => 'l-1');
    SELECT stacker.create_command('dep-l', 'logs', p_timeout_seconds => 120, p_command_id => 'l-2');
$$, 'setup: two commands with timeout_seconds 120 in dep-l');
SELECT results_eq(
    $$SELECT command_id::text, lease_expires_at FROM stacker.claim_commands('dep-l', '00000000-0000-4000-8000-0000000000a3')$$,
    $$VALUES ('l-1', now() + interval '120 seconds')$$,
    'without p_lease_seconds the lease is the command''s timeout_seconds');
SELECT results_eq(
    $$SELECT command_id::text, lease_expires_at FROM stacker.claim_commands('dep-l', '00000000-0000-4000-8000-0000000000a3', 1, 15)$$,
    $$VALUES ('l-2', now() + interval '15 seconds')$$,
    'p_lease_seconds sets the lease');

-- scheduled_for ------------------------------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-s', '00000000-0000-4000-8000-0000000000a4');
    SELECT stacker.create_command('dep-s', 'restart', p_priority => 'critical', p_scheduled_for => now() + interval '1 hour',
                                  p_command_id => 's-future');
    SELECT stacker.create_command('dep-s', 'restart', p_priority => 'low', p_scheduled_for => now() - interval '1 hour',
                                  p_command_id => 's-past');
    SELECT stacker.create_command('dep-s', 'restart', p_priority => 'low', p_scheduled_for => now(),
                                  p_command_id => 's-now');
$$, 'setup: commands scheduled in the future, the past and now');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.claim_commands('dep-s', '00000000-0000-4000-8000-0000000000a4', 10)$$,
    ARRAY['s-past', 's-now'],
    'scheduled_for in the past or now is claimable; in the future it is not, whatever its priority');
SELECT results_eq($$SELECT status::text, attempts FROM stacker.commands WHERE command_id = 's-future'$$,
                  $$VALUES ('queued', 0)$$, 'the future command stays queued, untouched');
SELECT is((SELECT queued FROM stacker.queue_stats WHERE deployment_hash = 'dep-s'), 1::bigint,
          'queue_stats counts the scheduled command as queued');
UPDATE stacker.commands SET scheduled_for = now() - interval '1 second' WHERE command_id = 's-future';
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.claim_commands('dep-s', '00000000-0000-4000-8000-0000000000a4', 10)$$,
    ARRAY['s-future'],
    'once its time has come it is claimed');

-- Wrong agent and invalid input ---------------------------------------------------------------------
SELECT lives_ok($$SELECT stacker.create_command('dep-w', 'health', p_command_id => 'w-1');
                  SELECT stacker.register_agent('dep-w', '00000000-0000-4000-8000-0000000000a5');$$,
                'setup: dep-w with a command and an agent');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-00000000000b')$$,
                 '42501', 'agent 00000000-0000-4000-8000-00000000000b is not the registered agent of deployment ''dep-w''',
                 'claim by another deployment''s agent: 42501');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000ee')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000ee is not the registered agent of deployment ''dep-w''',
                 'claim by an unknown agent id: 42501');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-unregistered', '00000000-0000-4000-8000-0000000000a5')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000a5 is not the registered agent of deployment ''dep-unregistered''',
                 'claim for a deployment without an agent: 42501');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', NULL)$$,
                 '22023', 'invalid agent_id NULL: must be the agent id returned by register_agent',
                 'claim without an agent id: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('', '00000000-0000-4000-8000-0000000000a5')$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters',
                 'claim with an empty deployment_hash: 22023');
SELECT throws_ok(format($$SELECT stacker.claim_commands(%L, '00000000-0000-4000-8000-0000000000a5')$$, repeat('h', 129)),
                 '22023', NULL, 'claim with an over-long deployment_hash: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', 0)$$,
                 '22023', 'invalid limit ''0'': must be an integer from 1 to 1000', 'claim with limit 0: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', -3)$$,
                 '22023', 'invalid limit ''-3'': must be an integer from 1 to 1000', 'claim with a negative limit: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', 1001)$$,
                 '22023', 'invalid limit ''1001'': must be an integer from 1 to 1000', 'claim with a limit over 1000: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', NULL)$$,
                 '22023', 'invalid limit NULL: must be an integer from 1 to 1000', 'claim with a NULL limit: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', 1, 0)$$,
                 '22023', 'invalid lease_seconds ''0'': must be NULL or an integer from 1 to 604800',
                 'claim with lease 0: 22023');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5', 1, -60)$$,
                 '22023', 'invalid lease_seconds ''-60'': must be NULL or an integer from 1 to 604800',
                 'claim with a negative lease: 22023');
SELECT results_eq($$SELECT status::text, attempts, agent_id FROM stacker.commands WHERE command_id = 'w-1'$$,
                  $$VALUES ('queued', 0, NULL::uuid)$$, 'the refused claims changed nothing');

-- Every claim marks the agent seen; a refused one does not.
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-w';
SELECT throws_ok($$SELECT stacker.claim_commands('dep-w', '00000000-0000-4000-8000-00000000000b')$$,
                 '42501', NULL, 'another refused claim');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-w'$$,
                  $$VALUES ('offline', now() - interval '1 hour')$$, 'a refused claim does not mark the agent seen');
SELECT results_eq($$SELECT command_id::text FROM stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5')$$,
                  ARRAY['w-1'], 'the right agent claims');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-w'$$,
                  $$VALUES ('online', now())$$, 'the claim marked the agent seen: online, last_heartbeat now');
UPDATE stacker.agents SET last_heartbeat = now() - interval '1 hour', status = 'offline' WHERE deployment_hash = 'dep-w';
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-w', '00000000-0000-4000-8000-0000000000a5')$$,
                'an empty claim ...');
SELECT results_eq($$SELECT status::text, last_heartbeat FROM stacker.agents WHERE deployment_hash = 'dep-w'$$,
                  $$VALUES ('online', now())$$, '... marks the agent seen too');

-- Leases: expiry, redelivery, exhaustion ------------------------------------------------------------
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-e', '00000000-0000-4000-8000-0000000000a6');
    SELECT stacker.create_command('dep-e', 'deploy', p_command_id => 'e-1', p_timeout_seconds => 90);
$$, 'setup: e-1 (max_attempts 3) in dep-e');
SELECT results_eq(
    $$SELECT command_id::text, attempts, lease_expires_at
        FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6', 1, 30)$$,
    $$VALUES ('e-1', 1, now() + interval '30 seconds')$$, 'first delivery: attempts 1, lease 30 s');
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6')$$,
                'not redelivered while the lease runs');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'e-1';
SELECT results_eq($$SELECT visible_at, lease_expires_at FROM stacker.command_queue WHERE command_id = 'e-1'$$,
                  $$VALUES (now() - interval '1 second', now() - interval '1 second')$$,
                  'moving the lease into the past moves the queue row''s lease and visibility with it');
SELECT is((SELECT expired_leases FROM stacker.queue_stats WHERE deployment_hash = 'dep-e'), 1::bigint,
          'queue_stats counts the expired lease');
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, lease_expires_at, agent_id::text
        FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6')$$,
    $$VALUES ('e-1', 'sent', 2, now() + interval '90 seconds', '00000000-0000-4000-8000-0000000000a6')$$,
    'an expired lease is redelivered: attempts 2, a new lease of timeout_seconds');
SELECT lives_ok($$SELECT stacker.start_command('e-1', '00000000-0000-4000-8000-0000000000a6')$$,
                'the agent starts it');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'e-1';
SELECT results_eq(
    $$SELECT command_id::text, status::text, attempts, started_at
        FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6')$$,
    $$VALUES ('e-1', 'sent', 3, NULL::timestamptz)$$,
    'an executing command whose lease ran out is redelivered too: sent again, attempts 3, not started');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'e-1';
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6')$$,
                'after the last attempt (3 of 3) it is not redelivered');
SELECT results_eq(
    $$SELECT status::text, error, completed_at, lease_expires_at FROM stacker.commands WHERE command_id = 'e-1'$$,
    $$VALUES ('failed', '{"reason": "lease_expired", "attempts": 3}'::jsonb, now(), NULL::timestamptz)$$,
    'it failed with error {"reason": "lease_expired", "attempts": 3}');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'e-1'$$,
                'the failed command left the queue');

-- An exhausted command does not use up the claim's limit.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-e', 'deploy', p_priority => 'critical', p_max_attempts => 1, p_command_id => 'e-2');
    SELECT stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6');
    SELECT stacker.create_command('dep-e', 'deploy', p_priority => 'low', p_command_id => 'e-3');
$$, 'setup: e-2 (max_attempts 1) delivered, e-3 queued');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'e-2';
SELECT results_eq(
    $$SELECT command_id::text, attempts FROM stacker.claim_commands('dep-e', '00000000-0000-4000-8000-0000000000a6')$$,
    $$VALUES ('e-3', 1)$$,
    'the claim (limit 1) fails the exhausted e-2 and still returns e-3');
SELECT results_eq($$SELECT status::text, error FROM stacker.commands WHERE command_id = 'e-2'$$,
                  $$VALUES ('failed', '{"reason": "lease_expired", "attempts": 1}'::jsonb)$$,
                  'e-2 failed with reason lease_expired after its single attempt');

-- Redeliveries compete with queued commands by priority and age.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-r', 'deploy', p_priority => 'low', p_command_id => 'r-low');
    SELECT stacker.register_agent('dep-r', '00000000-0000-4000-8000-0000000000a7');
    SELECT stacker.create_command('dep-r', 'deploy', p_priority => 'high', p_command_id => 'r-high');
    SELECT stacker.claim_commands('dep-r', '00000000-0000-4000-8000-0000000000a7');
    SELECT stacker.create_command('dep-r', 'deploy', p_priority => 'normal', p_command_id => 'r-normal');
$$, 'setup: r-high delivered; r-low and r-normal queued');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'r-high';
SELECT results_eq(
    $$SELECT command_id::text, attempts FROM stacker.claim_commands('dep-r', '00000000-0000-4000-8000-0000000000a7', 3)$$,
    $$VALUES ('r-high', 2), ('r-normal', 1), ('r-low', 1)$$,
    'the expired high-priority command comes first, then normal, then low');

SELECT * FROM finish();
ROLLBACK;
