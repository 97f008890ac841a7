-- report_result: errors, the same report twice, conflicting reports (55000),
-- reports after the lease ran out or after a requeue; health results into
-- app_status, one case per mapping rule of the contract.
BEGIN;
SELECT plan(51);

SELECT lives_ok($$
    SELECT stacker.register_agent('dep-rr', '00000000-0000-4000-8000-0000000000d1');
    SELECT stacker.register_agent('dep-rr-other', '00000000-0000-4000-8000-0000000000d2');
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-1');
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-2');
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-c');
    SELECT stacker.claim_commands('dep-rr', '00000000-0000-4000-8000-0000000000d1', 3);
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-q');
$$, 'setup: rr-1, rr-2, rr-c delivered; rr-q queued');

-- Invalid input, unknown command, wrong agent ---------------------------------------------------
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'done')$$,
                 '22023', 'invalid status ''done'': must be completed or failed', 'an unknown status: 22023');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'cancelled')$$,
                 '22023', 'invalid status ''cancelled'': must be completed or failed', 'status cancelled is not a report: 22023');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', NULL)$$,
                 '22023', 'invalid status NULL: must be completed or failed', 'a NULL status: 22023');
SELECT throws_ok($$SELECT stacker.report_result('', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
                 '22023', 'invalid command_id '''': must be 1 to 64 characters', 'an empty command_id: 22023');
SELECT throws_ok(format($$SELECT stacker.report_result(%L, '00000000-0000-4000-8000-0000000000d1', 'completed')$$, repeat('i', 65)),
                 '22023', format('invalid command_id %L (65 characters): must be 1 to 64 characters', repeat('i', 48) || '...'),
                 'an over-long command_id: 22023');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', NULL, 'completed')$$,
                 '22023', 'invalid agent_id NULL: must be the agent id returned by register_agent', 'no agent id: 22023');
SELECT throws_ok($$SELECT stacker.report_result('rr-nope', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
                 'P0002', 'command ''rr-nope'' does not exist', 'an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d2', 'completed')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000000d2 is not the registered agent of deployment ''dep-rr''',
                 'a report by another deployment''s agent: 42501');
SELECT throws_ok($$SELECT stacker.report_result('rr-q', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
                 '55000', 'command ''rr-q'' was never delivered; claim it before reporting',
                 'a report for a command never delivered: 55000');
SELECT results_eq($$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-rr' ORDER BY command_id$$,
                  $$VALUES ('rr-1', 'sent'), ('rr-2', 'sent'), ('rr-c', 'sent'), ('rr-q', 'queued')$$,
                  'the refused reports changed nothing');

-- The same report twice; conflicting reports ------------------------------------------------------
SELECT results_eq(
    $$SELECT status::text, result FROM stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'completed', '{"ok": true}')$$,
    $$VALUES ('completed', '{"ok": true}'::jsonb)$$, 'rr-1 reported completed');
SELECT results_eq(
    $$SELECT * FROM stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'completed', '{"ok": true}')$$,
    $$SELECT * FROM stacker.commands WHERE command_id = 'rr-1'$$,
    'the same report again returns the row');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' = 'rr-1' AND action = 'command.completed'), 1,
          'the repeated report changed nothing (one command.completed audit row)');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'failed', NULL, '{"e": 1}')$$,
                 '55000', 'command ''rr-1'' is already completed; a different report (failed) is refused',
                 'another outcome for a completed command: 55000');
SELECT throws_ok($$SELECT stacker.report_result('rr-1', '00000000-0000-4000-8000-0000000000d1', 'completed', '{"ok": false}')$$,
                 '55000', 'command ''rr-1'' is already completed; a different report (completed) is refused',
                 'the same status with another result: 55000');
SELECT results_eq($$SELECT status::text, result FROM stacker.commands WHERE command_id = 'rr-1'$$,
                  $$VALUES ('completed', '{"ok": true}'::jsonb)$$, 'the first report stands');
SELECT lives_ok($$SELECT stacker.report_result('rr-2', '00000000-0000-4000-8000-0000000000d1', 'failed', NULL, '{"exit": 2}')$$,
                'rr-2 reported failed');
SELECT lives_ok($$SELECT stacker.report_result('rr-2', '00000000-0000-4000-8000-0000000000d1', 'failed', NULL, '{"exit": 2}')$$,
                'the same failure again is accepted');
SELECT throws_ok($$SELECT stacker.report_result('rr-2', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
                 '55000', 'command ''rr-2'' is already failed; a different report (completed) is refused',
                 'completed after failed: 55000');

-- Cancelled commands take no report.
SELECT lives_ok($$SELECT stacker.cancel_command('rr-c', 'no longer needed')$$, 'rr-c cancelled while sent');
SELECT throws_ok($$SELECT stacker.report_result('rr-c', '00000000-0000-4000-8000-0000000000d1', 'completed', '{"ok": true}')$$,
                 '55000', 'command ''rr-c'' was cancelled; its result is not recorded',
                 'a report for a cancelled command: 55000');
SELECT throws_ok($$SELECT stacker.report_result('rr-c', '00000000-0000-4000-8000-0000000000d1', 'failed')$$,
                 '55000', 'command ''rr-c'' was cancelled; its result is not recorded',
                 'a failure report for a cancelled command: 55000');
SELECT results_eq($$SELECT status::text, result FROM stacker.commands WHERE command_id = 'rr-c'$$,
                  $$VALUES ('cancelled', NULL::jsonb)$$, 'the cancelled command stays cancelled, with no result');

-- Reports after the lease ran out, after a requeue, after exhaustion ------------------------------
SELECT lives_ok($$
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-late');
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-requeued');
    SELECT stacker.create_command('dep-rr', 'deploy', p_command_id => 'rr-exhausted', p_max_attempts => 1);
    SELECT stacker.claim_commands('dep-rr', '00000000-0000-4000-8000-0000000000d1', 10);
$$, 'setup: rr-late, rr-requeued, rr-exhausted delivered');
UPDATE stacker.commands SET lease_expires_at = now() - interval '1 minute'
 WHERE command_id IN ('rr-late', 'rr-requeued', 'rr-exhausted');
SELECT results_eq(
    $$SELECT status::text, completed_at FROM stacker.report_result('rr-late', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
    $$VALUES ('completed', now())$$,
    'a report after the lease ran out is accepted (the work was done)');
SELECT is(stacker.requeue_expired(), 2, 'requeue_expired moves rr-requeued (back to queued) and rr-exhausted (failed)');
SELECT results_eq($$SELECT status::text, attempts FROM stacker.commands WHERE command_id = 'rr-requeued'$$,
                  $$VALUES ('queued', 1)$$, 'rr-requeued is queued again after one attempt');
SELECT results_eq(
    $$SELECT status::text, result FROM stacker.report_result('rr-requeued', '00000000-0000-4000-8000-0000000000d1', 'completed', '{"late": true}')$$,
    $$VALUES ('completed', '{"late": true}'::jsonb)$$,
    'a report for a requeued command is accepted');
SELECT is_empty($$SELECT * FROM stacker.command_queue WHERE command_id IN ('rr-late', 'rr-requeued')$$,
                'both left the queue');
SELECT throws_ok($$SELECT stacker.report_result('rr-exhausted', '00000000-0000-4000-8000-0000000000d1', 'completed')$$,
                 '55000', 'command ''rr-exhausted'' is already failed; a different report (completed) is refused',
                 'a command failed for lease_expired takes no other outcome: 55000');

-- Health results into app_status -------------------------------------------------------------------
SELECT lives_ok($$SELECT stacker.register_agent('dep-h', '00000000-0000-4000-8000-0000000000d3')$$, 'setup: agent of dep-h');
CREATE TEMP TABLE health_cases (app_code text PRIMARY KEY, result jsonb, expected text);
INSERT INTO health_cases VALUES
    ('w-running',          '{"status": "running"}', 'running'),
    ('w-stopped',          '{"status": "stopped"}', 'stopped'),
    ('w-error',            '{"status": "error"}', 'error'),
    ('w-unknown',          '{"status": "unknown"}', 'unknown'),
    ('w-word-wins',        '{"status": "running", "container_state": "exited"}', 'running'),
    ('cs-running',         '{"status": "ok", "container_state": "running"}', 'running'),
    ('cs-exited',          '{"status": "ok", "container_state": "exited"}', 'stopped'),
    ('cs-failed',          '{"status": "ok", "container_state": "failed"}', 'error'),
    ('cs-before-status',   '{"status": "unhealthy", "container_state": "exited"}', 'stopped'),
    ('cs-other-unhealthy', '{"status": "unhealthy", "container_state": "starting"}', 'error'),
    ('unhealthy',          '{"status": "unhealthy"}', 'error'),
    ('ok-only',            '{"status": "ok"}', 'unknown'),
    ('cs-other-ok',        '{"status": "ok", "container_state": "starting"}', 'unknown'),
    ('cs-unknown',         '{"container_state": "unknown"}', 'unknown'),
    ('empty-result',       '{}', 'unknown'),
    ('stacker-shape',      '{"type": "health", "deployment_hash": "dep-h", "status": "ok", "container_state": "running", "errors": [], "metrics": {"cpu": 0.5}}', 'running');
SELECT lives_ok($$SELECT stacker.create_command('dep-h', 'health', jsonb_build_object('app_code', app_code),
                                                p_command_id => 'h-' || app_code)
                    FROM health_cases ORDER BY app_code$$,
                'setup: one health command per case, app_code in its parameters');
SELECT is((SELECT count(*)::int FROM stacker.claim_commands('dep-h', '00000000-0000-4000-8000-0000000000d3', 100)), 16,
          'all 16 delivered');
SELECT lives_ok($$SELECT stacker.report_result('h-' || app_code, '00000000-0000-4000-8000-0000000000d3', 'completed', result)
                    FROM health_cases$$,
                'each reported with its result');
SELECT results_eq(
    $$SELECT s.app_code::text, s.status::text FROM stacker.app_status s WHERE s.deployment_hash = 'dep-h' ORDER BY 1$$,
    $$SELECT app_code, expected FROM health_cases ORDER BY 1$$,
    'status from result.status words, else container_state, else unhealthy -> error, else unknown');
SELECT results_eq(
    $$SELECT count(*)::int, bool_and(s.command_id = 'h-' || s.app_code), bool_and(s.logs = '[]'),
             bool_and(s.checked_at = now()), bool_and(s.updated_at BETWEEN now() AND clock_timestamp())
        FROM stacker.app_status s WHERE s.deployment_hash = 'dep-h'$$,
    $$VALUES (16, true, true, true, true)$$,
    'each row names its command; logs default to []; checked_at defaults to now');

-- app_code, logs and timestamp.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "param-app"}', p_command_id => 'h-result-wins');
    SELECT stacker.create_command('dep-h', 'health', '{}', p_command_id => 'h-result-only');
    SELECT stacker.create_command('dep-h', 'health', '{"target": "all"}', p_command_id => 'h-no-app');
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "logs-app"}', p_command_id => 'h-logs');
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "ts-app"}', p_command_id => 'h-ts');
    SELECT stacker.create_command('dep-h', 'logs', '{"app_code": "not-health"}', p_command_id => 'h-not-health');
    SELECT stacker.claim_commands('dep-h', '00000000-0000-4000-8000-0000000000d3', 100);
$$, 'setup: six more commands delivered');
SELECT lives_ok($$
    SELECT stacker.report_result('h-result-wins', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"app_code": "result-app", "status": "running"}');
    SELECT stacker.report_result('h-result-only', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"app_code": "only-in-result", "status": "stopped"}');
    SELECT stacker.report_result('h-no-app', '00000000-0000-4000-8000-0000000000d3', 'completed', '{"status": "running"}');
    SELECT stacker.report_result('h-logs', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"status": "error", "logs": ["line 1", "line 2"]}');
    SELECT stacker.report_result('h-ts', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 jsonb_build_object('status', 'running', 'timestamp', now() - interval '2 minutes'));
    SELECT stacker.report_result('h-not-health', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"app_code": "not-health", "status": "running"}');
$$, 'the six reported');
SELECT results_eq(
    $$SELECT status::text, command_id::text FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'result-app'$$,
    $$VALUES ('running', 'h-result-wins')$$,
    'app_code from the result wins over the parameters''');
SELECT is_empty($$SELECT * FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'param-app'$$,
                '... and nothing is written for the parameters'' app_code');
SELECT results_eq(
    $$SELECT status::text FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'only-in-result'$$,
    ARRAY['stopped'], 'app_code taken from the result when the parameters have none');
SELECT is((SELECT count(*)::int FROM stacker.app_status WHERE deployment_hash = 'dep-h'), 16 + 4,
          'a health result without any app_code, and a non-health command, write no app_status');
SELECT is((SELECT status::text FROM stacker.commands WHERE command_id = 'h-no-app'), 'completed',
          'the result without app_code is still recorded on its command');
SELECT results_eq(
    $$SELECT status::text, logs FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'logs-app'$$,
    $$VALUES ('error', '["line 1", "line 2"]'::jsonb)$$, 'logs from result.logs');
SELECT results_eq(
    $$SELECT status::text, checked_at FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'ts-app'$$,
    $$VALUES ('running', now() - interval '2 minutes')$$, 'checked_at from result.timestamp');

-- A timestamp that cannot be read, or lies in the future, stands for now; logs become strings.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "ts-bad"}', p_command_id => 'h-ts-bad');
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "ts-future"}', p_command_id => 'h-ts-future');
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "logs-mixed"}', p_command_id => 'h-logs-mixed');
    SELECT stacker.claim_commands('dep-h', '00000000-0000-4000-8000-0000000000d3', 100);
    SELECT stacker.report_result('h-ts-bad', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"status": "running", "timestamp": "not a time"}');
    SELECT stacker.report_result('h-ts-future', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 jsonb_build_object('status', 'running', 'timestamp', now() + interval '1 day'));
    SELECT stacker.report_result('h-logs-mixed', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 '{"status": "running", "logs": ["a", 2, true]}');
$$, 'health results with an unreadable timestamp, a future one, and logs that are not all strings');
SELECT results_eq(
    $$SELECT app_code::text, checked_at, logs FROM stacker.app_status
       WHERE deployment_hash = 'dep-h' AND app_code IN ('ts-bad', 'ts-future', 'logs-mixed') ORDER BY 1$$,
    $$VALUES ('logs-mixed', now(), '["a", "2", "true"]'::jsonb),
             ('ts-bad', now(), '[]'::jsonb),
             ('ts-future', now(), '[]'::jsonb)$$,
    'checked_at falls back to now; the logs are kept as an array of strings');

-- A health report older than the stored status leaves the row.
SELECT lives_ok($$
    SELECT stacker.create_command('dep-h', 'health', '{"app_code": "ts-app"}', p_command_id => 'h-ts-old');
    SELECT stacker.claim_commands('dep-h', '00000000-0000-4000-8000-0000000000d3', 100);
    SELECT stacker.report_result('h-ts-old', '00000000-0000-4000-8000-0000000000d3', 'completed',
                                 jsonb_build_object('status', 'stopped', 'timestamp', now() - interval '10 minutes'));
$$, 'an older health result for ts-app reported');
SELECT results_eq(
    $$SELECT status::text, checked_at, command_id::text FROM stacker.app_status WHERE deployment_hash = 'dep-h' AND app_code = 'ts-app'$$,
    $$VALUES ('running', now() - interval '2 minutes', 'h-ts')$$,
    'the older health result did not overwrite the newer status');
SELECT is((SELECT status::text FROM stacker.commands WHERE command_id = 'h-ts-old'), 'completed',
          'the older result is still recorded on its command');

SELECT * FROM finish();
ROLLBACK;
