-- report_results: report_result's checks and outcome for each element of a batch,
-- in one statement (all or none), the offending element named by its index; one
-- queue-row removal, audit row and terminal event per command; health results.
BEGIN;
SELECT plan(30);

SELECT lives_ok($$
    SELECT stacker.register_agent('dep-br', '00000000-0000-4000-8000-0000000002b1');
    SELECT stacker.register_agent('dep-br-other', '00000000-0000-4000-8000-0000000002b2');
    SELECT stacker.create_commands('[
        {"deployment_hash": "dep-br", "command_type": "deploy", "command_id": "br-1"},
        {"deployment_hash": "dep-br", "command_type": "deploy", "command_id": "br-2"},
        {"deployment_hash": "dep-br", "command_type": "health", "command_id": "br-h", "parameters": {"app_code": "web"}},
        {"deployment_hash": "dep-br", "command_type": "deploy", "command_id": "br-c"}
    ]');
    SELECT stacker.claim_commands('dep-br', '00000000-0000-4000-8000-0000000002b1', 4);
    SELECT stacker.create_command('dep-br', 'deploy', p_command_id => 'br-q');
    SELECT stacker.create_command('dep-br-other', 'deploy', p_command_id => 'br-o');
    SELECT stacker.claim_commands('dep-br-other', '00000000-0000-4000-8000-0000000002b2', 1);
    SELECT stacker.cancel_command('br-c', 'not needed');
$$, 'setup: br-1, br-2, br-h delivered, br-c delivered then cancelled, br-q queued, br-o of another deployment');

SELECT function_returns('stacker', 'report_results', ARRAY['uuid', 'jsonb'], 'setof stacker.commands',
                        'report_results(uuid, jsonb) returns setof commands');
SELECT is(pg_get_function_arguments('stacker.report_results(uuid,jsonb)'::regprocedure),
          'p_agent_id uuid, p_reports jsonb', 'report_results: argument names');
SELECT ok(has_function_privilege('stacker_agent', 'stacker.report_results(uuid,jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('stacker_service', 'stacker.report_results(uuid,jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('stacker_readonly', 'stacker.report_results(uuid,jsonb)', 'EXECUTE'),
          'only stacker_agent may call report_results');
SELECT is_definer('stacker', 'report_results', ARRAY['uuid', 'jsonb'], 'report_results is SECURITY DEFINER');

-- Invalid input: 22023 naming the element ----------------------------------------------------------------
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1', '{"command_id": "br-1"}')$$,
                 '22023', 'invalid reports ''{"command_id": "br-1"}'': must be a JSON array of report objects', 'not an array: 22023');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1', '[]')$$,
                 '22023', 'invalid reports: 0 elements; a batch holds 1 to 1000', 'an empty batch: 22023');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       (SELECT jsonb_agg(jsonb_build_object('command_id', 'br-1', 'status', 'completed')) FROM generate_series(1, 1001)))$$,
                 '22023', 'invalid reports: 1001 elements; a batch holds 1 to 1000', 'over 1000 elements: 22023');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed"}, {"command_id": "br-2", "status": "done"}]')$$,
                 '22023', 'invalid reports[1] ''{"status": "done", "command_id": "br-2"}'': status must be completed or failed',
                 'an unknown status names its element: 22023');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1', '[{"status": "completed"}]')$$,
                 '22023', 'invalid reports[0] ''{"status": "completed"}'': command_id must be a string of 1 to 64 characters',
                 'a missing command_id: 22023');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed", "output": 1}]')$$,
                 '22023', 'invalid reports[0] ''{"output": 1, "status": "completed", "command_id": "br-1"}'': has an unknown key; known keys are command_id, status, result and error',
                 'an unknown key: 22023');
SELECT throws_ok($$SELECT stacker.report_results(NULL, '[{"command_id": "br-1", "status": "completed"}]')$$,
                 '22023', 'invalid agent_id NULL: must be the agent id returned by register_agent', 'no agent id: 22023');

-- Unknown command, wrong agent, state conflicts: nothing is recorded ---------------------------------------
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed"}, {"command_id": "br-nope", "status": "completed"}]')$$,
                 'P0002', 'invalid reports[1]: command ''br-nope'' does not exist', 'an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed"}, {"command_id": "br-o", "status": "completed"}]')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000002b1 is not the registered agent of deployment ''dep-br-other''',
                 'a command of another deployment: 42501');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b2', '[{"command_id": "br-1", "status": "completed"}]')$$,
                 '42501', 'agent 00000000-0000-4000-8000-0000000002b2 is not the registered agent of deployment ''dep-br''',
                 'another deployment''s agent: 42501');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed"}, {"command_id": "br-q", "status": "completed"}]')$$,
                 '55000', 'invalid reports[1]: command ''br-q'' was never delivered; claim it before reporting',
                 'a command never delivered: 55000');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1', '[{"command_id": "br-c", "status": "completed"}]')$$,
                 '55000', 'invalid reports[0]: command ''br-c'' was cancelled; its result is not recorded',
                 'a cancelled command: 55000');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                       '[{"command_id": "br-1", "status": "completed"}, {"command_id": "br-1", "status": "failed"}]')$$,
                 '55000', 'invalid reports[1]: command ''br-1'' is already completed by an earlier element; a different report (failed) is refused',
                 'the same command twice with different outcomes: 55000');
SELECT results_eq($$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-br' ORDER BY command_id$$,
                  $$VALUES ('br-1', 'sent'), ('br-2', 'sent'), ('br-c', 'cancelled'), ('br-h', 'sent'), ('br-q', 'queued')$$,
                  'a rejected batch records nothing');

-- A batch: every report, in order, in one statement --------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text, result, error, completed_at IS NOT NULL, lease_expires_at
        FROM stacker.report_results('00000000-0000-4000-8000-0000000002b1', '[
          {"command_id": "br-2", "status": "failed", "error": {"reason": "disk full"}},
          {"command_id": "br-h", "status": "completed", "result": {"app_code": "web", "status": "running", "logs": ["up"]}},
          {"command_id": "br-1", "status": "completed", "result": {"ok": true}, "error": null},
          {"command_id": "br-1", "status": "completed", "result": {"ok": true}}
        ]')$$,
    $$VALUES ('br-2', 'failed', NULL::jsonb, '{"reason": "disk full"}'::jsonb, true, NULL::timestamptz),
             ('br-h', 'completed', '{"app_code": "web", "status": "running", "logs": ["up"]}', NULL, true, NULL),
             ('br-1', 'completed', '{"ok": true}', NULL, true, NULL),
             ('br-1', 'completed', '{"ok": true}', NULL, true, NULL)$$,
    'one row per element, in order; a JSON null is no value; the same report twice is one report');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id IN ('br-1', 'br-2', 'br-h')), 0,
          'their queue rows are gone');
SELECT results_eq(
    $$SELECT details ->> 'command_id', action::text FROM stacker.audit_log
       WHERE details ->> 'command_id' IN ('br-1', 'br-2', 'br-h') AND action IN ('command.completed', 'command.failed')
       ORDER BY 1$$,
    $$VALUES ('br-1', 'command.completed'), ('br-2', 'command.failed'), ('br-h', 'command.completed')$$,
    'one audit row per finished command');
SELECT results_eq($$SELECT status::text, logs, command_id::text FROM stacker.app_status WHERE deployment_hash = 'dep-br'$$,
                  $$VALUES ('running', '["up"]'::jsonb, 'br-h')$$, 'a health result updates app_status');
SELECT ok((SELECT last_heartbeat IS NOT NULL AND status = 'online' FROM stacker.agents WHERE deployment_hash = 'dep-br'),
          'the agent is marked seen');

-- After: the same report again returns the row unchanged; a different one is refused --------------------------
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.report_results('00000000-0000-4000-8000-0000000002b1',
          '[{"command_id": "br-1", "status": "completed", "result": {"ok": true}},
            {"command_id": "br-2", "status": "failed", "error": {"reason": "disk full"}}]')$$,
    $$VALUES ('br-1', 'completed'), ('br-2', 'failed')$$, 'the same reports again: the rows as they are');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' IN ('br-1', 'br-2')
                                                           AND action IN ('command.completed', 'command.failed')), 2,
          'a repeated report writes no audit row');
SELECT throws_ok($$SELECT stacker.report_results('00000000-0000-4000-8000-0000000002b1', '[{"command_id": "br-1", "status": "failed"}]')$$,
                 '55000', 'invalid reports[0]: command ''br-1'' is already completed; a different report (failed) is refused',
                 'a different outcome for a finished command: 55000');

-- Reported after the lease ran out and the command was requeued: accepted -----------------------------------
SELECT lives_ok($$
    SELECT stacker.create_command('dep-br', 'deploy', p_command_id => 'br-late');
    SELECT stacker.claim_commands('dep-br', '00000000-0000-4000-8000-0000000002b1', 2, p_lease_seconds => 1);
    UPDATE stacker.commands SET lease_expires_at = now() - interval '1 minute' WHERE command_id = 'br-late';
    SELECT stacker.requeue_expired();
$$, 'setup: br-late (and br-q) delivered, br-late''s lease ran out, requeued');
SELECT results_eq(
    $$SELECT status::text FROM stacker.report_results('00000000-0000-4000-8000-0000000002b1',
                                                       '[{"command_id": "br-late", "status": "completed"}]')$$,
    ARRAY['completed'], 'a requeued command''s late report is accepted');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE command_id = 'br-late'), 0, 'and its queue row is gone');

SELECT * FROM finish();
ROLLBACK;
