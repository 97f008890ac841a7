{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}._audit_log_purged()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
{{ m.definer() }}
AS $function$
DECLARE
    v_count bigint;
    v_oldest timestamptz;
    v_newest timestamptz;
BEGIN
    SELECT count(*), min(o.created_at), max(o.created_at)
      INTO v_count, v_oldest, v_newest
      FROM old_rows o;
    IF v_count > 0 THEN
        INSERT INTO {{ schema }}.audit_log (action, details, actor)
        VALUES ('audit.purged',
                pg_catalog.jsonb_build_object('rows', v_count, 'oldest', v_oldest, 'newest', v_newest),
                {{ m.actor() }});
    END IF;
    RETURN NULL;
END
$function$;

COMMENT ON FUNCTION {{ schema }}._audit_log_purged() IS
'Trigger _900_audit_purge on audit_log (AFTER DELETE, statement): every removal of audit rows, which only the retention path can do, leaves an audit.purged row with the count and the time range removed.';
REVOKE ALL ON FUNCTION {{ schema }}._audit_log_purged() FROM PUBLIC;
