-- update_app_status (upsert, older reports ignored, invalid input) and
-- get_app_status (awaiting_agent / awaiting_execution / stale / reported,
-- pending_command_id, agent_last_seen).
BEGIN;
SELECT plan(50);

-- update_app_status -------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT deployment_hash::text, app_code::text, status::text, logs, checked_at, command_id::text,
             updated_at BETWEEN now() AND clock_timestamp()
        FROM stacker.update_app_status('dep-u', 'web', 'running', '["started"]', now() - interval '1 minute')$$,
    $$VALUES ('dep-u', 'web', 'running', '["started"]'::jsonb, now() - interval '1 minute', NULL::text, true)$$,
    'update_app_status inserts the app''s row and returns it');
SELECT results_eq(
    $$SELECT status::text, logs, checked_at FROM stacker.update_app_status('dep-u', 'web', 'error', '["crashed", "exit 1"]')$$,
    $$VALUES ('error', '["crashed", "exit 1"]'::jsonb, now())$$,
    'a newer report replaces it (checked_at defaults to now)');
SELECT results_eq(
    $$SELECT status::text, logs, checked_at FROM stacker.update_app_status('dep-u', 'web', 'stopped', '[]', now() - interval '10 minutes')$$,
    $$VALUES ('error', '["crashed", "exit 1"]'::jsonb, now())$$,
    'an older report returns the stored row ...');
SELECT results_eq(
    $$SELECT status::text, logs, checked_at FROM stacker.app_status WHERE deployment_hash = 'dep-u' AND app_code = 'web'$$,
    $$VALUES ('error', '["crashed", "exit 1"]'::jsonb, now())$$,
    '... and leaves it as it is');
SELECT results_eq(
    $$SELECT status::text, logs FROM stacker.update_app_status('dep-u', 'db', 'stopped')$$,
    $$VALUES ('stopped', '[]'::jsonb)$$, 'logs default to []');
SELECT lives_ok($$SELECT stacker.create_command('dep-u', 'health', '{"app_code": "api"}', p_command_id => 'u-health')$$,
                'setup: a health command');
SELECT is((stacker.update_app_status('dep-u', 'api', 'running', '[]', now(), 'u-health')).command_id::text, 'u-health',
          'command_id is stored');
SELECT is((SELECT count(*)::int FROM stacker.app_status WHERE deployment_hash = 'dep-u'), 3,
          'one row per (deployment, app)');

SELECT throws_ok($$SELECT stacker.update_app_status('', 'web', 'running')$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters', 'empty deployment_hash: 22023');
SELECT throws_ok(format($$SELECT stacker.update_app_status(%L, 'web', 'running')$$, repeat('h', 129)),
                 '22023', NULL, 'over-long deployment_hash: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', '', 'running')$$,
                 '22023', 'invalid app_code '''': must be 1 to 255 characters', 'empty app_code: 22023');
SELECT throws_ok(format($$SELECT stacker.update_app_status('dep-u', %L, 'running')$$, repeat('a', 256)),
                 '22023', NULL, 'app_code over 255 characters: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'ok')$$,
                 '22023', 'invalid status ''ok'': must be running, stopped, error or unknown', 'status ok: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', NULL)$$,
                 '22023', 'invalid status NULL: must be running, stopped, error or unknown', 'NULL status: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '{"line": "x"}')$$,
                 '22023', 'invalid logs ''{"line": "x"}'': must be a JSON array of strings', 'logs that are an object: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '["ok", 42]')$$,
                 '22023', 'invalid logs ''["ok", 42]'': must be a JSON array of strings', 'logs with a number: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '["ok", null]')$$,
                 '22023', 'invalid logs ''["ok", null]'': must be a JSON array of strings', 'logs with a null: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', NULL)$$,
                 '22023', 'invalid logs NULL: must be a JSON array of strings', 'NULL logs: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', now() + interval '1 hour')$$,
                 '22023', NULL, 'checked_at an hour in the future: 22023');
SELECT throws_like($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', now() + interval '1 hour')$$,
                   'invalid checked_at ''%'': must be a finite time no later than 5 minutes from now',
                   '... naming the value');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', 'infinity')$$,
                 '22023', 'invalid checked_at ''infinity'': must be a finite time no later than 5 minutes from now',
                 'checked_at infinity: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', NULL)$$,
                 '22023', 'invalid checked_at NULL: must be a finite time no later than 5 minutes from now',
                 'NULL checked_at: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', now(), '')$$,
                 '22023', 'invalid command_id '''': must be NULL or 1 to 64 characters', 'empty command_id: 22023');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-u', 'web', 'running', '[]', now(), 'cmd-nope')$$,
                 'P0002', 'command ''cmd-nope'' does not exist', 'unknown command_id: P0002');
SELECT results_eq($$SELECT status::text, logs FROM stacker.app_status WHERE deployment_hash = 'dep-u' AND app_code = 'web'$$,
                  $$VALUES ('error', '["crashed", "exit 1"]'::jsonb)$$, 'the refused updates changed nothing');

-- get_app_status ------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM stacker.get_app_status('')$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters', 'get_app_status with an empty hash: 22023');
SELECT throws_ok(format($$SELECT * FROM stacker.get_app_status(%L)$$, repeat('h', 129)),
                 '22023', NULL, 'get_app_status with an over-long hash: 22023');
SELECT throws_ok($$SELECT * FROM stacker.get_app_status(NULL)$$,
                 '22023', 'invalid deployment_hash NULL: must be 1 to 128 characters', 'get_app_status(NULL): 22023');
SELECT is_empty($$SELECT * FROM stacker.get_app_status('dep-unknown')$$, 'an unknown deployment has no apps');

-- A pending health command, no agent registered: awaiting_agent.
SELECT lives_ok($$SELECT stacker.create_command('dep-g', 'health', '{"app_code": "web"}', p_command_id => 'g-web-1')$$,
                'setup: health command for web');
SELECT results_eq(
    $$SELECT * FROM stacker.get_app_status('dep-g')$$,
    $$VALUES ('web', 'unknown', '[]'::jsonb, NULL::timestamptz, 'awaiting_agent', 'g-web-1', NULL::timestamptz)$$,
    'an app known only from a pending health command, no agent: awaiting_agent');

-- The agent registers (seen now): awaiting_execution.
SELECT lives_ok($$SELECT stacker.register_agent('dep-g', '00000000-0000-4000-8000-0000000000f1')$$, 'setup: agent registered');
SELECT results_eq(
    $$SELECT app_code, state, pending_command_id, agent_last_seen FROM stacker.get_app_status('dep-g')$$,
    $$VALUES ('web', 'awaiting_execution', 'g-web-1', now())$$,
    'with an agent seen now: awaiting_execution');
UPDATE stacker.agents SET last_heartbeat = now() - interval '299 seconds' WHERE deployment_hash = 'dep-g';
SELECT is((SELECT state FROM stacker.get_app_status('dep-g')), 'awaiting_execution',
          'an agent seen 299 s ago is still live: awaiting_execution');
UPDATE stacker.agents SET last_heartbeat = now() - interval '301 seconds' WHERE deployment_hash = 'dep-g';
SELECT results_eq(
    $$SELECT state, agent_last_seen FROM stacker.get_app_status('dep-g')$$,
    $$VALUES ('awaiting_agent', now() - interval '301 seconds')$$,
    'an agent not seen for over 300 s: awaiting_agent');

-- The agent claims it: still pending, still awaited.
SELECT lives_ok($$SELECT stacker.claim_commands('dep-g', '00000000-0000-4000-8000-0000000000f1')$$, 'the agent claims g-web-1');
SELECT results_eq(
    $$SELECT state, pending_command_id FROM stacker.get_app_status('dep-g')$$,
    $$VALUES ('awaiting_execution', 'g-web-1')$$,
    'a sent health command is still pending: awaiting_execution');

-- Several pending commands: the newest is the one awaited.
SELECT lives_ok($$SELECT stacker.create_command('dep-g', 'health', '{"app_code": "web"}', p_command_id => 'g-web-2')$$,
                'setup: a second health command for web');
SELECT is((SELECT pending_command_id FROM stacker.get_app_status('dep-g')), 'g-web-2',
          'pending_command_id is the newest pending health command');

-- Reported apps: stale and reported by checked_at.
SELECT lives_ok($$
    SELECT stacker.update_app_status('dep-g', 'db', 'running', '["ok"]', now() - interval '10 minutes');
    SELECT stacker.update_app_status('dep-g', 'api', 'error', '["boom"]', now());
    SELECT stacker.update_app_status('dep-g', 'cache', 'stopped', '[]', now() - interval '299 seconds');
    SELECT stacker.update_app_status('dep-g', 'queue', 'running', '[]', now() - interval '301 seconds');
    SELECT stacker.update_app_status('dep-other', 'web', 'running');
$$, 'setup: four reported apps in dep-g, one in dep-other');
SELECT results_eq(
    $$SELECT app_code, status, logs, checked_at, state, pending_command_id FROM stacker.get_app_status('dep-g')$$,
    $$VALUES ('api', 'error', '["boom"]'::jsonb, now(), 'reported', NULL::text),
             ('cache', 'stopped', '[]'::jsonb, now() - interval '299 seconds', 'reported', NULL::text),
             ('db', 'running', '["ok"]'::jsonb, now() - interval '10 minutes', 'stale', NULL::text),
             ('queue', 'running', '[]'::jsonb, now() - interval '301 seconds', 'stale', NULL::text),
             ('web', 'unknown', '[]'::jsonb, NULL::timestamptz, 'awaiting_execution', 'g-web-2')$$,
    'one row per app, by app_code: reported within 5 minutes, stale beyond, awaiting while a health command is pending');
SELECT is((SELECT count(DISTINCT agent_last_seen)::int FROM stacker.get_app_status('dep-g') WHERE agent_last_seen = now()), 1,
          'agent_last_seen is on every row');

-- A report for the awaited app after the command was created ends the wait.
SELECT lives_ok($$SELECT stacker.update_app_status('dep-g', 'web', 'running', '[]', now() - interval '1 minute')$$,
                'web reports (in the same transaction as the command''s creation)');
SELECT is((SELECT state FROM stacker.get_app_status('dep-g') WHERE app_code = 'web'), 'reported',
          'a report written after the command was created ends the wait, even within the same transaction');
UPDATE stacker.commands SET created_at = now() - interval '3 minutes' WHERE command_id = 'g-web-1';
UPDATE stacker.commands SET created_at = now() - interval '2 minutes' WHERE command_id = 'g-web-2';
SELECT results_eq(
    $$SELECT status, checked_at, state, pending_command_id FROM stacker.get_app_status('dep-g') WHERE app_code = 'web'$$,
    $$VALUES ('running', now() - interval '1 minute', 'reported', 'g-web-2')$$,
    'a report written after the command was created: reported (pending_command_id still shows the command)');
UPDATE stacker.app_status SET checked_at = now() - interval '20 minutes' WHERE deployment_hash = 'dep-g' AND app_code = 'web';
SELECT is((SELECT state FROM stacker.get_app_status('dep-g') WHERE app_code = 'web'), 'stale',
          '... or stale when that report''s check is older than 5 minutes');

-- Once the health commands are finished nothing is pending.
SELECT lives_ok($$
    SELECT stacker.claim_commands('dep-g', '00000000-0000-4000-8000-0000000000f1', 10);
    SELECT stacker.report_result('g-web-1', '00000000-0000-4000-8000-0000000000f1', 'completed',
                                 '{"status": "running", "logs": ["healthy"]}');
    SELECT stacker.cancel_command('g-web-2');
$$, 'g-web-1 reported, g-web-2 cancelled');
SELECT results_eq(
    $$SELECT status, logs, checked_at, state, pending_command_id FROM stacker.get_app_status('dep-g') WHERE app_code = 'web'$$,
    $$VALUES ('running', '["healthy"]'::jsonb, now(), 'reported', NULL::text)$$,
    'the health result is shown as reported, nothing pending');

-- Only health commands with an app_code count as pending.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-g', 'logs', '{"app_code": "logs-only"}');
    SELECT stacker.create_command('dep-g', 'health', '{}');
    SELECT stacker.create_command('dep-g', 'health', '{"app_code": ""}');
$$, 'setup: a logs command with an app_code and two health commands without one');
SELECT results_eq(
    $$SELECT app_code FROM stacker.get_app_status('dep-g')$$,
    ARRAY['api', 'cache', 'db', 'queue', 'web'],
    'they add no app');

SELECT * FROM finish();
ROLLBACK;
