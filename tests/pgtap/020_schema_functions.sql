-- Schema: every function of the contract with its exact signature, defaults and
-- return type; SECURITY DEFINER with a pinned search_path; COMMENT on everything.
BEGIN;
SELECT plan(87);

-- Signatures (argument types) ------------------------------------------------------
SELECT has_function('stacker', f, args, format('function stacker.%s(%s) exists', f, array_to_string(args, ', ')))
  FROM (VALUES
    ('create_command', ARRAY['text', 'text', 'jsonb', 'text', 'text', 'text', 'integer',
                             'timestamp with time zone', 'integer', 'text', 'jsonb']),
    ('register_agent', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb']),
    ('claim_commands', ARRAY['text', 'uuid', 'integer', 'integer']),
    ('start_command', ARRAY['text', 'uuid']),
    ('extend_lease', ARRAY['text', 'uuid', 'integer']),
    ('report_result', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb']),
    ('cancel_command', ARRAY['text', 'text', 'text']),
    ('update_app_status', ARRAY['text', 'text', 'text', 'jsonb', 'timestamp with time zone', 'text']),
    ('get_app_status', ARRAY['text']),
    ('requeue_expired', ARRAY[]::text[]),
    ('cleanup', ARRAY['interval', 'interval']),
    ('create_commands', ARRAY['jsonb']),
    ('get_command', ARRAY['text']),
    ('list_commands', ARRAY['text', 'text', 'integer']),
    ('purge_audit_log', ARRAY['interval'])
  ) AS v(f, args);

-- Names, order and defaults of the arguments are part of the contract.
SELECT is(pg_get_function_arguments(p::regprocedure), args, format('%s: argument names and defaults', p))
  FROM (VALUES
    ('stacker.create_command(text,text,jsonb,text,text,text,integer,timestamptz,integer,text,jsonb)',
     'p_deployment_hash text, p_command_type text, p_parameters jsonb DEFAULT ''{}''::jsonb, p_priority text DEFAULT ''normal''::text, p_created_by text DEFAULT NULL::text, p_idempotency_key text DEFAULT NULL::text, p_timeout_seconds integer DEFAULT 300, p_scheduled_for timestamp with time zone DEFAULT NULL::timestamp with time zone, p_max_attempts integer DEFAULT 3, p_command_id text DEFAULT NULL::text, p_metadata jsonb DEFAULT ''{}''::jsonb'),
    ('stacker.register_agent(text,uuid,text,jsonb,jsonb)',
     'p_deployment_hash text, p_agent_id uuid DEFAULT NULL::uuid, p_version text DEFAULT NULL::text, p_capabilities jsonb DEFAULT ''[]''::jsonb, p_system_info jsonb DEFAULT ''{}''::jsonb'),
    ('stacker.claim_commands(text,uuid,integer,integer)',
     'p_deployment_hash text, p_agent_id uuid, p_limit integer DEFAULT 1, p_lease_seconds integer DEFAULT NULL::integer'),
    ('stacker.start_command(text,uuid)', 'p_command_id text, p_agent_id uuid'),
    ('stacker.extend_lease(text,uuid,integer)',
     'p_command_id text, p_agent_id uuid, p_lease_seconds integer DEFAULT NULL::integer'),
    ('stacker.report_result(text,uuid,text,jsonb,jsonb)',
     'p_command_id text, p_agent_id uuid, p_status text, p_result jsonb DEFAULT NULL::jsonb, p_error jsonb DEFAULT NULL::jsonb'),
    ('stacker.cancel_command(text,text,text)',
     'p_command_id text, p_reason text DEFAULT NULL::text, p_cancelled_by text DEFAULT NULL::text'),
    ('stacker.update_app_status(text,text,text,jsonb,timestamptz,text)',
     'p_deployment_hash text, p_app_code text, p_status text, p_logs jsonb DEFAULT ''[]''::jsonb, p_checked_at timestamp with time zone DEFAULT now(), p_command_id text DEFAULT NULL::text'),
    ('stacker.get_app_status(text)', 'p_deployment_hash text'),
    ('stacker.requeue_expired()', ''),
    ('stacker.cleanup(interval,interval)',
     'p_queue_ttl interval DEFAULT ''48:00:00''::interval, p_retention interval DEFAULT NULL::interval')
  ) AS v(p, args);

-- Return types ----------------------------------------------------------------------
SELECT function_returns('stacker', f, args, ret, format('stacker.%s returns %s', f, ret))
  FROM (VALUES
    ('create_command', ARRAY['text', 'text', 'jsonb', 'text', 'text', 'text', 'integer',
                             'timestamp with time zone', 'integer', 'text', 'jsonb'], 'stacker.commands'),
    ('register_agent', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb'], 'stacker.agents'),
    ('claim_commands', ARRAY['text', 'uuid', 'integer', 'integer'], 'setof stacker.commands'),
    ('start_command', ARRAY['text', 'uuid'], 'stacker.commands'),
    ('extend_lease', ARRAY['text', 'uuid', 'integer'], 'timestamp with time zone'),
    ('report_result', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb'], 'stacker.commands'),
    ('cancel_command', ARRAY['text', 'text', 'text'], 'stacker.commands'),
    ('update_app_status', ARRAY['text', 'text', 'text', 'jsonb', 'timestamp with time zone', 'text'], 'stacker.app_status'),
    ('get_app_status', ARRAY['text'], 'setof record'),
    ('requeue_expired', ARRAY[]::text[], 'integer'),
    ('cleanup', ARRAY['interval', 'interval'], 'jsonb'),
    ('create_commands', ARRAY['jsonb'], 'setof stacker.commands'),
    ('get_command', ARRAY['text'], 'stacker.commands'),
    ('list_commands', ARRAY['text', 'text', 'integer'], 'setof stacker.commands'),
    ('purge_audit_log', ARRAY['interval'], 'bigint')
  ) AS v(f, args, ret);
SELECT is(pg_get_function_result('stacker.get_app_status(text)'::regprocedure),
          'TABLE(app_code text, status text, logs jsonb, checked_at timestamp with time zone, state text, pending_command_id text, agent_last_seen timestamp with time zone)',
          'get_app_status returns the contract''s columns');

SELECT volatility_is('stacker', f, args, 'stable', format('%s is STABLE (read only)', f))
  FROM (VALUES ('get_command', ARRAY['text']), ('list_commands', ARRAY['text', 'text', 'integer']),
               ('get_app_status', ARRAY['text'])) AS v(f, args);

-- SECURITY DEFINER, every function of the schema -------------------------------------
SELECT is_definer('stacker', f, args, format('stacker.%s(%s) is SECURITY DEFINER', f, array_to_string(args, ', ')))
  FROM (VALUES
    ('create_command', ARRAY['text', 'text', 'jsonb', 'text', 'text', 'text', 'integer',
                             'timestamp with time zone', 'integer', 'text', 'jsonb']),
    ('register_agent', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb']),
    ('claim_commands', ARRAY['text', 'uuid', 'integer', 'integer']),
    ('start_command', ARRAY['text', 'uuid']),
    ('extend_lease', ARRAY['text', 'uuid', 'integer']),
    ('report_result', ARRAY['text', 'uuid', 'text', 'jsonb', 'jsonb']),
    ('cancel_command', ARRAY['text', 'text', 'text']),
    ('update_app_status', ARRAY['text', 'text', 'text', 'jsonb', 'timestamp with time zone', 'text']),
    ('get_app_status', ARRAY['text']),
    ('requeue_expired', ARRAY[]::text[]),
    ('cleanup', ARRAY['interval', 'interval']),
    ('create_commands', ARRAY['jsonb']),
    ('get_command', ARRAY['text']),
    ('list_commands', ARRAY['text', 'text', 'integer']),
    ('purge_audit_log', ARRAY['interval']),
    ('_agent_seen', ARRAY['text', 'uuid']),
    ('_agents_audit', ARRAY[]::text[]),
    ('_app_status_audit', ARRAY[]::text[]),
    ('_apply_health_result', ARRAY['stacker.commands']),
    ('_audit_log_append_only', ARRAY[]::text[]),
    ('_audit_log_purged', ARRAY[]::text[]),
    ('_command_for_agent', ARRAY['text', 'uuid']),
    ('_command_queue_guard', ARRAY[]::text[]),
    ('_commands_audit', ARRAY[]::text[]),
    ('_commands_lifecycle', ARRAY[]::text[]),
    ('_commands_notify', ARRAY[]::text[]),
    ('_commands_queue_sync', ARRAY[]::text[]),
    ('_set_app_status', ARRAY['text', 'text', 'text', 'jsonb', 'timestamp with time zone', 'text'])
  ) AS v(f, args);

-- The catalog view of the same rules, for any function added later.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'stacker'::regnamespace AND NOT p.prosecdef$$,
    'every function in schema stacker is SECURITY DEFINER');
SELECT is_empty(
    $$SELECT p.oid::regprocedure, p.proconfig FROM pg_proc p
       WHERE p.pronamespace = 'stacker'::regnamespace
         AND p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp', 'enable_seqscan=off',
                                                  'plan_cache_mode=force_generic_plan']$$,
    'every function in schema stacker has exactly proconfig search_path=pg_catalog, pg_temp, enable_seqscan=off and plan_cache_mode=force_generic_plan');
SELECT cmp_ok((SELECT count(*)::int FROM pg_proc WHERE pronamespace = 'stacker'::regnamespace), '>=', 28,
              'the schema holds at least the 28 functions checked above');

-- Fully qualified names inside: temporary tables that shadow the schema's table
-- names (pg_temp is on the pinned search_path) are never touched.
CREATE TEMP TABLE commands (command_id text, deployment_hash text);
CREATE TEMP TABLE command_queue (command_id text, deployment_hash text);
CREATE TEMP TABLE agents (id uuid, deployment_hash text);
CREATE TEMP TABLE audit_log (action text);
SELECT lives_ok(
    $$SELECT stacker.register_agent('dep-shadow', '00000000-0000-4000-8000-0000000000aa')$$,
    'register_agent works with shadowing temporary tables');
SELECT lives_ok(
    $$SELECT stacker.create_command('dep-shadow', 'health', p_command_id => 'cmd-shadow')$$,
    'create_command works with shadowing temporary tables');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.claim_commands('dep-shadow', '00000000-0000-4000-8000-0000000000aa')$$,
    ARRAY['cmd-shadow'],
    'claim_commands reads the schema''s queue, not a shadowing temporary table');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE details ->> 'command_id' = 'cmd-shadow'), 2,
          'the audit rows went to stacker.audit_log');
SELECT is((SELECT count(*)::int FROM pg_temp.commands) + (SELECT count(*)::int FROM pg_temp.command_queue)
          + (SELECT count(*)::int FROM pg_temp.agents) + (SELECT count(*)::int FROM pg_temp.audit_log), 0,
          'the shadowing temporary tables stay empty');
DROP TABLE pg_temp.commands, pg_temp.command_queue, pg_temp.agents, pg_temp.audit_log;

-- COMMENT ON everything --------------------------------------------------------------
SELECT isnt(obj_description('stacker'::regnamespace, 'pg_namespace'), NULL, 'schema stacker has a comment');
SELECT is_empty(
    $$SELECT c.relname FROM pg_class c
       WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
         AND c.relname NOT IN ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock')
         AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''$$,
    'every table and view of the package has a comment (yoyo''s bookkeeping tables aside)');
SELECT is_empty(
    $$SELECT c.relname, a.attname FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       WHERE c.relnamespace = 'stacker'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
         AND c.relname NOT IN ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock')
         AND coalesce(col_description(c.oid, a.attnum), '') = ''$$,
    'every column of every table and view has a comment');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'stacker'::regnamespace
         AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''$$,
    'every function has a comment');
SELECT is_empty(
    $$SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'stacker'::regnamespace AND NOT t.tgisinternal
         AND coalesce(obj_description(t.oid, 'pg_trigger'), '') = ''$$,
    'every trigger has a comment');
SELECT cmp_ok((SELECT count(*)::int FROM pg_description d
                 JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
                WHERE c.relnamespace = 'stacker'::regnamespace AND d.objsubid > 0), '>=', 60,
              'pg_description holds the column comments');

SELECT * FROM finish();
ROLLBACK;
