{% import 'sql/_macros.sql' as m %}
CREATE OR REPLACE FUNCTION {{ schema }}.get_command(p_command_id text)
RETURNS {{ schema }}.commands
LANGUAGE plpgsql STABLE
{{ m.definer() }}
AS $function$
DECLARE
    v_command {{ schema }}.commands;
BEGIN
    {{ m.check_text('p_command_id', 'command_id', 64) }}
    SELECT c.* INTO v_command FROM {{ schema }}.commands c WHERE c.command_id = p_command_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = pg_catalog.format('command %s does not exist', {{ m.show('p_command_id') }});
    END IF;
    RETURN v_command;
END
$function$;

COMMENT ON FUNCTION {{ schema }}.get_command(text) IS
'Returns one command by its command_id. Errors: 22023 invalid argument, P0002 unknown command.';
REVOKE ALL ON FUNCTION {{ schema }}.get_command(text) FROM PUBLIC;
