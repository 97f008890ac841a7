-- Roles: stacker_service, stacker_agent and stacker_readonly have exactly the rights
-- of sql/800_grants.sql (the contract's Roles section); nobody writes the tables
-- directly; PUBLIC executes nothing. Then the same rules, exercised with SET LOCAL ROLE.
BEGIN;
SELECT plan(133);

-- The roles ---------------------------------------------------------------------------
SELECT has_role(r, format('role %s exists', r))
  FROM unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r;
SELECT is_empty(
    $$SELECT rolname FROM pg_roles
       WHERE rolname IN ('stacker_service', 'stacker_agent', 'stacker_readonly')
         AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)$$,
    'the three roles are NOLOGIN and hold no special attributes');
SELECT schema_privs_are('stacker', r, ARRAY['USAGE'], format('%s has USAGE on schema stacker, nothing more', r))
  FROM unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r;

-- Function privileges, per role ----------------------------------------------------------
SELECT function_privs_are('stacker', f, args, r,
           CASE WHEN r = ANY (granted) THEN ARRAY['EXECUTE'] ELSE ARRAY[]::text[] END,
           format('%s %s EXECUTE on %s', r, CASE WHEN r = ANY (granted) THEN 'has' ELSE 'has no' END, f))
  FROM (VALUES
    ('create_command', ARRAY['text', 'text', 'jsonb', 'text', 'text', 'text', 'integer',
                             'timestamp with time zone', 'integer', 'text', 'jsonb'],
     ARRAY['stacker_service']),
    ('create_commands', ARRAY['jsonb'], ARRAY['stacker_service']),
    ('cancel_command', ARRAY['text', 'text', 'text'], ARRAY['stacker_service']),
    ('get_command', ARRAY['text'], ARRAY['stacker_service']),
    ('list_commands', ARRAY['text', 'text', 'integer'], ARRAY['stacker_service']),
    ('get_app_status', ARRAY['text'], ARRAY['stacker_service']),
    ('update_app_status', ARRAY['text', 'text', 'text', 'jsonb', 'timestamp with time zone', 'text'],
     ARRAY['stacker_service', 'stacker_agent']),
    ('register_agent', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb'], ARRAY['stacker_agent']),
    ('claim_commands', ARRAY['text', 'uuid', 'integer', 'integer'], ARRAY['stacker_agent']),
    ('start_command', ARRAY['text', 'uuid'], ARRAY['stacker_agent']),
    ('extend_lease', ARRAY['text', 'uuid', 'integer'], ARRAY['stacker_agent']),
    ('report_result', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb'], ARRAY['stacker_agent']),
    ('requeue_expired', ARRAY[]::text[], ARRAY[]::text[]),
    ('cleanup', ARRAY['interval', 'interval'], ARRAY[]::text[]),
    ('purge_audit_log', ARRAY['interval'], ARRAY[]::text[])
  ) AS v(f, args, granted)
  CROSS JOIN unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r;

-- Private helpers and trigger functions: no role may call them.
SELECT is_empty(
    $$SELECT p.oid::regprocedure, r
        FROM pg_proc p
       CROSS JOIN unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r
       WHERE p.pronamespace = 'stacker'::regnamespace AND p.proname LIKE '\_%'
         AND has_function_privilege(r, p.oid, 'EXECUTE')$$,
    'no role may execute a private function (names starting with _)');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'stacker'::regnamespace
         AND has_function_privilege('public', p.oid, 'EXECUTE')$$,
    'PUBLIC has EXECUTE on no function of the schema');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'stacker'::regnamespace AND p.proacl IS NULL$$,
    'no function keeps the default ACL (which would grant EXECUTE to PUBLIC)');

-- Table and view privileges, per role -------------------------------------------------------
SELECT table_privs_are('stacker', t, r,
           CASE WHEN t <> 'schema_repeatables' AND r <> 'stacker_agent' THEN ARRAY['SELECT'] ELSE ARRAY[]::text[] END,
           format('%s: %s on stacker.%s', r,
                  CASE WHEN t <> 'schema_repeatables' AND r <> 'stacker_agent' THEN 'SELECT only' ELSE 'no privilege' END, t))
  FROM unnest(ARRAY['commands', 'command_queue', 'agents', 'app_status', 'audit_log', 'queue_stats',
                    'schema_repeatables']) AS t
  CROSS JOIN unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r;
SELECT is_empty(
    $$SELECT c.relname, r FROM pg_class c
       CROSS JOIN unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly', 'public']) AS r
       WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
         AND has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
    'none of the roles (nor PUBLIC) may INSERT, UPDATE, DELETE or TRUNCATE any table of the schema');
SELECT is_empty(
    $$SELECT c.relname FROM pg_class c
       WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
         AND has_table_privilege('public', c.oid, 'SELECT')$$,
    'PUBLIC may read no table of the schema');
SELECT is_empty(
    $$SELECT c.relname, a.attname, r FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       CROSS JOIN unnest(ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly']) AS r
       WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'v')
         AND has_column_privilege(r, c.oid, a.attnum, 'INSERT, UPDATE')$$,
    'no column-level INSERT or UPDATE either');

-- The same rules in action -------------------------------------------------------------------
-- Data made as the owner.
SELECT lives_ok($$SELECT stacker.register_agent('dep-roles', '00000000-0000-4000-8000-0000000000a1')$$,
                'setup: agent of dep-roles registered');
SELECT lives_ok($$SELECT stacker.create_command('dep-roles', 'health', '{"app_code": "web"}', p_command_id => 'cmd-roles-1')$$,
                'setup: cmd-roles-1 created');

-- stacker_agent: the agent calls work; service calls and direct SQL are refused.
SET LOCAL ROLE stacker_agent;
SELECT is(current_user::text, 'stacker_agent', 'now acting as stacker_agent');
SELECT lives_ok($$SELECT stacker.register_agent('dep-roles', '00000000-0000-4000-8000-0000000000a1', '1.2.3')$$,
                'stacker_agent may register_agent');
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.claim_commands('dep-roles', '00000000-0000-4000-8000-0000000000a1')$$,
    $$VALUES ('cmd-roles-1', 'sent')$$,
    'stacker_agent may claim_commands');
SELECT lives_ok($$SELECT stacker.start_command('cmd-roles-1', '00000000-0000-4000-8000-0000000000a1')$$,
                'stacker_agent may start_command');
SELECT lives_ok($$SELECT stacker.extend_lease('cmd-roles-1', '00000000-0000-4000-8000-0000000000a1', 60)$$,
                'stacker_agent may extend_lease');
SELECT lives_ok($$SELECT stacker.report_result('cmd-roles-1', '00000000-0000-4000-8000-0000000000a1', 'completed',
                                             '{"app_code": "web", "status": "running"}')$$,
                'stacker_agent may report_result');
SELECT lives_ok($$SELECT stacker.update_app_status('dep-roles', 'db', 'running')$$,
                'stacker_agent may update_app_status');
SELECT throws_ok($$SELECT stacker.create_command('dep-roles', 'restart')$$,
                 '42501', 'permission denied for function create_command', 'stacker_agent may not create_command');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-roles", "command_type": "restart"}]')$$,
                 '42501', 'permission denied for function create_commands', 'stacker_agent may not create_commands');
SELECT throws_ok($$SELECT stacker.cancel_command('cmd-roles-1')$$,
                 '42501', 'permission denied for function cancel_command', 'stacker_agent may not cancel_command');
SELECT throws_ok($$SELECT stacker.get_command('cmd-roles-1')$$,
                 '42501', 'permission denied for function get_command', 'stacker_agent may not get_command');
SELECT throws_ok($$SELECT * FROM stacker.get_app_status('dep-roles')$$,
                 '42501', 'permission denied for function get_app_status', 'stacker_agent may not get_app_status');
SELECT throws_ok($$SELECT stacker.requeue_expired()$$,
                 '42501', 'permission denied for function requeue_expired', 'stacker_agent may not requeue_expired');
SELECT throws_ok($$SELECT * FROM stacker.commands$$,
                 '42501', 'permission denied for table commands', 'stacker_agent may not read commands');
SELECT throws_ok($$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by)
                   VALUES ('cmd-roles-x', 'dep-roles', 'health', 'agent')$$,
                 '42501', 'permission denied for table commands', 'stacker_agent may not INSERT into commands');
SELECT throws_ok($$UPDATE stacker.agents SET version = 'x'$$,
                 '42501', 'permission denied for table agents', 'stacker_agent may not UPDATE agents');
SELECT throws_ok($$SELECT stacker._agent_seen('dep-roles', '00000000-0000-4000-8000-0000000000a1')$$,
                 '42501', 'permission denied for function _agent_seen', 'stacker_agent may not call private helpers');
RESET ROLE;

-- stacker_service: create, cancel, read, app status; no agent calls, no direct writes.
SET LOCAL ROLE stacker_service;
SELECT is(current_user::text, 'stacker_service', 'now acting as stacker_service');
SELECT lives_ok($$SELECT stacker.create_command('dep-roles', 'restart', p_command_id => 'cmd-roles-2')$$,
                'stacker_service may create_command');
SELECT lives_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-roles", "command_type": "logs", "command_id": "cmd-roles-3"}]')$$,
                'stacker_service may create_commands');
SELECT results_eq($$SELECT status::text FROM stacker.get_command('cmd-roles-1')$$, ARRAY['completed'],
                  'stacker_service may get_command');
SELECT results_eq($$SELECT count(*)::int FROM stacker.list_commands('dep-roles')$$, ARRAY[3],
                  'stacker_service may list_commands');
SELECT results_eq($$SELECT app_code, status FROM stacker.get_app_status('dep-roles')$$,
                  $$VALUES ('db', 'running'), ('web', 'running')$$,
                  'stacker_service may get_app_status');
SELECT lives_ok($$SELECT stacker.update_app_status('dep-roles', 'cache', 'stopped')$$,
                'stacker_service may update_app_status');
SELECT lives_ok($$SELECT stacker.cancel_command('cmd-roles-2', 'not needed')$$,
                'stacker_service may cancel_command');
SELECT results_eq($$SELECT count(*)::int FROM stacker.commands WHERE deployment_hash = 'dep-roles'$$, ARRAY[3],
                  'stacker_service may read commands');
SELECT lives_ok($$SELECT * FROM stacker.queue_stats$$, 'stacker_service may read queue_stats');
SELECT lives_ok($$SELECT * FROM stacker.audit_log$$, 'stacker_service may read audit_log');
SELECT throws_ok($$SELECT stacker.claim_commands('dep-roles', '00000000-0000-4000-8000-0000000000a1')$$,
                 '42501', 'permission denied for function claim_commands', 'stacker_service may not claim_commands');
SELECT throws_ok($$SELECT stacker.register_agent('dep-roles')$$,
                 '42501', 'permission denied for function register_agent', 'stacker_service may not register_agent');
SELECT throws_ok($$SELECT stacker.report_result('cmd-roles-3', '00000000-0000-4000-8000-0000000000a1', 'completed')$$,
                 '42501', 'permission denied for function report_result', 'stacker_service may not report_result');
SELECT throws_ok($$SELECT stacker.cleanup()$$,
                 '42501', 'permission denied for function cleanup', 'stacker_service may not run cleanup');
SELECT throws_ok($$SELECT stacker.purge_audit_log('30 days')$$,
                 '42501', 'permission denied for function purge_audit_log', 'stacker_service may not purge_audit_log');
SELECT throws_ok($$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by)
                   VALUES ('cmd-roles-y', 'dep-roles', 'health', 'svc')$$,
                 '42501', 'permission denied for table commands', 'stacker_service may not INSERT into commands');
SELECT throws_ok($$UPDATE stacker.commands SET status = 'cancelled' WHERE command_id = 'cmd-roles-3'$$,
                 '42501', 'permission denied for table commands', 'stacker_service may not UPDATE commands');
SELECT throws_ok($$DELETE FROM stacker.command_queue$$,
                 '42501', 'permission denied for table command_queue', 'stacker_service may not DELETE from command_queue');
SELECT throws_ok($$INSERT INTO stacker.audit_log (action) VALUES ('forged')$$,
                 '42501', 'permission denied for table audit_log', 'stacker_service may not write audit_log');
RESET ROLE;

-- stacker_readonly: SELECT on the tables and the view, nothing else.
SET LOCAL ROLE stacker_readonly;
SELECT is(current_user::text, 'stacker_readonly', 'now acting as stacker_readonly');
SELECT lives_ok(format('SELECT * FROM stacker.%I', t), format('stacker_readonly may read %s', t))
  FROM unnest(ARRAY['commands', 'command_queue', 'agents', 'app_status', 'audit_log', 'queue_stats']) AS t;
SELECT throws_ok($$SELECT * FROM stacker.schema_repeatables$$,
                 '42501', 'permission denied for table schema_repeatables', 'stacker_readonly may not read the installer''s bookkeeping');
SELECT throws_ok($$SELECT stacker.create_command('dep-roles', 'restart')$$,
                 '42501', 'permission denied for function create_command', 'stacker_readonly may not create_command');
SELECT throws_ok($$SELECT stacker.update_app_status('dep-roles', 'db', 'error')$$,
                 '42501', 'permission denied for function update_app_status', 'stacker_readonly may not update_app_status');
SELECT throws_ok($$SELECT stacker.get_command('cmd-roles-1')$$,
                 '42501', 'permission denied for function get_command', 'stacker_readonly may not call get_command');
SELECT throws_ok($$UPDATE stacker.app_status SET status = 'error'$$,
                 '42501', 'permission denied for table app_status', 'stacker_readonly may not UPDATE app_status');
SELECT throws_ok($$DELETE FROM stacker.commands$$,
                 '42501', 'permission denied for table commands', 'stacker_readonly may not DELETE commands');
RESET ROLE;

-- What the role calls did, seen as the owner.
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.commands WHERE deployment_hash = 'dep-roles' ORDER BY command_id$$,
    $$VALUES ('cmd-roles-1', 'completed'), ('cmd-roles-2', 'cancelled'), ('cmd-roles-3', 'queued')$$,
    'the calls made under the roles took effect, the refused ones did not');
SELECT results_eq(
    $$SELECT app_code::text, status::text FROM stacker.app_status WHERE deployment_hash = 'dep-roles' ORDER BY app_code$$,
    $$VALUES ('cache', 'stopped'), ('db', 'running'), ('web', 'running')$$,
    'app_status holds what the permitted calls wrote');

SELECT * FROM finish();
ROLLBACK;
