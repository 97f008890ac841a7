-- Undo 0005: the foreign key comes back. Rows that name an agent deleted since
-- cannot be changed (audit_log is append-only), so the constraint is added NOT
-- VALID and validated only when every row still matches an agent.
ALTER TABLE {{ schema }}.audit_log
    ADD CONSTRAINT audit_log_agent_id_fkey FOREIGN KEY (agent_id)
    REFERENCES {{ schema }}.agents (id) ON DELETE SET NULL NOT VALID;
DO $validate$
BEGIN
    IF NOT EXISTS (SELECT FROM {{ schema }}.audit_log l
                    WHERE l.agent_id IS NOT NULL
                      AND NOT EXISTS (SELECT FROM {{ schema }}.agents a WHERE a.id = l.agent_id)) THEN
        ALTER TABLE {{ schema }}.audit_log VALIDATE CONSTRAINT audit_log_agent_id_fkey;
    END IF;
END
$validate$;
