-- create_commands: a batch returns one row per element, in order; each element is
-- validated (22023 naming its index) and the whole batch is rejected on the first
-- bad one; idempotency per element; duplicate command_ids (23505).
BEGIN;
SELECT plan(45);

-- Rows in order, defaults, queue rows ------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text, deployment_hash::text, type::text, priority::text, parameters, status::text,
             timeout_seconds, max_attempts, created_by::text
        FROM stacker.create_commands('[
            {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-3", "parameters": {"app_code": "web"}},
            {"deployment_hash": "dep-bt", "command_type": "logs", "command_id": "bt-1", "priority": "critical",
             "timeout_seconds": 30, "max_attempts": 5, "created_by": "svc:batch"},
            {"deployment_hash": "dep-bt2", "command_type": "restart", "command_id": "bt-2", "priority": "low"}
        ]')$$,
    $$VALUES ('bt-3', 'dep-bt', 'health', 'normal', '{"app_code": "web"}'::jsonb, 'queued', 300, 3, session_user::text COLLATE "default"),
             ('bt-1', 'dep-bt', 'logs', 'critical', '{}'::jsonb, 'queued', 30, 5, 'svc:batch'),
             ('bt-2', 'dep-bt2', 'restart', 'low', '{}'::jsonb, 'queued', 300, 3, session_user::text COLLATE "default")$$,
    'one row per element, in the batch''s order, with create_command''s defaults');
SELECT results_eq(
    $$SELECT command_id::text, deployment_hash::text, priority FROM stacker.command_queue
       WHERE command_id LIKE 'bt-%' ORDER BY command_id$$,
    $$VALUES ('bt-1', 'dep-bt', 3), ('bt-2', 'dep-bt2', 0), ('bt-3', 'dep-bt', 1)$$,
    'each has its queue row');
SELECT is((SELECT count(*)::int FROM stacker.audit_log WHERE action = 'command.created' AND details ->> 'command_id' LIKE 'bt-%'), 3,
          'each has its command.created audit row');
SELECT results_eq(
    $$SELECT count(*)::int, count(DISTINCT command_id)::int, bool_and(command_id ~ '^cmd_[0-9a-f-]{36}$')
        FROM stacker.create_commands('[{"deployment_hash": "dep-bt", "command_type": "health"},
                                       {"deployment_hash": "dep-bt", "command_type": "health"}]')$$,
    $$VALUES (2, 2, true)$$,
    'command_ids default to distinct cmd_<uuid>');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.create_commands(
          (SELECT jsonb_agg(jsonb_build_object('deployment_hash', 'dep-bt-order', 'command_type', 'health',
                                               'command_id', 'ord-' || lpad(n::text, 3, '0')) ORDER BY n DESC)
             FROM generate_series(1, 50) AS n))$$,
    $$SELECT 'ord-' || lpad(n::text, 3, '0') FROM generate_series(50, 1, -1) AS n$$,
    'a batch of 50 comes back in its own order');
SELECT lives_ok($$SELECT stacker.register_agent('dep-bt-order', '00000000-0000-4000-8000-000000000401')$$, 'setup: agent');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.claim_commands('dep-bt-order', '00000000-0000-4000-8000-000000000401', 3)$$,
    ARRAY['ord-050', 'ord-049', 'ord-048'],
    'within a priority the batch''s order is the claim order (oldest first)');
SELECT results_eq(
    $$SELECT scheduled_for, metadata, idempotency_key::text FROM stacker.create_commands(
          jsonb_build_array(jsonb_build_object('deployment_hash', 'dep-bt', 'command_type', 'deploy', 'command_id', 'bt-s',
                                               'scheduled_for', now() + interval '10 minutes', 'metadata', '{"by": "cron"}'::jsonb,
                                               'idempotency_key', 'deploy-1')))$$,
    $$VALUES (now() + interval '10 minutes', '{"by": "cron"}'::jsonb, 'deploy-1')$$,
    'scheduled_for, metadata and idempotency_key are taken from the element');

-- Validation: 22023 naming the element's index; nothing is created ---------------------------------------
CREATE TEMP TABLE batch_before AS SELECT (SELECT count(*) FROM stacker.commands) AS n;
SELECT throws_ok($$SELECT stacker.create_commands('{"deployment_hash": "dep-bt"}')$$,
                 '22023', 'invalid commands ''{"deployment_hash": "dep-bt"}'': must be a JSON array of command objects',
                 'not an array: 22023');
SELECT throws_ok($$SELECT stacker.create_commands(NULL)$$,
                 '22023', 'invalid commands NULL: must be a JSON array of command objects', 'NULL: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[]')$$,
                 '22023', 'invalid commands: 0 elements; a batch holds 1 to 10000', 'an empty batch: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health"}, "health"]')$$,
                 '22023', 'invalid commands[1] ''"health"'': must be a JSON object', 'an element that is not an object: 22023, index 1');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dv", "command_type": "h", "prio": "high"}]')$$,
                 '22023', 'invalid commands[0] ''{"prio": "high", "command_type": "h", "deployment_hash": "dv"}'': has an unknown key ''prio''; known keys are the arguments of create_command without p_',
                 'an unknown key: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health"},
                                                    {"deployment_hash": "dep-bv", "command_type": "health"},
                                                    {"command_type": "health"}]')$$,
                 '22023', 'invalid commands[2] deployment_hash NULL: must be a string of 1 to 128 characters',
                 'a missing deployment_hash: 22023, index 2');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "", "command_type": "health"}]')$$,
                 '22023', 'invalid commands[0] deployment_hash '''': must be a string of 1 to 128 characters',
                 'an empty deployment_hash: 22023');
SELECT throws_ok(format($$SELECT stacker.create_commands('[{"deployment_hash": "%s", "command_type": "health"}]')$$, repeat('h', 129)),
                 '22023', NULL, 'an over-long deployment_hash: 22023');
SELECT throws_like(format($$SELECT stacker.create_commands('[{"deployment_hash": "%s", "command_type": "health"}]')$$, repeat('h', 129)),
                   'invalid commands[0] deployment_hash ''hhhh%'' (129 characters): must be a string of 1 to 128 characters',
                   '... naming the element');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": 42, "command_type": "health"}]')$$,
                 '22023', 'invalid commands[0] deployment_hash ''42'': must be a string of 1 to 128 characters',
                 'a deployment_hash that is a number: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": ""}]')$$,
                 '22023', 'invalid commands[0] command_type '''': must be a string of 1 to 100 characters',
                 'an empty command_type: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "parameters": 1}]')$$,
                 '22023', 'invalid commands[0] parameters ''1'': must be a JSON object',
                 'parameters that are not an object: 22023');
SELECT throws_like(
    format($$SELECT stacker.create_commands(jsonb_build_array(
                jsonb_build_object('deployment_hash', 'dep-bv', 'command_type', 'health'),
                jsonb_build_object('deployment_hash', 'dep-bv', 'command_type', 'big',
                                   'parameters', jsonb_build_object('x', repeat('a', %s)))))$$, 1048576),
    'invalid commands[1] parameters ''{"x": "aaa%'' (1048585 characters): 1048585 bytes is over the 1 MiB limit',
    'parameters over 1 MiB: 22023 message names the index, the field and its size');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "priority": "max"}]')$$,
                 '22023', 'invalid commands[0] priority ''max'': must be low, normal, high or critical',
                 'an unknown priority: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "timeout_seconds": 0}]')$$,
                 '22023', 'invalid commands[0] timeout_seconds ''0'': must be an integer from 1 to 604800',
                 'timeout_seconds 0: 22023 (the field and its value are named, not the whole element)');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health", "timeout_seconds": 1.5}]')$$,
                 '22023', NULL, 'a fractional timeout_seconds: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health", "timeout_seconds": "60"}]')$$,
                 '22023', NULL, 'a timeout_seconds that is a string: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "max_attempts": 0}]')$$,
                 '22023', 'invalid commands[0] max_attempts ''0'': must be an integer from 1 to 100',
                 'max_attempts 0: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "command_id": ""}]')$$,
                 '22023', 'invalid commands[0] command_id '''': must be null or a string of 1 to 64 characters',
                 'an empty command_id: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "idempotency_key": ""}]')$$,
                 '22023', 'invalid commands[0] idempotency_key '''': must be null or a string of 1 to 255 characters',
                 'an empty idempotency_key: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health", "created_by": ""}]')$$,
                 '22023', NULL, 'an empty created_by: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "d", "command_type": "h", "metadata": "x"}]')$$,
                 '22023', 'invalid commands[0] metadata ''x'': must be a JSON object',
                 'metadata that is not an object: 22023');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health"},
                                                    {"deployment_hash": "dep-bv", "command_type": "health", "scheduled_for": "next tuesday"}]')$$,
                 '22023', 'invalid commands[1] scheduled_for ''next tuesday'': must be NULL or a time within a year of now',
                 'an unreadable scheduled_for: 22023, index 1');
SELECT throws_ok($$SELECT stacker.create_commands('[{"deployment_hash": "dep-bv", "command_type": "health", "scheduled_for": "infinity"}]')$$,
                 '22023', 'invalid commands[0] scheduled_for ''infinity'': must be NULL or a time within a year of now',
                 'scheduled_for infinity: 22023');
SELECT is((SELECT count(*) FROM stacker.commands), (SELECT n FROM batch_before),
          'no rejected batch created anything, not even its valid elements');

-- Idempotency per element, duplicates -------------------------------------------------------------------
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-new"},
          {"deployment_hash": "dep-bt", "command_type": "deploy", "idempotency_key": "deploy-1"}
      ]')$$,
    ARRAY['bt-new', 'bt-s'],
    'an element whose key was used with the same type and parameters returns the existing command');
SELECT is((SELECT count(*)::int FROM stacker.commands WHERE idempotency_key = 'deploy-1'), 1, 'no second command for the key');
SELECT results_eq(
    $$SELECT command_id::text FROM stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "logs", "idempotency_key": "twice", "command_id": "bt-twice"},
          {"deployment_hash": "dep-bt", "command_type": "logs", "idempotency_key": "twice"}
      ]')$$,
    ARRAY['bt-twice', 'bt-twice'],
    'the same key twice in one batch (same type and parameters) makes one command, returned for both elements');
SELECT throws_ok($$SELECT stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-x1"},
          {"deployment_hash": "dep-bt", "command_type": "deploy", "idempotency_key": "deploy-1", "parameters": {"tag": "v2"}}
      ]')$$,
    '23505', 'invalid commands[1]: idempotency_key ''deploy-1'' of deployment ''dep-bt'' was already used by command ''bt-s'' with another type or parameters',
    'a key reused with other parameters: 23505, naming the index');
SELECT throws_ok($$SELECT stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "logs", "idempotency_key": "k-in-batch"},
          {"deployment_hash": "dep-bt", "command_type": "restart", "idempotency_key": "k-in-batch"}
      ]')$$,
    '23505', NULL, 'the same key twice in one batch with another type: 23505');
SELECT throws_ok($$SELECT stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-x2"},
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-1"}
      ]')$$,
    '23505', 'invalid commands[1]: command_id ''bt-1'' already exists (or appears earlier in the batch)',
    'an existing command_id: 23505, naming the index');
SELECT throws_ok($$SELECT stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-dup"},
          {"deployment_hash": "dep-bt", "command_type": "restart", "command_id": "bt-dup", "parameters": {"force": true}}
      ]')$$,
    '23505', 'invalid commands[1]: command_id ''bt-dup'' already exists (or appears earlier in the batch)',
    'the same command_id twice in one batch: 23505, naming the second element');
SELECT results_eq(
    $$SELECT command_id::text, type::text FROM stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "logs", "command_id": "bt-same", "idempotency_key": "same"},
          {"deployment_hash": "dep-bt", "command_type": "logs", "command_id": "bt-same", "idempotency_key": "same"}
      ]')$$,
    $$VALUES ('bt-same', 'logs'), ('bt-same', 'logs')$$,
    'the same command_id twice with the same key, type and parameters is one command (a retried element)');
SELECT results_eq(
    $$SELECT command_id::text, type::text FROM stacker.create_commands('[
          {"deployment_hash": "dep-bt", "command_type": "deploy", "command_id": "bt-y", "idempotency_key": "deploy-1"},
          {"deployment_hash": "dep-bt", "command_type": "health", "command_id": "bt-y"}
      ]')$$,
    $$VALUES ('bt-s', 'deploy'), ('bt-y', 'health')$$,
    'a command_id whose first element resolved to an existing command by its key is free for a later element');
SELECT throws_ok(
    $$SELECT stacker.create_commands((SELECT jsonb_agg('{"deployment_hash": "d", "command_type": "h"}'::jsonb)
                                        FROM generate_series(1, 10001)))$$,
    '22023', 'invalid commands: 10001 elements; a batch holds 1 to 10000', 'a batch over 10000 elements: 22023');
SELECT is_empty($$SELECT * FROM stacker.commands WHERE command_id IN ('bt-x1', 'bt-x2', 'bt-dup')
                   OR idempotency_key = 'k-in-batch'$$,
                'the rejected batches created nothing');

SELECT results_eq($$SELECT timeout_seconds, max_attempts FROM stacker.create_commands('[{"deployment_hash": "dep-decimal", "command_type": "health", "timeout_seconds": 2.0, "max_attempts": 4.0}]')$$,
                  $$VALUES (2, 4)$$, 'integral numbers written with a decimal point are accepted');
SELECT * FROM finish();
ROLLBACK;
