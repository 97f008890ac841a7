-- create_command: defaults, every argument, the queue row, created_by and the actor,
-- every invalid input (22023, naming the value), duplicates (23505), idempotency;
-- get_command and list_commands.
BEGIN;
SELECT plan(74);

-- Defaults ------------------------------------------------------------------------------
CREATE TEMP TABLE c_default AS SELECT * FROM stacker.create_command('dep-c', 'health');
SELECT is((SELECT count(*)::int FROM c_default), 1, 'create_command returns one row');
SELECT matches((SELECT command_id::text FROM c_default),
               '^cmd_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
               'command_id defaults to cmd_<uuid>');
SELECT results_eq(
    $$SELECT deployment_hash::text, type::text, status::text, priority::text, parameters, created_by::text,
             timeout_seconds, max_attempts, attempts, metadata, idempotency_key::text
        FROM c_default$$,
    $$VALUES ('dep-c', 'health', 'queued', 'normal', '{}'::jsonb, session_user::text COLLATE "default",
              300, 3, 0, '{}'::jsonb, NULL::text)$$,
    'defaults: queued, normal, {} parameters, created_by = session_user, timeout 300, 3 attempts allowed, none made');
SELECT results_eq(
    $$SELECT scheduled_for, sent_at, started_at, completed_at, lease_expires_at, agent_id::text, result, error
        FROM c_default$$,
    $$VALUES (NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz,
              NULL::text, NULL::jsonb, NULL::jsonb)$$,
    'a new command has no schedule, delivery, lease, agent, result or error');
SELECT results_eq(
    $$SELECT * FROM stacker.commands WHERE command_id = (SELECT command_id FROM c_default)$$,
    $$SELECT * FROM c_default$$,
    'the returned row is the stored row');
SELECT results_eq(
    $$SELECT q.deployment_hash::text, q.priority, q.lease_expires_at, q.created_at = c.created_at
        FROM stacker.command_queue q JOIN c_default c USING (command_id)$$,
    $$VALUES ('dep-c', 1, NULL::timestamptz, true)$$,
    'the queue row was created with it: same deployment, priority normal = 1, no lease, same created_at');

-- Every argument ----------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, deployment_hash::text, type::text, parameters, priority::text, created_by::text,
             idempotency_key::text, timeout_seconds, scheduled_for, max_attempts, metadata, status::text
        FROM stacker.create_command('dep-c', 'restart', '{"app_code": "web", "force": true}', 'high', 'svc:deployer',
                                    'key-all', 60, now() + interval '1 hour', 5, 'cmd-c-all', '{"trace": "t-1"}')$$,
    $$VALUES ('cmd-c-all', 'dep-c', 'restart', '{"app_code": "web", "force": true}'::jsonb, 'high', 'svc:deployer',
              'key-all', 60, now() + interval '1 hour', 5, '{"trace": "t-1"}'::jsonb, 'queued')$$,
    'every argument is stored as given');
SELECT results_eq(
    $$SELECT priority, visible_at FROM stacker.command_queue WHERE command_id = 'cmd-c-all'$$,
    $$VALUES (2, now() + interval '1 hour')$$,
    'its queue row has priority high = 2 and is not visible before scheduled_for');
SELECT lives_ok(
    $$SELECT stacker.create_command('dep-c-prio', 'health', p_priority => p.word)
        FROM unnest(ARRAY['low', 'normal', 'high', 'critical']) AS p(word)$$,
    'setup: one command of each priority');
SELECT results_eq(
    $$SELECT c.priority::text, q.priority
        FROM stacker.commands c JOIN stacker.command_queue q ON q.command_id = c.command_id
       WHERE c.deployment_hash = 'dep-c-prio'
       ORDER BY q.priority$$,
    $$VALUES ('low', 0), ('normal', 1), ('high', 2), ('critical', 3)$$,
    'priority words map to Stacker''s queue numbers: low 0, normal 1, high 2, critical 3');

-- created_by: the caller's value, else the actor, else session_user.
SET LOCAL stacker.actor = 'ops:alice';
SELECT is((stacker.create_command('dep-c', 'health', p_command_id => 'cmd-c-actor')).created_by::text, 'ops:alice',
          'created_by defaults to stacker.actor when it is set');
SELECT is((stacker.create_command('dep-c', 'health', p_created_by => 'svc:panel', p_command_id => 'cmd-c-by')).created_by::text,
          'svc:panel', 'an explicit p_created_by wins over the actor');
SET LOCAL stacker.actor = '';
SELECT is((stacker.create_command('dep-c', 'health', p_command_id => 'cmd-c-empty-actor')).created_by::text, session_user::text,
          'an empty stacker.actor counts as unset: created_by = session_user');
RESET stacker.actor;

-- Boundaries that are accepted.
SELECT lives_ok(format($$SELECT stacker.create_command(%L, 'health')$$, repeat('h', 128)),
                'a deployment_hash of 128 characters is accepted');
SELECT lives_ok(format($$SELECT stacker.create_command('dep-c', 'health', p_command_id => %L)$$, repeat('i', 64)),
                'a command_id of 64 characters is accepted');
SELECT lives_ok(format($$SELECT stacker.create_command('dep-c', 'big', jsonb_build_object('x', repeat('a', %s)))$$,
                       1048576 - 9),
                'parameters of exactly 1 MiB are accepted');
SELECT lives_ok($$SELECT stacker.create_command('dep-c', 'health', p_timeout_seconds => 1, p_max_attempts => 1)$$,
                'timeout_seconds 1 and max_attempts 1 are accepted');

-- Invalid input: 22023, naming the value; nothing changes -----------------------------------------
CREATE TEMP TABLE counts_before AS
SELECT (SELECT count(*) FROM stacker.commands) AS commands,
       (SELECT count(*) FROM stacker.command_queue) AS queue,
       (SELECT count(*) FROM stacker.audit_log) AS audit;

SELECT throws_ok($$SELECT stacker.create_command('', 'health')$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters',
                 'empty deployment_hash: 22023');
SELECT throws_ok($$SELECT stacker.create_command(NULL, 'health')$$,
                 '22023', 'invalid deployment_hash NULL: must be 1 to 128 characters',
                 'NULL deployment_hash: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command(%L, 'health')$$, repeat('h', 129)),
                 '22023', format('invalid deployment_hash %L (129 characters): must be 1 to 128 characters',
                                 repeat('h', 48) || '...'),
                 'deployment_hash of 129 characters: 22023, naming the value and its length');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', '')$$,
                 '22023', 'invalid command_type '''': must be 1 to 100 characters',
                 'empty command_type: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command('dep-c', %L)$$, repeat('t', 101)),
                 '22023', format('invalid command_type %L (101 characters): must be 1 to 100 characters',
                                 repeat('t', 48) || '...'),
                 'command_type of 101 characters: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', '[1, 2]')$$,
                 '22023', 'invalid parameters ''[1, 2]'': must be a JSON object',
                 'parameters that are an array: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', '"web"')$$,
                 '22023', 'invalid parameters ''"web"'': must be a JSON object',
                 'parameters that are a string: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', 'null'::jsonb)$$,
                 '22023', 'invalid parameters ''null'': must be a JSON object',
                 'parameters that are JSON null: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', NULL)$$,
                 '22023', 'invalid parameters NULL: must be a JSON object',
                 'SQL NULL parameters: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command('dep-c', 'big', jsonb_build_object('x', repeat('a', %s)))$$,
                        1048576 - 8),
                 '22023', NULL, 'parameters one byte over 1 MiB: 22023');
SELECT throws_like(format($$SELECT stacker.create_command('dep-c', 'big', jsonb_build_object('x', repeat('a', %s)))$$,
                          1048576 - 8),
                   'invalid parameters ''{"x": "aaa%'' (1048577 characters): 1048577 bytes is over the 1 MiB limit',
                   'the message shows the start of the parameters and their size');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', '{}', 'urgent')$$,
                 '22023', 'invalid priority ''urgent'': must be low, normal, high or critical',
                 'unknown priority: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', '{}', 'HIGH')$$,
                 '22023', 'invalid priority ''HIGH'': must be low, normal, high or critical',
                 'priority words are lower case: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', '{}', NULL)$$,
                 '22023', 'invalid priority NULL: must be low, normal, high or critical',
                 'NULL priority: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_created_by => '')$$,
                 '22023', 'invalid created_by '''': must be NULL or 1 to 255 characters',
                 'empty created_by: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command('dep-c', 'health', p_created_by => %L)$$, repeat('u', 256)),
                 '22023', NULL, 'created_by of 256 characters: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_idempotency_key => '')$$,
                 '22023', 'invalid idempotency_key '''': must be NULL or 1 to 255 characters',
                 'empty idempotency_key: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command('dep-c', 'health', p_idempotency_key => %L)$$, repeat('k', 256)),
                 '22023', NULL, 'idempotency_key of 256 characters: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_timeout_seconds => 0)$$,
                 '22023', 'invalid timeout_seconds ''0'': must be an integer from 1 to 604800',
                 'timeout_seconds 0: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_timeout_seconds => -30)$$,
                 '22023', 'invalid timeout_seconds ''-30'': must be an integer from 1 to 604800',
                 'negative timeout_seconds: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_timeout_seconds => NULL)$$,
                 '22023', 'invalid timeout_seconds NULL: must be an integer from 1 to 604800',
                 'NULL timeout_seconds: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_scheduled_for => 'infinity')$$,
                 '22023', 'invalid scheduled_for ''infinity'': must be NULL or a time within a year of now',
                 'scheduled_for infinity: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_max_attempts => 0)$$,
                 '22023', 'invalid max_attempts ''0'': must be an integer from 1 to 100',
                 'max_attempts 0: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_max_attempts => -1)$$,
                 '22023', 'invalid max_attempts ''-1'': must be an integer from 1 to 100',
                 'negative max_attempts: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_command_id => '')$$,
                 '22023', 'invalid command_id '''': must be NULL or 1 to 64 characters',
                 'empty command_id: 22023');
SELECT throws_ok(format($$SELECT stacker.create_command('dep-c', 'health', p_command_id => %L)$$, repeat('i', 65)),
                 '22023', format('invalid command_id %L (65 characters): must be NULL or 1 to 64 characters',
                                 repeat('i', 48) || '...'),
                 'command_id of 65 characters: 22023');
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'health', p_metadata => '[]')$$,
                 '22023', 'invalid metadata ''[]'': must be a JSON object',
                 'metadata that is not an object: 22023');

-- Duplicate command_id: 23505.
SELECT throws_ok($$SELECT stacker.create_command('dep-c', 'restart', p_command_id => 'cmd-c-all')$$,
                 '23505', 'command_id ''cmd-c-all'' already exists',
                 'a duplicate command_id: 23505, naming it');
SELECT throws_ok($$SELECT stacker.create_command('dep-other', 'restart', p_command_id => 'cmd-c-all')$$,
                 '23505', 'command_id ''cmd-c-all'' already exists',
                 'command_id is unique across deployments too');

SELECT results_eq(
    $$SELECT (SELECT count(*) FROM stacker.commands), (SELECT count(*) FROM stacker.command_queue),
             (SELECT count(*) FROM stacker.audit_log)$$,
    $$SELECT commands, queue, audit FROM counts_before$$,
    'the rejected calls changed nothing (commands, queue rows, audit rows)');
SELECT is((SELECT type::text FROM stacker.commands WHERE command_id = 'cmd-c-all'), 'restart',
          'the existing command is untouched by the duplicate attempts');

-- Idempotency ---------------------------------------------------------------------------------
CREATE TEMP TABLE idem_first AS
SELECT * FROM stacker.create_command('dep-i', 'deploy', '{"app_code": "web", "tag": "v1"}',
                                      p_idempotency_key => 'deploy-v1', p_command_id => 'cmd-i-1');
SELECT results_eq(
    $$SELECT id, command_id::text FROM stacker.create_command('dep-i', 'deploy', '{"app_code": "web", "tag": "v1"}',
                                                           p_idempotency_key => 'deploy-v1')$$,
    $$SELECT id, command_id::text FROM idem_first$$,
    'the same key, type and parameters return the existing command');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.create_command('dep-i', 'deploy', '{"tag": "v1", "app_code": "web"}',
                                                       p_idempotency_key => 'deploy-v1', p_priority => 'critical')$$,
    ARRAY['cmd-i-1'],
    'equal JSON parameters (other key order) match too; the existing command is returned as it is');
SELECT is((SELECT priority::text FROM stacker.commands WHERE command_id = 'cmd-i-1'), 'normal',
          'returning the existing command does not change it');
SELECT is((SELECT count(*)::int FROM stacker.commands WHERE deployment_hash = 'dep-i'), 1,
          'no new command row was made');
SELECT is((SELECT count(*)::int FROM stacker.command_queue WHERE deployment_hash = 'dep-i'), 1,
          'no new queue row was made');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE deployment_hash = 'dep-i' AND action = 'command.created'), 1,
          'only one command.created audit row');
SELECT throws_ok($$SELECT stacker.create_command('dep-i', 'deploy', '{"app_code": "web", "tag": "v2"}',
                                                 p_idempotency_key => 'deploy-v1')$$,
                 '23505',
                 'idempotency_key ''deploy-v1'' of deployment ''dep-i'' was already used by command ''cmd-i-1'' with another type or parameters',
                 'the same key with other parameters: 23505, naming key, deployment and command');
SELECT throws_ok($$SELECT stacker.create_command('dep-i', 'restart', '{"app_code": "web", "tag": "v1"}',
                                                 p_idempotency_key => 'deploy-v1')$$,
                 '23505',
                 'idempotency_key ''deploy-v1'' of deployment ''dep-i'' was already used by command ''cmd-i-1'' with another type or parameters',
                 'the same key with another type: 23505');
SELECT isnt((stacker.create_command('dep-i-other', 'deploy', '{"app_code": "web", "tag": "v1"}',
                                    p_idempotency_key => 'deploy-v1')).command_id::text, 'cmd-i-1',
            'the same key in another deployment makes another command');
SELECT is((SELECT count(*)::int FROM stacker.commands WHERE idempotency_key = 'deploy-v1'), 2,
          'one command per (deployment, key)');
UPDATE stacker.commands SET status = 'cancelled' WHERE command_id = 'cmd-i-1';
SELECT results_eq(
    $$SELECT command_id::text, status::text FROM stacker.create_command('dep-i', 'deploy', '{"app_code": "web", "tag": "v1"}',
                                                                     p_idempotency_key => 'deploy-v1')$$,
    $$VALUES ('cmd-i-1', 'cancelled')$$,
    'a key keeps returning its command after the command finished');
SELECT throws_ok($$SELECT stacker.create_command('dep-i', 'deploy', '{}', p_idempotency_key => 'deploy-v9',
                                                 p_command_id => 'cmd-i-1')$$,
                 '23505', 'command_id ''cmd-i-1'' already exists',
                 'a new key with an existing command_id: 23505 for the command_id');

-- get_command -------------------------------------------------------------------------------------
SELECT results_eq($$SELECT * FROM stacker.get_command('cmd-c-all')$$,
                  $$SELECT * FROM stacker.commands WHERE command_id = 'cmd-c-all'$$,
                  'get_command returns the command');
SELECT throws_ok($$SELECT stacker.get_command('cmd-nope')$$,
                 'P0002', 'command ''cmd-nope'' does not exist', 'get_command of an unknown command: P0002');
SELECT throws_ok($$SELECT stacker.get_command('')$$,
                 '22023', 'invalid command_id '''': must be 1 to 64 characters', 'get_command of an empty id: 22023');
SELECT throws_ok(format($$SELECT stacker.get_command(%L)$$, repeat('i', 65)),
                 '22023', NULL, 'get_command of an over-long id: 22023');

-- list_commands ------------------------------------------------------------------------------------
SELECT lives_ok($$SELECT stacker.create_command('dep-l', 'health', p_command_id => 'cmd-l-' || n)
                    FROM generate_series(1, 4) AS n$$, 'setup: four commands in dep-l');
SELECT results_eq($$SELECT command_id::text FROM stacker.list_commands('dep-l')$$,
                  ARRAY['cmd-l-4', 'cmd-l-3', 'cmd-l-2', 'cmd-l-1'],
                  'list_commands lists a deployment''s commands, newest first');
SELECT results_eq($$SELECT command_id::text FROM stacker.list_commands('dep-l', NULL, 2)$$,
                  ARRAY['cmd-l-4', 'cmd-l-3'], 'list_commands honours p_limit');
UPDATE stacker.commands SET status = 'cancelled' WHERE command_id IN ('cmd-l-1', 'cmd-l-3');
SELECT results_eq($$SELECT command_id::text FROM stacker.list_commands('dep-l', 'cancelled')$$,
                  ARRAY['cmd-l-3', 'cmd-l-1'], 'list_commands filters by status');
SELECT is_empty($$SELECT * FROM stacker.list_commands('dep-nothing')$$,
                'list_commands of an unknown deployment is empty');
SELECT throws_ok($$SELECT stacker.list_commands('dep-l', 'done')$$,
                 '22023', 'invalid status ''done'': must be NULL or queued, sent, executing, completed, failed or cancelled',
                 'list_commands with an unknown status: 22023');
SELECT throws_ok($$SELECT stacker.list_commands('dep-l', NULL, 0)$$,
                 '22023', 'invalid limit ''0'': must be an integer from 1 to 10000',
                 'list_commands with limit 0: 22023');
SELECT throws_ok($$SELECT stacker.list_commands('dep-l', NULL, 10001)$$,
                 '22023', 'invalid limit ''10001'': must be an integer from 1 to 10000',
                 'list_commands with limit over 10000: 22023');
SELECT throws_ok(format($$SELECT stacker.list_commands(%L)$$, repeat('h', 129)),
                 '22023', NULL, 'list_commands with an over-long deployment_hash: 22023');
SELECT throws_ok($$SELECT stacker.list_commands('', NULL, 10)$$,
                 '22023', 'invalid deployment_hash '''': must be 1 to 128 characters',
                 'list_commands with an empty deployment_hash: 22023');

SELECT * FROM finish();
ROLLBACK;
