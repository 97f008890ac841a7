-- cancel_command: queued, sent and executing -> cancelled with the queue row gone;
-- cancelling again returns it; completed or failed -> 55000; invalid input, unknown
-- command; a cancelled command is out of the agent's reach.
BEGIN;
SELECT plan(28);

SELECT lives_ok($$
    SELECT stacker.register_agent('dep-x', '00000000-0000-4000-8000-0000000000e1');
    SELECT stacker.create_command('dep-x', 'restart', p_command_id => 'x-sent');
    SELECT stacker.create_command('dep-x', 'restart', p_command_id => 'x-exec');
    SELECT stacker.create_command('dep-x', 'restart', p_command_id => 'x-done');
    SELECT stacker.create_command('dep-x', 'restart', p_command_id => 'x-failed');
    SELECT stacker.claim_commands('dep-x', '00000000-0000-4000-8000-0000000000e1', 4);
    SELECT stacker.start_command('x-exec', '00000000-0000-4000-8000-0000000000e1');
    SELECT stacker.report_result('x-done', '00000000-0000-4000-8000-0000000000e1', 'completed');
    SELECT stacker.report_result('x-failed', '00000000-0000-4000-8000-0000000000e1', 'failed');
    SELECT stacker.create_command('dep-x', 'restart', p_command_id => 'x-queued');
$$, 'setup: x-queued, x-sent, x-exec, x-done (completed), x-failed (failed)');
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-x' ORDER BY command_id$$,
    $$VALUES ('x-done', 'completed'), ('x-exec', 'executing'), ('x-failed', 'failed'), ('x-queued', 'queued'), ('x-sent', 'sent')$$,
    'the commands are in the statuses the cases need');

-- queued -> cancelled --------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, error, completed_at, lease_expires_at
        FROM stacker.cancel_command('x-queued', 'operator changed their mind', 'ops:bob')$$,
    $$VALUES ('x-queued', 'cancelled',
              '{"reason": "cancelled", "message": "operator changed their mind", "cancelled_by": "ops:bob", "previous_status": "queued"}'::jsonb,
              now(), NULL::timestamptz)$$,
    'a queued command is cancelled: error holds reason, message, cancelled_by and the previous status');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'x-queued'$$, 'its queue row is gone');

-- sent -> cancelled; cancelled_by defaults to the actor.
SET LOCAL stacker.actor = 'panel:carol';
SELECT results_eq(
    $$SELECT status::text, error FROM stacker.cancel_command('x-sent')$$,
    $$VALUES ('cancelled', '{"reason": "cancelled", "cancelled_by": "panel:carol", "previous_status": "sent"}'::jsonb)$$,
    'a sent command is cancelled; cancelled_by defaults to stacker.actor');
RESET stacker.actor;
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'x-sent'$$, 'its queue row is gone');

-- executing -> cancelled; cancelled_by defaults to session_user without an actor.
SELECT results_eq(
    $$SELECT status::text, error ->> 'cancelled_by', error ->> 'previous_status', lease_expires_at
        FROM stacker.cancel_command('x-exec', 'stop it')$$,
    $$VALUES ('cancelled', session_user::text COLLATE "default", 'executing', NULL::timestamptz)$$,
    'an executing command is cancelled; cancelled_by defaults to session_user');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id = 'x-exec'$$, 'its queue row is gone');

-- Cancelling again returns the command unchanged.
SELECT results_eq($$SELECT * FROM stacker.cancel_command('x-queued', 'again', 'someone-else')$$,
                  $$SELECT * FROM stacker.commands WHERE command_id = 'x-queued'$$,
                  'cancelling a cancelled command returns it');
SELECT is((SELECT error ->> 'cancelled_by' FROM stacker.commands WHERE command_id = 'x-queued'), 'ops:bob',
          '... unchanged (the first cancellation''s details stay)');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' = 'x-queued' AND action = 'command.cancelled'), 1,
          '... with no second audit row');

-- Finished commands cannot be cancelled.
SELECT throws_ok($$SELECT stacker.cancel_command('x-done')$$,
                 '55000', 'command ''x-done'' is already completed and cannot be cancelled',
                 'cancelling a completed command: 55000');
SELECT throws_ok($$SELECT stacker.cancel_command('x-failed', 'too late')$$,
                 '55000', 'command ''x-failed'' is already failed and cannot be cancelled',
                 'cancelling a failed command: 55000');
SELECT results_eq($$SELECT command_id::text, status::text, error FROM stacker.commands
                    WHERE command_id IN ('x-done', 'x-failed') ORDER BY command_id$$,
                  $$VALUES ('x-done', 'completed', NULL::jsonb), ('x-failed', 'failed', NULL::jsonb)$$,
                  'they keep their outcome');

-- Invalid input, unknown command.
SELECT throws_ok($$SELECT stacker.cancel_command('x-nope')$$,
                 'P0002', 'command ''x-nope'' does not exist', 'cancelling an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.cancel_command('')$$,
                 '22023', 'invalid command_id '''': must be 1 to 64 characters', 'an empty command_id: 22023');
SELECT throws_ok($$SELECT stacker.cancel_command(NULL)$$,
                 '22023', 'invalid command_id NULL: must be 1 to 64 characters', 'a NULL command_id: 22023');
SELECT throws_ok(format($$SELECT stacker.cancel_command(%L)$$, repeat('i', 65)),
                 '22023', NULL, 'an over-long command_id: 22023');
SELECT throws_ok($$SELECT stacker.cancel_command('x-done', '')$$,
                 '22023', 'invalid reason '''': must be NULL or 1 to 1000 characters', 'an empty reason: 22023');
SELECT throws_ok(format($$SELECT stacker.cancel_command('x-done', %L)$$, repeat('r', 1001)),
                 '22023', NULL, 'a reason over 1000 characters: 22023');
SELECT throws_ok(format($$SELECT stacker.cancel_command('x-done', NULL, %L)$$, repeat('c', 256)),
                 '22023', NULL, 'a cancelled_by over 255 characters: 22023');
SELECT throws_ok($$SELECT stacker.cancel_command('x-done', NULL, '')$$,
                 '22023', 'invalid cancelled_by '''': must be NULL or 1 to 255 characters', 'an empty cancelled_by: 22023');

-- Out of the agent's reach --------------------------------------------------------------------------
SELECT is_empty($$SELECT * FROM stacker.claim_commands('dep-x', '00000000-0000-4000-8000-0000000000e1', 10)$$,
                'cancelled commands are never claimed');
SELECT throws_ok($$SELECT stacker.start_command('x-sent', '00000000-0000-4000-8000-0000000000e1')$$,
                 '55000', 'command ''x-sent'' is cancelled; only a sent command can start',
                 'the agent cannot start a cancelled command: 55000');
SELECT throws_ok($$SELECT stacker.extend_lease('x-exec', '00000000-0000-4000-8000-0000000000e1')$$,
                 '55000', 'command ''x-exec'' is cancelled; only a sent or executing command has a lease',
                 'the agent cannot extend a cancelled command: 55000');
SELECT throws_ok($$SELECT stacker.report_result('x-exec', '00000000-0000-4000-8000-0000000000e1', 'completed')$$,
                 '55000', 'command ''x-exec'' was cancelled; its result is not recorded',
                 'the agent cannot report a cancelled command: 55000');
SELECT is(stacker.requeue_expired(), 0, 'requeue_expired has nothing to move');
SELECT results_eq(
    $$SELECT queued, in_flight FROM stacker.queue_stats WHERE deployment_hash = 'dep-x'$$,
    $$VALUES (0::bigint, 0::bigint)$$, 'queue_stats shows nothing pending for dep-x');

SELECT * FROM finish();
ROLLBACK;
