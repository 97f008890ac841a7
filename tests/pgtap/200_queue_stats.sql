-- The queue_stats view: per deployment, queued and in-flight commands, the oldest
-- queued one, expired leases and when the agent was last seen.
BEGIN;
SELECT plan(6);

SELECT lives_ok($$
    SELECT stacker.register_agent('dep-s1', '00000000-0000-4000-8000-000000000501');
    SELECT stacker.register_agent('dep-s3', '00000000-0000-4000-8000-000000000503');
    SELECT stacker.create_command('dep-s1', 'deploy', p_command_id => 's1-sent');
    SELECT stacker.create_command('dep-s1', 'deploy', p_command_id => 's1-exec');
    SELECT stacker.create_command('dep-s1', 'deploy', p_command_id => 's1-done');
    SELECT stacker.claim_commands('dep-s1', '00000000-0000-4000-8000-000000000501', 3);
    SELECT stacker.start_command('s1-exec', '00000000-0000-4000-8000-000000000501');
    SELECT stacker.report_result('s1-done', '00000000-0000-4000-8000-000000000501', 'completed');
    SELECT stacker.create_command('dep-s1', 'health', p_command_id => 's1-q1');
    SELECT stacker.create_command('dep-s1', 'health', p_command_id => 's1-q2');
    SELECT stacker.create_command('dep-s1', 'health', p_command_id => 's1-later', p_scheduled_for => now() + interval '1 day');
    SELECT stacker.create_command('dep-s2', 'health', p_command_id => 's2-q1');
$$, 'setup: dep-s1 with queued, scheduled, sent, executing and completed commands; dep-s2 without agent; dep-s3 idle');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 's1-exec';
UPDATE stacker.agents SET last_heartbeat = now() - interval '10 minutes' WHERE deployment_hash = 'dep-s3';

SELECT results_eq(
    $$SELECT deployment_hash, queued, in_flight, expired_leases, agent_last_seen
        FROM stacker.queue_stats WHERE deployment_hash LIKE 'dep-s_' ORDER BY deployment_hash$$,
    $$VALUES ('dep-s1', 3::bigint, 2::bigint, 1::bigint, now()),
             ('dep-s2', 1::bigint, 0::bigint, 0::bigint, NULL::timestamptz),
             ('dep-s3', 0::bigint, 0::bigint, 0::bigint, now() - interval '10 minutes')$$,
    'counts per deployment: queued (scheduled ones included), in flight, expired leases; the agent''s last heartbeat');
SELECT is((SELECT oldest_queued_at FROM stacker.queue_stats WHERE deployment_hash = 'dep-s1'),
          (SELECT created_at FROM stacker.commands WHERE command_id = 's1-q1'),
          'oldest_queued_at is the creation time of the oldest queued command');
SELECT is((SELECT oldest_queued_at FROM stacker.queue_stats WHERE deployment_hash = 'dep-s3'), NULL,
          'oldest_queued_at is NULL when nothing is queued');

-- The sweep moves the expired one back to queued.
SELECT is(stacker.requeue_expired(), 1, 'the expired lease is swept');
SELECT results_eq(
    $$SELECT queued, in_flight, expired_leases, oldest_queued_at = (SELECT created_at FROM stacker.commands WHERE command_id = 's1-exec')
        FROM stacker.queue_stats WHERE deployment_hash = 'dep-s1'$$,
    $$VALUES (4::bigint, 1::bigint, 0::bigint, true)$$,
    'after the sweep: one more queued, one less in flight, no expired lease; the requeued command is the oldest queued');

SELECT * FROM finish();
ROLLBACK;
