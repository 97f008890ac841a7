-- What keeps Stacker's old binary working on an adopted database
-- (docs/adopting-stacker.md): the stacker_legacy role and the command_queue
-- policies of migration 0003 (inert until adopt enables row-level security),
-- an UPDATE setting status = 'sent' on a sent command counted as a redelivery
-- (trigger _100_lifecycle_resend), and stacker_command_queue_cleanup(interval),
-- Stacker's pg_cron job under its own name.
BEGIN;
SELECT plan(22);

-- The guard's objects --------------------------------------------------------------------
SELECT has_role('stacker_legacy', 'role stacker_legacy exists');
SELECT is((SELECT rolcanlogin OR rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = 'stacker_legacy'),
          false, 'stacker_legacy is NOLOGIN without special attributes');
SELECT policies_are('stacker', 'command_queue', ARRAY['command_queue_all', 'command_queue_legacy_claimable'],
                    'command_queue has the old binary''s two policies');
SELECT policy_roles_are('stacker', 'command_queue', 'command_queue_legacy_claimable', ARRAY['stacker_legacy'],
                        'the restrictive policy applies to stacker_legacy alone');
SELECT results_eq(
    $$SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'stacker.command_queue'::regclass$$,
    $$VALUES (false, false)$$,
    'row-level security is off on a fresh install (adopt turns it on)');
SELECT has_function('stacker', 'stacker_command_queue_cleanup', ARRAY['interval'],
                    'stacker_command_queue_cleanup(interval) exists');
SELECT is(pg_get_function_arguments('stacker.stacker_command_queue_cleanup(interval)'::regprocedure),
          'queue_ttl interval DEFAULT ''48:00:00''::interval',
          'Stacker''s argument name and default');
SELECT function_returns('stacker', 'stacker_command_queue_cleanup', ARRAY['interval'], 'jsonb',
                        'stacker_command_queue_cleanup returns jsonb');
SELECT trigger_is('stacker', 'commands', '_100_lifecycle_resend', 'stacker', '_commands_lifecycle',
                  'trigger _100_lifecycle_resend calls _commands_lifecycle()');

-- Redelivery by Stacker's UPDATE commands SET status = 'sent' -----------------------------------
SELECT lives_ok($$
    SELECT stacker.register_agent('dep-lg', '00000000-0000-4000-8000-000000000220');
    SELECT stacker.create_command('dep-lg', 'health', p_command_id => 'lg-1', p_timeout_seconds => 60);
$$, 'setup: lg-1 queued');
UPDATE stacker.commands SET status = 'sent', updated_at = now() WHERE command_id = 'lg-1';
SELECT results_eq(
    $$SELECT attempts, lease_expires_at, sent_at FROM stacker.commands WHERE command_id = 'lg-1'$$,
    $$VALUES (1, now() + interval '60 seconds', now())$$,
    'Stacker''s plain UPDATE to sent is a delivery: attempts 1, a lease of timeout_seconds');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second', sent_at = now() - interval '1 minute'
 WHERE command_id = 'lg-1';
UPDATE stacker.commands SET status = 'sent', updated_at = now() WHERE command_id = 'lg-1';
SELECT results_eq(
    $$SELECT status::text, attempts, lease_expires_at, sent_at FROM stacker.commands WHERE command_id = 'lg-1'$$,
    $$VALUES ('sent', 2, now() + interval '60 seconds', now())$$,
    'setting sent again after the lease ran out is a new delivery: attempts 2, a new lease');
SELECT results_eq(
    $$SELECT lease_expires_at, visible_at FROM stacker.command_queue WHERE command_id = 'lg-1'$$,
    $$VALUES (now() + interval '60 seconds', now() + interval '60 seconds')$$,
    'the queue row follows the new lease');
SELECT is((SELECT count(*)::int FROM stacker.audit_log
            WHERE action = 'command.sent' AND details ->> 'command_id' = 'lg-1'), 2,
          'both deliveries are audited');
UPDATE stacker.commands SET metadata = '{"note": 1}' WHERE command_id = 'lg-1';
SELECT is((SELECT attempts FROM stacker.commands WHERE command_id = 'lg-1'), 2,
          'an UPDATE that does not set status is not a delivery');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second' WHERE command_id = 'lg-1';
SELECT results_eq(
    $$SELECT command_id::text, attempts FROM stacker.claim_commands('dep-lg', '00000000-0000-4000-8000-000000000220')$$,
    $$VALUES ('lg-1', 3)$$,
    'a claim''s own redelivery still counts once (attempts 3)');

-- The restrictive policy, with row-level security on as adopt sets it ----------------------------
SELECT lives_ok($$
    CREATE ROLE sq_pgtap_old_binary NOLOGIN IN ROLE stacker_legacy;
    GRANT USAGE ON SCHEMA stacker TO sq_pgtap_old_binary;
    GRANT SELECT ON stacker.command_queue, stacker.commands TO sq_pgtap_old_binary;
    ALTER TABLE stacker.command_queue ENABLE ROW LEVEL SECURITY;
    ALTER TABLE stacker.command_queue FORCE ROW LEVEL SECURITY;
    SELECT stacker.create_command('dep-lg', 'health', p_command_id => 'lg-expired', p_max_attempts => 2);
    SELECT stacker.create_command('dep-lg', 'health', p_command_id => 'lg-exhausted', p_max_attempts => 1);
    SELECT stacker.claim_commands('dep-lg', '00000000-0000-4000-8000-000000000220', 2);
    SELECT stacker.create_command('dep-lg', 'health', p_command_id => 'lg-queued');
    SELECT stacker.create_command('dep-lg', 'health', p_command_id => 'lg-later',
                                  p_scheduled_for => now() + interval '1 hour');
$$, 'setup: an old binary''s role, row-level security on, commands in each case');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 second'
 WHERE command_id IN ('lg-expired', 'lg-exhausted');
SET LOCAL ROLE sq_pgtap_old_binary;
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.command_queue WHERE deployment_hash = 'dep-lg' ORDER BY command_id$$,
    $$VALUES ('lg-expired'), ('lg-queued')$$,
    'the old binary sees only claimable rows: queued and due, or expired with attempts left');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE deployment_hash = 'dep-lg'), 5,
          'the owner (and the stored functions) still see every row');

-- stacker_command_queue_cleanup -----------------------------------------------------------------
UPDATE stacker.commands SET created_at = now() - interval '3 days' WHERE command_id = 'lg-queued';
SELECT is(stacker.stacker_command_queue_cleanup(),
          '{"expired": 1, "queue_rows_removed": 0, "deleted": 0, "leases_swept": 2}'::jsonb,
          'cleanup''s counts, plus the lease sweep');
SELECT results_eq(
    $$SELECT command_id::text, status::text, error ->> 'reason' FROM stacker.commands
       WHERE command_id IN ('lg-queued', 'lg-expired', 'lg-exhausted') ORDER BY command_id$$,
    $$VALUES ('lg-exhausted', 'failed', 'lease_expired'), ('lg-expired', 'queued', NULL),
             ('lg-queued', 'cancelled', 'expired')$$,
    'a stale queued command expires; expired leases go back to queued, or fail on their last attempt');
SELECT throws_ok($$SELECT stacker.stacker_command_queue_cleanup('0')$$, '22023', NULL,
                 'a non-positive TTL is refused like cleanup''s');

SELECT * FROM finish();
ROLLBACK;
