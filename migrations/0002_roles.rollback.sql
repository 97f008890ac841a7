-- Undo 0002: take the roles' rights on this schema away. The roles themselves
-- stay: they are cluster-wide, may have existed before this install, may serve
-- other schemas or databases, and dropping one would silently end the
-- memberships a DBA granted to login roles.
REVOKE ALL ON ALL TABLES IN SCHEMA {{ schema }} FROM stacker_service, stacker_agent, stacker_readonly;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{ schema }} FROM stacker_service, stacker_agent, stacker_readonly;
REVOKE ALL ON SCHEMA {{ schema }} FROM stacker_service, stacker_agent, stacker_readonly;
