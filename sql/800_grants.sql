-- Object privileges of the contract's roles. Re-applied whenever a function,
-- view or migration changed, so new objects never keep PostgreSQL's default
-- EXECUTE for PUBLIC (every function file also revokes it itself). Only this
-- package's tables, view and functions: the schema may be shared with other
-- objects (Stacker's public schema after stacker-queue adopt, extensions),
-- whose privileges are not ours to change.
REVOKE ALL ON {{ schema }}.commands, {{ schema }}.command_queue, {{ schema }}.agents,
              {{ schema }}.app_status, {{ schema }}.audit_log, {{ schema }}.schema_repeatables,
              {{ schema }}.queue_stats
  FROM PUBLIC, stacker_service, stacker_agent, stacker_readonly;
DO $revoke$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = {{ schema_literal }}
           AND p.proname = ANY ({{ function_names }})
    LOOP
        EXECUTE pg_catalog.format(
            'REVOKE ALL ON FUNCTION %s FROM PUBLIC, stacker_service, stacker_agent, stacker_readonly',
            v_function);
    END LOOP;
END
$revoke$;

-- stacker_readonly: SELECT on the tables and views, nothing else.
GRANT SELECT ON {{ schema }}.commands, {{ schema }}.command_queue, {{ schema }}.agents,
                {{ schema }}.app_status, {{ schema }}.audit_log, {{ schema }}.queue_stats
   TO stacker_readonly;

-- stacker_service: create, cancel, read, app status.
GRANT SELECT ON {{ schema }}.commands, {{ schema }}.command_queue, {{ schema }}.agents,
                {{ schema }}.app_status, {{ schema }}.audit_log, {{ schema }}.queue_stats
   TO stacker_service;
GRANT EXECUTE ON FUNCTION
    {{ schema }}.create_command(text, text, jsonb, text, text, text, integer, timestamptz, integer, text, jsonb),
    {{ schema }}.create_commands(jsonb),
    {{ schema }}.cancel_command(text, text, text),
    {{ schema }}.get_command(text),
    {{ schema }}.list_commands(text, text, integer),
    {{ schema }}.get_app_status(text),
    {{ schema }}.update_app_status(text, text, text, jsonb, timestamptz, text)
   TO stacker_service;

-- stacker_agent: register, claim, start, extend, report, update_app_status.
GRANT EXECUTE ON FUNCTION
    {{ schema }}.register_agent(text, uuid, text, jsonb, jsonb),
    {{ schema }}.claim_commands(text, uuid, integer, integer),
    {{ schema }}.start_command(text, uuid),
    {{ schema }}.extend_lease(text, uuid, integer),
    {{ schema }}.report_result(text, uuid, text, jsonb, jsonb),
    {{ schema }}.report_results(uuid, jsonb),
    {{ schema }}.update_app_status(text, text, text, jsonb, timestamptz, text)
   TO stacker_agent;
