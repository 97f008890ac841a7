-- stacker-queue 0004: HOT claims on command_queue (issue 6, docs/benchmarks.md).
--
-- A claim rewrites its queue row's visible_at and lease_expires_at. The partial
-- index on lease_expires_at made every such update a non-HOT one: a new entry in
-- each of the table's four indexes per claim, and as many dead ones for vacuum.
-- Without it no indexed column of command_queue changes after the insert, so the
-- claim's update is HOT (fillfactor 70 leaves room on the page) and the indexes
-- only see the insert and the delete. The lease sweep (requeue_expired) reads the
-- queue table itself, which holds only pending commands; claims never used the
-- index (they find expired leases through the claim index, by deployment).
DROP INDEX IF EXISTS {{ schema }}.command_queue_lease_idx;

-- agents: a heartbeat rewrites last_heartbeat and status (no indexed column) at
-- most once a second per agent; room on the page keeps those updates HOT too.
ALTER TABLE {{ schema }}.agents SET (fillfactor = 70);
