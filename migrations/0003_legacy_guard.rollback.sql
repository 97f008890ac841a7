-- Undo 0003: drop the old binary's policies and turn row-level security off
-- again (adopt turned it on). The role stacker_legacy stays, like the roles of
-- 0002: it is cluster-wide and may carry memberships a DBA granted.
ALTER TABLE {{ schema }}.command_queue NO FORCE ROW LEVEL SECURITY;
ALTER TABLE {{ schema }}.command_queue DISABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS command_queue_legacy_claimable ON {{ schema }}.command_queue;
DROP POLICY IF EXISTS command_queue_all ON {{ schema }}.command_queue;
