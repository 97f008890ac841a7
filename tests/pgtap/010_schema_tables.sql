-- Schema: tables, columns and their types (with the seed's two fixes), NOT NULLs,
-- defaults, keys, CHECK constraints, indexes, triggers and the queue_stats view.
BEGIN;
SELECT plan(211);

SELECT has_schema('stacker', 'schema stacker exists');

-- Tables --------------------------------------------------------------------
SELECT has_table('stacker', t, format('table stacker.%s exists', t))
  FROM unnest(ARRAY['commands', 'command_queue', 'agents', 'app_status', 'audit_log',
                    'schema_repeatables']) AS t;

-- Every column and its type ---------------------------------------------------
SELECT col_type_is('stacker', t, c, ty, format('stacker.%s.%s is %s', t, c, ty))
  FROM (VALUES
    ('commands', 'id', 'uuid'),
    ('commands', 'command_id', 'character varying(64)'),
    ('commands', 'deployment_hash', 'character varying(128)'),
    ('commands', 'type', 'character varying(100)'),
    ('commands', 'status', 'character varying(50)'),
    ('commands', 'priority', 'character varying(20)'),
    ('commands', 'parameters', 'jsonb'),
    ('commands', 'result', 'jsonb'),
    ('commands', 'error', 'jsonb'),
    ('commands', 'created_by', 'character varying(255)'),
    ('commands', 'created_at', 'timestamp with time zone'),
    ('commands', 'updated_at', 'timestamp with time zone'),
    ('commands', 'scheduled_for', 'timestamp with time zone'),
    ('commands', 'sent_at', 'timestamp with time zone'),
    ('commands', 'started_at', 'timestamp with time zone'),
    ('commands', 'completed_at', 'timestamp with time zone'),
    ('commands', 'timeout_seconds', 'integer'),
    ('commands', 'metadata', 'jsonb'),
    ('commands', 'attempts', 'integer'),
    ('commands', 'max_attempts', 'integer'),
    ('commands', 'idempotency_key', 'character varying(255)'),
    ('commands', 'agent_id', 'uuid'),
    ('commands', 'lease_expires_at', 'timestamp with time zone'),
    ('command_queue', 'id', 'uuid'),
    ('command_queue', 'command_id', 'character varying(64)'),
    ('command_queue', 'deployment_hash', 'character varying(128)'),
    ('command_queue', 'priority', 'integer'),
    ('command_queue', 'created_at', 'timestamp with time zone'),
    ('agents', 'id', 'uuid'),
    ('agents', 'deployment_hash', 'character varying(128)'),
    ('agents', 'capabilities', 'jsonb'),
    ('agents', 'version', 'character varying(50)'),
    ('agents', 'system_info', 'jsonb'),
    ('agents', 'last_heartbeat', 'timestamp with time zone'),
    ('agents', 'status', 'character varying(50)'),
    ('agents', 'created_at', 'timestamp with time zone'),
    ('agents', 'updated_at', 'timestamp with time zone'),
    ('app_status', 'deployment_hash', 'character varying(128)'),
    ('app_status', 'app_code', 'character varying(255)'),
    ('app_status', 'status', 'character varying(20)'),
    ('app_status', 'logs', 'jsonb'),
    ('app_status', 'checked_at', 'timestamp with time zone'),
    ('app_status', 'command_id', 'character varying(64)'),
    ('app_status', 'updated_at', 'timestamp with time zone'),
    ('audit_log', 'id', 'uuid'),
    ('audit_log', 'agent_id', 'uuid'),
    ('audit_log', 'deployment_hash', 'character varying(128)'),
    ('audit_log', 'action', 'character varying(100)'),
    ('audit_log', 'status', 'character varying(50)'),
    ('audit_log', 'details', 'jsonb'),
    ('audit_log', 'ip_address', 'inet'),
    ('audit_log', 'user_agent', 'text'),
    ('audit_log', 'created_at', 'timestamp with time zone'),
    ('audit_log', 'actor', 'text')
  ) AS v(t, c, ty);

-- Stacker's columns keep their order (its code and data keep working).
SELECT results_eq(
    $$SELECT attname::text COLLATE "default" FROM pg_attribute
       WHERE attrelid = 'stacker.commands'::regclass AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum LIMIT 18$$,
    ARRAY['id', 'command_id', 'deployment_hash', 'type', 'status', 'priority', 'parameters',
          'result', 'error', 'created_by', 'created_at', 'updated_at', 'scheduled_for',
          'sent_at', 'started_at', 'completed_at', 'timeout_seconds', 'metadata'],
    'commands starts with Stacker''s 18 columns in Stacker''s order');
SELECT results_eq(
    $$SELECT attname::text COLLATE "default" FROM pg_attribute
       WHERE attrelid = 'stacker.command_queue'::regclass AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum LIMIT 5$$,
    ARRAY['id', 'command_id', 'deployment_hash', 'priority', 'created_at'],
    'command_queue starts with Stacker''s columns in Stacker''s order');
SELECT results_eq(
    $$SELECT attname::text COLLATE "default" FROM pg_attribute
       WHERE attrelid = 'stacker.agents'::regclass AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum LIMIT 9$$,
    ARRAY['id', 'deployment_hash', 'capabilities', 'version', 'system_info', 'last_heartbeat',
          'status', 'created_at', 'updated_at'],
    'agents starts with Stacker''s columns in Stacker''s order');
SELECT results_eq(
    $$SELECT attname::text COLLATE "default" FROM pg_attribute
       WHERE attrelid = 'stacker.audit_log'::regclass AND attnum > 0 AND NOT attisdropped
       ORDER BY attnum LIMIT 9$$,
    ARRAY['id', 'agent_id', 'deployment_hash', 'action', 'status', 'details', 'ip_address',
          'user_agent', 'created_at'],
    'audit_log starts with Stacker''s columns in Stacker''s order');

-- NOT NULL ------------------------------------------------------------------------
SELECT col_not_null('stacker', t, c, format('stacker.%s.%s is NOT NULL', t, c))
  FROM (VALUES
    ('commands', 'id'), ('commands', 'command_id'), ('commands', 'deployment_hash'),
    ('commands', 'type'), ('commands', 'status'), ('commands', 'priority'),
    ('commands', 'created_by'), ('commands', 'created_at'), ('commands', 'updated_at'),
    ('commands', 'attempts'), ('commands', 'max_attempts'),
    ('command_queue', 'id'), ('command_queue', 'command_id'), ('command_queue', 'deployment_hash'),
    ('command_queue', 'priority'), ('command_queue', 'created_at'),
    ('agents', 'id'), ('agents', 'deployment_hash'),
    ('app_status', 'deployment_hash'), ('app_status', 'app_code'), ('app_status', 'status'),
    ('app_status', 'logs'), ('app_status', 'checked_at'), ('app_status', 'updated_at'),
    ('audit_log', 'id'), ('audit_log', 'action'), ('audit_log', 'created_at')
  ) AS v(t, c);

-- Columns that must stay nullable (optional by the contract or never set by Stacker).
SELECT col_is_null('stacker', t, c, format('stacker.%s.%s is nullable', t, c))
  FROM (VALUES
    ('commands', 'idempotency_key'), ('commands', 'agent_id'), ('commands', 'lease_expires_at'),
    ('commands', 'result'), ('commands', 'error'), ('commands', 'scheduled_for'),
    ('commands', 'sent_at'), ('commands', 'started_at'), ('commands', 'completed_at'),
    ('app_status', 'command_id'), ('audit_log', 'agent_id'), ('audit_log', 'actor')
  ) AS v(t, c);

-- Defaults ------------------------------------------------------------------------
SELECT col_default_is('stacker', 'commands', 'id', 'gen_random_uuid()'::text, 'commands.id defaults to gen_random_uuid()');
SELECT col_default_is('stacker', 'commands', 'status', 'queued'::text, 'commands.status defaults to queued');
SELECT col_default_is('stacker', 'commands', 'priority', 'normal'::text, 'commands.priority defaults to normal');
SELECT col_default_is('stacker', 'commands', 'parameters', '{}'::text, 'commands.parameters defaults to {}');
SELECT col_default_is('stacker', 'commands', 'metadata', '{}'::text, 'commands.metadata defaults to {}');
SELECT col_default_is('stacker', 'commands', 'created_at', 'now()'::text, 'commands.created_at defaults to now()');
SELECT col_default_is('stacker', 'commands', 'updated_at', 'now()'::text, 'commands.updated_at defaults to now()');
SELECT col_default_is('stacker', 'commands', 'timeout_seconds', 300, 'commands.timeout_seconds defaults to 300');
SELECT col_default_is('stacker', 'commands', 'attempts', 0, 'commands.attempts defaults to 0');
SELECT col_default_is('stacker', 'commands', 'max_attempts', 3, 'commands.max_attempts defaults to 3');
SELECT col_hasnt_default('stacker', 'commands', 'idempotency_key', 'commands.idempotency_key has no default');
SELECT col_default_is('stacker', 'command_queue', 'priority', 0, 'command_queue.priority defaults to 0');
SELECT col_default_is('stacker', 'command_queue', 'created_at', 'now()'::text, 'command_queue.created_at defaults to now()');
SELECT col_default_is('stacker', 'agents', 'capabilities', '[]'::text, 'agents.capabilities defaults to []');
SELECT col_default_is('stacker', 'agents', 'system_info', '{}'::text, 'agents.system_info defaults to {}');
SELECT col_default_is('stacker', 'agents', 'status', 'offline'::text, 'agents.status defaults to offline');
SELECT col_default_is('stacker', 'app_status', 'logs', '[]'::text, 'app_status.logs defaults to []');
SELECT col_default_is('stacker', 'audit_log', 'details', '{}'::text, 'audit_log.details defaults to {}');
SELECT col_default_is('stacker', 'audit_log', 'created_at', 'now()'::text, 'audit_log.created_at defaults to now()');

-- Keys -----------------------------------------------------------------------------
SELECT col_is_pk('stacker', 'commands', 'id', 'commands: primary key id');
SELECT col_is_pk('stacker', 'command_queue', 'id', 'command_queue: primary key id');
SELECT col_is_pk('stacker', 'agents', 'id', 'agents: primary key id');
SELECT col_is_pk('stacker', 'app_status', ARRAY['deployment_hash', 'app_code'], 'app_status: primary key (deployment_hash, app_code)');
SELECT col_is_pk('stacker', 'audit_log', 'id', 'audit_log: primary key id');
SELECT col_is_unique('stacker', 'commands', 'command_id', 'commands.command_id is UNIQUE');
SELECT col_is_unique('stacker', 'command_queue', 'command_id', 'command_queue.command_id is UNIQUE (one queue row per command)');
SELECT col_is_unique('stacker', 'commands', ARRAY['deployment_hash', 'idempotency_key'], 'commands (deployment_hash, idempotency_key) is UNIQUE');
SELECT col_is_unique('stacker', 'agents', 'deployment_hash', 'agents.deployment_hash is UNIQUE (one agent per deployment)');

-- The seed's first fix: the queue's FK is varchar(64) -> commands(command_id) ON DELETE CASCADE.
SELECT fk_ok('stacker', 'command_queue', 'command_id', 'stacker', 'commands', 'command_id',
             'command_queue.command_id references commands(command_id)');
SELECT is((SELECT confdeltype FROM pg_constraint
            WHERE conrelid = 'stacker.command_queue'::regclass AND contype = 'f'
              AND confrelid = 'stacker.commands'::regclass),
          'c'::"char", 'the queue''s foreign key is ON DELETE CASCADE');
SELECT is((SELECT count(*)::int FROM pg_constraint
            WHERE conrelid = 'stacker.command_queue'::regclass AND contype = 'f'),
          1, 'command_queue has exactly one foreign key (no leftover uuid -> commands(id))');
SELECT is((SELECT count(*)::int FROM pg_constraint
            WHERE conrelid = 'stacker.audit_log'::regclass AND contype = 'f'),
          0, 'audit_log has no foreign key (0005: agent ids are history, never rewritten)');
SELECT col_not_null('stacker', 'audit_log', 'action', 'audit_log.action is NOT NULL');
SELECT fk_ok('stacker', 'app_status', 'command_id', 'stacker', 'commands', 'command_id',
             'app_status.command_id references commands(command_id)');
SELECT is((SELECT confdeltype FROM pg_constraint
            WHERE conrelid = 'stacker.app_status'::regclass AND contype = 'f'),
          'n'::"char", 'app_status''s command foreign key is ON DELETE SET NULL');

-- CHECK constraints, by catalog and by behaviour --------------------------------------
SELECT col_has_check('stacker', t, c, format('stacker.%s.%s has a CHECK', t, c))
  FROM (VALUES ('commands', 'status'), ('commands', 'priority'), ('commands', 'parameters'),
               ('commands', 'timeout_seconds'), ('commands', 'attempts'),
               ('commands', 'max_attempts'), ('agents', 'status'), ('app_status', 'status'),
               ('app_status', 'logs'), ('command_queue', 'priority')) AS v(t, c);

SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, status, created_by)
      VALUES ('chk-1', 'dep-chk', 'health', 'done', 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_status_check"',
    'commands refuses an unknown status word');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, priority, created_by)
      VALUES ('chk-2', 'dep-chk', 'health', 'urgent', 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_priority_check"',
    'commands refuses an unknown priority word');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, parameters, created_by)
      VALUES ('chk-3', 'dep-chk', 'health', '[1]', 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_parameters_check"',
    'commands refuses parameters that are not a JSON object');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, max_attempts, created_by)
      VALUES ('chk-4', 'dep-chk', 'health', 0, 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_max_attempts_check"',
    'commands refuses max_attempts < 1');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, timeout_seconds, created_by)
      VALUES ('chk-5', 'dep-chk', 'health', 0, 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_timeout_seconds_check"',
    'commands refuses a non-positive timeout_seconds');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by)
      VALUES ('', 'dep-chk', 'health', 'test')$$,
    '23514', 'new row for relation "commands" violates check constraint "commands_command_id_check"',
    'commands refuses an empty command_id');
SELECT throws_ok(
    $$INSERT INTO stacker.agents (deployment_hash, status) VALUES ('dep-chk', 'asleep')$$,
    '23514', 'new row for relation "agents" violates check constraint "agents_status_check"',
    'agents refuses an unknown status');
SELECT throws_ok(
    $$INSERT INTO stacker.app_status (deployment_hash, app_code, status) VALUES ('dep-chk', 'web', 'ok')$$,
    '23514', 'new row for relation "app_status" violates check constraint "app_status_status_check"',
    'app_status refuses a status other than running, stopped, error, unknown');
SELECT throws_ok(
    $$INSERT INTO stacker.app_status (deployment_hash, app_code, status, logs)
      VALUES ('dep-chk', 'web', 'running', '{"a": 1}')$$,
    '23514', 'new row for relation "app_status" violates check constraint "app_status_logs_check"',
    'app_status refuses logs that are not an array');

-- Unique constraints, by behaviour.
INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by, idempotency_key)
VALUES ('uq-1', 'dep-uq', 'health', 'test', 'key-1');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by)
      VALUES ('uq-1', 'dep-uq', 'health', 'test')$$,
    '23505', NULL, 'a second command with the same command_id is refused');
SELECT throws_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by, idempotency_key)
      VALUES ('uq-2', 'dep-uq', 'health', 'test', 'key-1')$$,
    '23505', NULL, 'a second command with the same (deployment_hash, idempotency_key) is refused');
SELECT lives_ok(
    $$INSERT INTO stacker.commands (command_id, deployment_hash, type, created_by, idempotency_key)
      VALUES ('uq-3', 'dep-uq-other', 'health', 'test', 'key-1'),
             ('uq-4', 'dep-uq', 'health', 'test', NULL),
             ('uq-5', 'dep-uq', 'health', 'test', NULL)$$,
    'the same key in another deployment, and any number of NULL keys, are accepted');
INSERT INTO stacker.agents (deployment_hash) VALUES ('dep-uq');
SELECT throws_ok(
    $$INSERT INTO stacker.agents (deployment_hash) VALUES ('dep-uq')$$,
    '23505', NULL, 'a second agent for the same deployment is refused');

-- Indexes --------------------------------------------------------------------------
SELECT has_index('stacker', 'command_queue', 'command_queue_claim_idx',
                 ARRAY['deployment_hash', 'priority', 'created_at'],
                 'the claim index on command_queue (deployment_hash, priority DESC, created_at)');
SELECT ok(pg_get_indexdef('stacker.command_queue_claim_idx'::regclass)
              LIKE '%(deployment_hash, priority DESC, created_at)',
          'the claim index orders priority descending');
SELECT is_empty(
    $$SELECT i.indexrelid::regclass FROM pg_index i
       WHERE i.indrelid = 'stacker.command_queue'::regclass
         AND (pg_get_indexdef(i.indexrelid) ~ '(lease_expires_at|visible_at)'
              OR pg_get_expr(i.indpred, i.indrelid) IS NOT NULL)$$,
    'no index of command_queue covers visible_at or lease_expires_at (a claim''s update of its queue row is HOT; 0004)');
SELECT has_index('stacker', 'commands', 'commands_deployment_created_idx',
                 ARRAY['deployment_hash', 'created_at'], 'commands (deployment_hash, created_at) index');
SELECT has_index('stacker', 'commands', 'commands_created_at_brin', ARRAY['created_at'],
                 'commands created_at BRIN index');
SELECT has_index('stacker', 'audit_log', 'audit_log_deployment_created_idx',
                 ARRAY['deployment_hash', 'created_at'], 'audit_log (deployment_hash, created_at) index');
SELECT has_index('stacker', 'audit_log', 'audit_log_created_at_brin', ARRAY['created_at'],
                 'audit_log created_at BRIN index');
SELECT index_is_unique('stacker', t, i, format('%s is a unique index', i))
  FROM (VALUES ('commands', 'commands_command_id_key'),
               ('commands', 'commands_idempotency_key_key'),
               ('command_queue', 'command_queue_command_id_key'),
               ('agents', 'agents_deployment_hash_key')) AS v(t, i);

-- Triggers -------------------------------------------------------------------------
SELECT triggers_are('stacker', 'commands',
    ARRAY['_100_lifecycle_insert', '_100_lifecycle_resend', '_100_lifecycle_update', '_500_queue_insert', '_500_queue_update',
          '_800_audit_insert', '_800_audit_update', '_900_notify_insert', '_900_notify_update'],
    'commands has exactly its triggers');
SELECT triggers_are('stacker', 'command_queue', ARRAY['_100_guard_insert', '_100_guard_delete'],
    'command_queue has exactly its triggers');
SELECT triggers_are('stacker', 'agents', ARRAY['_800_audit_insert', '_800_audit_update'],
    'agents has exactly its triggers');
SELECT triggers_are('stacker', 'app_status', ARRAY['_800_audit_insert', '_800_audit_update'],
    'app_status has exactly its triggers');
SELECT triggers_are('stacker', 'audit_log', ARRAY['_100_append_only', '_100_no_truncate', '_900_audit_purge'],
    'audit_log has exactly its triggers');

SELECT has_trigger('stacker', t, g, format('trigger %s on %s exists', g, t))
  FROM (VALUES ('commands', '_100_lifecycle_insert'), ('commands', '_500_queue_insert'),
               ('commands', '_800_audit_update'), ('command_queue', '_100_guard_delete'),
               ('audit_log', '_100_append_only')) AS v(t, g);

SELECT trigger_is('stacker', t, g, 'stacker', f, format('trigger %s on %s calls %s()', g, t, f))
  FROM (VALUES
    ('commands', '_100_lifecycle_insert', '_commands_lifecycle'),
    ('commands', '_100_lifecycle_update', '_commands_lifecycle'),
    ('commands', '_100_lifecycle_resend', '_commands_lifecycle'),
    ('commands', '_500_queue_insert', '_commands_queue_sync'),
    ('commands', '_500_queue_update', '_commands_queue_sync'),
    ('commands', '_800_audit_insert', '_commands_audit'),
    ('commands', '_800_audit_update', '_commands_audit'),
    ('commands', '_900_notify_insert', '_commands_notify'),
    ('commands', '_900_notify_update', '_commands_notify'),
    ('command_queue', '_100_guard_insert', '_command_queue_guard'),
    ('command_queue', '_100_guard_delete', '_command_queue_guard'),
    ('agents', '_800_audit_insert', '_agents_audit'),
    ('agents', '_800_audit_update', '_agents_audit'),
    ('app_status', '_800_audit_insert', '_app_status_audit'),
    ('app_status', '_800_audit_update', '_app_status_audit'),
    ('audit_log', '_100_append_only', '_audit_log_append_only'),
    ('audit_log', '_100_no_truncate', '_audit_log_append_only'),
    ('audit_log', '_900_audit_purge', '_audit_log_purged')
  ) AS v(t, g, f);

-- Timing, level and events of every trigger (pg_trigger.tgtype bits).
SELECT results_eq(
    $$SELECT c.relname::text COLLATE "default", t.tgname::text COLLATE "default",
             CASE WHEN t.tgtype & 2 = 2 THEN 'BEFORE' ELSE 'AFTER' END,
             CASE WHEN t.tgtype & 1 = 1 THEN 'ROW' ELSE 'STATEMENT' END,
             concat_ws(' OR ', CASE WHEN t.tgtype & 4 = 4 THEN 'INSERT' END,
                               CASE WHEN t.tgtype & 8 = 8 THEN 'DELETE' END,
                               CASE WHEN t.tgtype & 16 = 16 THEN 'UPDATE' END,
                               CASE WHEN t.tgtype & 32 = 32 THEN 'TRUNCATE' END)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'stacker'::regnamespace AND NOT t.tgisinternal
       ORDER BY 1, 2$$,
    $$VALUES ('agents', '_800_audit_insert', 'AFTER', 'ROW', 'INSERT'),
             ('agents', '_800_audit_update', 'AFTER', 'ROW', 'UPDATE'),
             ('app_status', '_800_audit_insert', 'AFTER', 'ROW', 'INSERT'),
             ('app_status', '_800_audit_update', 'AFTER', 'ROW', 'UPDATE'),
             ('audit_log', '_100_append_only', 'BEFORE', 'ROW', 'DELETE OR UPDATE'),
             ('audit_log', '_100_no_truncate', 'BEFORE', 'STATEMENT', 'TRUNCATE'),
             ('audit_log', '_900_audit_purge', 'AFTER', 'STATEMENT', 'DELETE'),
             ('command_queue', '_100_guard_delete', 'BEFORE', 'ROW', 'DELETE'),
             ('command_queue', '_100_guard_insert', 'BEFORE', 'ROW', 'INSERT'),
             ('commands', '_100_lifecycle_insert', 'BEFORE', 'ROW', 'INSERT'),
             ('commands', '_100_lifecycle_resend', 'BEFORE', 'ROW', 'UPDATE'),
             ('commands', '_100_lifecycle_update', 'BEFORE', 'ROW', 'UPDATE'),
             ('commands', '_500_queue_insert', 'AFTER', 'STATEMENT', 'INSERT'),
             ('commands', '_500_queue_update', 'AFTER', 'STATEMENT', 'UPDATE'),
             ('commands', '_800_audit_insert', 'AFTER', 'STATEMENT', 'INSERT'),
             ('commands', '_800_audit_update', 'AFTER', 'STATEMENT', 'UPDATE'),
             ('commands', '_900_notify_insert', 'AFTER', 'STATEMENT', 'INSERT'),
             ('commands', '_900_notify_update', 'AFTER', 'STATEMENT', 'UPDATE')$$,
    'every trigger fires at the right time, level and events');
SELECT is_empty(
    $$SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'stacker'::regnamespace AND NOT t.tgisinternal
         AND t.tgenabled <> CASE WHEN c.relname = 'audit_log' THEN 'A' ELSE 'O' END$$,
    'every trigger is enabled; audit_log''s ALWAYS, whatever session_replication_role says');

-- The queue_stats view --------------------------------------------------------------
SELECT has_view('stacker', 'queue_stats', 'view stacker.queue_stats exists');
SELECT columns_are('stacker', 'queue_stats',
    ARRAY['deployment_hash', 'queued', 'in_flight', 'oldest_queued_at', 'expired_leases', 'agent_last_seen'],
    'queue_stats has the contract''s columns');
SELECT col_type_is('stacker', 'queue_stats', c, ty, format('queue_stats.%s is %s', c, ty))
  FROM (VALUES ('deployment_hash', 'text'), ('queued', 'bigint'), ('in_flight', 'bigint'),
               ('oldest_queued_at', 'timestamp with time zone'), ('expired_leases', 'bigint'),
               ('agent_last_seen', 'timestamp with time zone')) AS v(c, ty);

SELECT * FROM finish();
ROLLBACK;
