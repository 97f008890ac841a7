{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.purge_audit_log(p_older_than interval)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_deleted bigint;
    v_fits boolean;
BEGIN
    -- An interval reaching back past the first representable timestamp (e.g.
    -- '10000 years') cannot be subtracted from now(): 22023 naming it, not 22008.
    BEGIN
        v_fits := pg_catalog.isfinite(now() - p_older_than);
    EXCEPTION WHEN datetime_field_overflow THEN
        v_fits := false;
    END;
    IF p_older_than IS NULL OR p_older_than < interval '1 day' OR NOT v_fits THEN
        {{ m.invalid('older_than', 'p_older_than', 'must be an interval of at least 1 day') }};
    END IF;
    -- The deliberate retention path: the append-only trigger lets through only
    -- the DELETE below (it finds this function on the call stack), and the
    -- AFTER DELETE trigger records the purge itself in audit_log.
    {{ m.purge_statement(schema) }};
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.purge_audit_log(interval) IS
'The audit log''s retention path, the only way rows leave it: deletes audit rows older than p_older_than (at least 1 day) and records an audit.purged row with the count. Owner only by default. Errors: 22023 invalid interval.';
REVOKE ALL ON FUNCTION {{ schema }}.purge_audit_log(interval) FROM PUBLIC;
