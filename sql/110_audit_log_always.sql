-- audit_log's guards fire whatever session_replication_role says: in the
-- default 'origin' mode triggers marked ENABLE fire, but a superuser session
-- that sets session_replication_role = replica (as DBAs do to bulk-fix data
-- without triggers and foreign keys) would otherwise UPDATE, DELETE or
-- TRUNCATE audit rows unchecked. ALWAYS triggers fire in every mode, so only
-- purge_audit_log removes rows, and every purge is recorded, in any mode.
--
-- A logical replication subscriber applies changes in replica mode; there the
-- apply worker's replay of a purge is refused. Publish audit_log with
-- publish = 'insert' (the audit.purged row then replicates, the deletions do
-- not), or run purge_audit_log on the subscriber too (docs/reliability.md).
-- This file follows 100_triggers.sql, whose CREATE OR REPLACE TRIGGER resets
-- the mode, and is re-applied whenever that file is.
ALTER TABLE {{ schema }}.audit_log ENABLE ALWAYS TRIGGER _100_append_only;
ALTER TABLE {{ schema }}.audit_log ENABLE ALWAYS TRIGGER _100_no_truncate;
ALTER TABLE {{ schema }}.audit_log ENABLE ALWAYS TRIGGER _900_audit_purge;
