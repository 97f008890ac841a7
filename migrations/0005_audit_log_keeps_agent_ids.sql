-- stacker-queue 0005: audit_log keeps the agent ids it recorded.
--
-- Stacker's audit_log.agent_id referenced agents(id) ON DELETE SET NULL. For an
-- append-only record that was the wrong tool: deleting an agent rewrote its
-- history (agent_id blanked), every audit row of a claim or report paid a
-- foreign-key check (about a third of the audit's cost, docs/benchmarks.md),
-- and that check's FOR KEY SHARE lock was the one row lock a claim could wait
-- for (an agent row held FOR UPDATE). agent_id stays, as a plain recorded value.
ALTER TABLE {{ schema }}.audit_log DROP CONSTRAINT IF EXISTS audit_log_agent_id_fkey;
