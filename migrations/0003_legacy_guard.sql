-- stacker-queue 0003: the guard that lets Stacker's old binary keep running on
-- an adopted database (stacker-queue adopt, docs/adopting-stacker.md).
--
-- Stacker's fetch-next SELECT joins commands and command_queue with no status
-- filter, ORDER BY q.priority DESC, q.created_at LIMIT 1. The contract keeps a
-- queue row while its command is sent or executing (with a lease), so that
-- SELECT would return an in-flight command forever. The RESTRICTIVE policy
-- below shows the members of stacker_legacy (adopt grants it to the old
-- binary's role) only the rows a claim could take: queued and due, or in
-- flight with an expired lease and attempts left. Everyone else, the stored
-- functions' owner included, sees every row (the PERMISSIVE policy).
--
-- The policies exist on every install so that an adopted catalog equals a
-- fresh one, but they do nothing until row-level security is enabled on
-- command_queue, which only adopt does (ENABLE and FORCE, since the old
-- binary's role usually owns the table).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'stacker_legacy') THEN
        CREATE ROLE stacker_legacy NOLOGIN;
    END IF;
END
$roles$;

CREATE POLICY command_queue_all ON {{ schema }}.command_queue
    AS PERMISSIVE FOR ALL TO PUBLIC
    USING (true) WITH CHECK (true);

CREATE POLICY command_queue_legacy_claimable ON {{ schema }}.command_queue
    AS RESTRICTIVE FOR SELECT TO stacker_legacy
    USING (visible_at <= now()
           AND (lease_expires_at IS NULL
                OR EXISTS (SELECT FROM {{ schema }}.commands c
                            WHERE c.command_id = command_queue.command_id
                              AND c.attempts < c.max_attempts)));

COMMENT ON POLICY command_queue_all ON {{ schema }}.command_queue IS
'Every role sees and writes every row (row-level security is off unless stacker-queue adopt turned it on).';
COMMENT ON POLICY command_queue_legacy_claimable ON {{ schema }}.command_queue IS
'Members of stacker_legacy (Stacker''s old binary after adoption) see only claimable rows: queued and due, or in flight with an expired lease and attempts left. Its fetch-next SELECT has no status filter and would otherwise hand out in-flight commands again.';
