-- stacker-queue 0002: the three NOLOGIN roles of the contract, created when
-- missing (roles are cluster-wide: another schema or database may share them),
-- and their USAGE on this schema. Object privileges are in sql/800_grants.sql.
DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['stacker_service', 'stacker_agent', 'stacker_readonly'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA {{ schema }} TO stacker_service, stacker_agent, stacker_readonly;
