{#- Shared jinja2 macros for stacker-queue SQL. Files starting with "_" are not
    applied themselves; templates import them with
    {% import 'sql/_macros.sql' as m %}. -#}

{#- The actor named in audit rows and created_by: the transaction's
    stacker.actor setting when set and not empty, else the login role. -#}
{% macro actor() -%}
coalesce(nullif(pg_catalog.current_setting('stacker.actor', true), ''), session_user::text)
{%- endmacro %}

{% macro pending_statuses() -%}
('queued', 'sent', 'executing')
{%- endmacro %}

{% macro in_flight_statuses() -%}
('sent', 'executing')
{%- endmacro %}

{% macro terminal_statuses() -%}
('completed', 'failed', 'cancelled')
{%- endmacro %}

{#- Priority word -> command_queue.priority integer (Stacker's mapping). -#}
{% macro priority_rank(expr) -%}
CASE {{ expr }} WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'normal' THEN 1 ELSE 0 END
{%- endmacro %}

{#- A command's command_queue row, derived from the command (row alias r):
    visible_at is when it may next be claimed (its schedule, or -infinity,
    while queued; its lease end while in flight), lease_expires_at is NULL while
    queued. -#}
{% macro queue_visible_at(r) -%}
CASE WHEN {{ r }}.status = 'queued' THEN coalesce({{ r }}.scheduled_for, '-infinity')
     ELSE coalesce({{ r }}.lease_expires_at, 'infinity') END
{%- endmacro %}

{% macro queue_lease(r) -%}
CASE WHEN {{ r }}.status <> 'queued' THEN {{ r }}.lease_expires_at END
{%- endmacro %}

{#- Fail the in-flight commands listed in the text[] variable ids whose lease
    ran out on their last attempt (claim_commands and requeue_expired). -#}
{% macro fail_exhausted(schema, ids) -%}
UPDATE {{ schema }}.commands c
   SET status = 'failed',
       error = pg_catalog.jsonb_build_object('reason', 'lease_expired', 'attempts', c.attempts),
       completed_at = now(),
       lease_expires_at = NULL,
       updated_at = now()
 WHERE c.command_id = ANY ({{ ids }})
{%- endmacro %}

{#- The commands named by the text[] variable ids, in the array's order (a
    batch function's answer). The extra = ANY keeps the lookup an index scan
    whatever the table's statistics (a join to unnest alone may be planned as a
    sequential scan of commands). -#}
{% macro commands_in_order(schema, ids) -%}
SELECT c.*
  FROM pg_catalog.unnest({{ ids }}) WITH ORDINALITY AS i(command_id, ord)
  JOIN {{ schema }}.commands c ON c.command_id = i.command_id
 WHERE c.command_id = ANY ({{ ids }})
 ORDER BY i.ord
{%- endmacro %}

{#- Function header lines every stored function shares: SECURITY DEFINER with
    a pinned search_path, and enable_seqscan off so that the statements inside
    are planned onto their indexes whatever the tables' statistics say. Without
    it a fresh install (empty tables, never analyzed, or autovacuum off) caches
    sequential-scan plans in every pooled session and each claim or report then
    reads the whole commands table. Where no index fits, PostgreSQL still scans.
    plan_cache_mode = force_generic_plan: each statement is planned once per
    session, not at every call. Left to choose, PostgreSQL kept re-planning the
    claim's statements and the triggers' at every call (their custom plans look
    cheaper than the generic one), 17 % of a claim's time; with the index plans
    pinned above, the generic plan is the plan a custom one would be. -#}
{% macro definer() -%}
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
{%- endmacro %}

{#- An argument shown in an error message: quoted, NULL, or cut short when long. -#}
{% macro show(expr) -%}
CASE WHEN ({{ expr }}) IS NULL THEN 'NULL'
     WHEN pg_catalog.length(({{ expr }})::text) > 64
     THEN pg_catalog.quote_literal(pg_catalog.left(({{ expr }})::text, 48) || '...')
          || pg_catalog.format(' (%s characters)', pg_catalog.length(({{ expr }})::text))
     ELSE pg_catalog.quote_literal(({{ expr }})::text) END
{%- endmacro %}

{#- RAISE invalid_parameter_value (22023) with a message naming the value. -#}
{% macro invalid(label, expr, must) -%}
RAISE EXCEPTION USING ERRCODE = '22023',
    MESSAGE = pg_catalog.format('invalid {{ label }} %s: {{ must }}', {{ show(expr) }})
{%- endmacro %}

{#- A required text argument of 1..max_len characters. -#}
{% macro check_text(var, label, max_len) -%}
IF {{ var }} IS NULL OR {{ var }} = '' OR pg_catalog.length({{ var }}) > {{ max_len }} THEN
    {{ invalid(label, var, 'must be 1 to ' ~ max_len ~ ' characters') }};
END IF;
{%- endmacro %}

{#- An optional text argument: NULL, or 1..max_len characters. -#}
{% macro check_optional_text(var, label, max_len) -%}
IF {{ var }} IS NOT NULL AND ({{ var }} = '' OR pg_catalog.length({{ var }}) > {{ max_len }}) THEN
    {{ invalid(label, var, 'must be NULL or 1 to ' ~ max_len ~ ' characters') }};
END IF;
{%- endmacro %}

{#- A required positive integer no larger than max_value. -#}
{% macro check_positive(var, label, max_value) -%}
IF {{ var }} IS NULL OR {{ var }} < 1 OR {{ var }} > {{ max_value }} THEN
    {{ invalid(label, var, 'must be an integer from 1 to ' ~ max_value) }};
END IF;
{%- endmacro %}

{#- A required JSON value of one type ('object' or 'array'). -#}
{#- A batch argument: a JSON array of 1 to max_len elements (of what). Its
    length goes into count_var. -#}
{% macro check_batch(var, label, what, max_len, count_var) -%}
IF {{ var }} IS NULL OR pg_catalog.jsonb_typeof({{ var }}) <> 'array' THEN
    {{ invalid(label, var, 'must be a JSON array of ' ~ what) }};
END IF;
{{ count_var }} := pg_catalog.jsonb_array_length({{ var }});
IF {{ count_var }} < 1 OR {{ count_var }} > {{ max_len }} THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = pg_catalog.format('invalid {{ label }}: %s elements; a batch holds 1 to {{ max_len }}', {{ count_var }});
END IF;
{%- endmacro %}

{% macro check_json(var, label, json_type) -%}
IF {{ var }} IS NULL OR pg_catalog.jsonb_typeof({{ var }}) <> '{{ json_type }}' THEN
    {{ invalid(label, var, 'must be a JSON ' ~ json_type) }};
END IF;
{%- endmacro %}

{#- The one statement through which rows leave audit_log: purge_audit_log runs
    it, and the append-only trigger recognises it, verbatim, on the call stack. -#}
{% macro purge_statement(schema) -%}
DELETE FROM {{ schema }}.audit_log a WHERE a.created_at < now() - p_older_than
{%- endmacro %}

{#- Largest lease or timeout accepted, in seconds (one week). -#}
{% macro max_lease_seconds() %}604800{% endmacro %}
