ALTER TABLE {{ schema }}.agents RESET (fillfactor);
CREATE INDEX IF NOT EXISTS command_queue_lease_idx
    ON {{ schema }}.command_queue (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
