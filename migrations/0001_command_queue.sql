-- stacker-queue 0001: the command pipeline's tables.
-- The tables keep Stacker's columns (and their order) so that Stacker's own
-- statements keep working; the columns after "metadata" (commands), after
-- "updated_at" (agents) and after "created_at" (audit_log, command_queue) are ours.

CREATE TABLE {{ schema }}.commands (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    command_id varchar(64) NOT NULL,
    deployment_hash varchar(128) NOT NULL,
    type varchar(100) NOT NULL,
    status varchar(50) NOT NULL DEFAULT 'queued',
    priority varchar(20) NOT NULL DEFAULT 'normal',
    parameters jsonb DEFAULT '{}'::jsonb,
    result jsonb,
    error jsonb,
    created_by varchar(255) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    scheduled_for timestamptz,
    sent_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    timeout_seconds integer DEFAULT 300,
    metadata jsonb DEFAULT '{}'::jsonb,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    idempotency_key varchar(255),
    agent_id uuid,
    lease_expires_at timestamptz,
    CONSTRAINT commands_pkey PRIMARY KEY (id),
    CONSTRAINT commands_command_id_key UNIQUE (command_id),
    CONSTRAINT commands_idempotency_key_key UNIQUE (deployment_hash, idempotency_key),
    CONSTRAINT commands_status_check CHECK (
        status IN ('queued', 'sent', 'executing', 'completed', 'failed', 'cancelled')),
    CONSTRAINT commands_priority_check CHECK (priority IN ('low', 'normal', 'high', 'critical')),
    CONSTRAINT commands_command_id_check CHECK (command_id <> ''),
    CONSTRAINT commands_deployment_hash_check CHECK (deployment_hash <> ''),
    CONSTRAINT commands_type_check CHECK (type <> ''),
    CONSTRAINT commands_parameters_check CHECK (jsonb_typeof(parameters) = 'object'),
    CONSTRAINT commands_timeout_seconds_check CHECK (timeout_seconds > 0),
    CONSTRAINT commands_attempts_check CHECK (attempts >= 0),
    CONSTRAINT commands_max_attempts_check CHECK (max_attempts >= 1)
) WITH (fillfactor = 80);

-- Listing a deployment's commands, newest first; the panel's pending health lookup.
CREATE INDEX commands_deployment_created_idx
    ON {{ schema }}.commands (deployment_hash, created_at DESC);
-- Retention deletes by age; BRIN costs next to nothing on an append-ordered column
-- and, unlike a status-filtered btree, keeps status updates HOT.
CREATE INDEX commands_created_at_brin
    ON {{ schema }}.commands USING brin (created_at);

CREATE TABLE {{ schema }}.command_queue (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    command_id varchar(64) NOT NULL,
    deployment_hash varchar(128) NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    visible_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    CONSTRAINT command_queue_pkey PRIMARY KEY (id),
    CONSTRAINT command_queue_command_id_key UNIQUE (command_id),
    CONSTRAINT command_queue_command_id_fkey FOREIGN KEY (command_id)
        REFERENCES {{ schema }}.commands (command_id) ON DELETE CASCADE,
    CONSTRAINT command_queue_priority_check CHECK (priority BETWEEN 0 AND 3)
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim path: a deployment's rows in priority, then age order.
CREATE INDEX command_queue_claim_idx
    ON {{ schema }}.command_queue (deployment_hash, priority DESC, created_at);
-- The lease sweep: in-flight rows by lease end.
CREATE INDEX command_queue_lease_idx
    ON {{ schema }}.command_queue (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE TABLE {{ schema }}.agents (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    deployment_hash varchar(128) NOT NULL,
    capabilities jsonb DEFAULT '[]'::jsonb,
    version varchar(50),
    system_info jsonb DEFAULT '{}'::jsonb,
    last_heartbeat timestamptz,
    status varchar(50) DEFAULT 'offline',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    registered_at timestamptz,
    CONSTRAINT agents_pkey PRIMARY KEY (id),
    CONSTRAINT agents_deployment_hash_key UNIQUE (deployment_hash),
    CONSTRAINT agents_status_check CHECK (status IN ('online', 'offline', 'degraded')),
    CONSTRAINT agents_deployment_hash_check CHECK (deployment_hash <> '')
);

CREATE TABLE {{ schema }}.app_status (
    deployment_hash varchar(128) NOT NULL,
    app_code varchar(255) NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'unknown',
    logs jsonb NOT NULL DEFAULT '[]'::jsonb,
    checked_at timestamptz NOT NULL DEFAULT now(),
    command_id varchar(64),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT app_status_pkey PRIMARY KEY (deployment_hash, app_code),
    CONSTRAINT app_status_command_id_fkey FOREIGN KEY (command_id)
        REFERENCES {{ schema }}.commands (command_id) ON DELETE SET NULL,
    CONSTRAINT app_status_status_check CHECK (status IN ('running', 'stopped', 'error', 'unknown')),
    CONSTRAINT app_status_logs_check CHECK (jsonb_typeof(logs) = 'array'),
    CONSTRAINT app_status_deployment_hash_check CHECK (deployment_hash <> ''),
    CONSTRAINT app_status_app_code_check CHECK (app_code <> '')
);

CREATE TABLE {{ schema }}.audit_log (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    agent_id uuid,
    deployment_hash varchar(128),
    action varchar(100) NOT NULL,
    status varchar(50),
    details jsonb DEFAULT '{}'::jsonb,
    ip_address inet,
    user_agent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    actor text,
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_agent_id_fkey FOREIGN KEY (agent_id)
        REFERENCES {{ schema }}.agents (id) ON DELETE SET NULL
);

CREATE INDEX audit_log_deployment_created_idx
    ON {{ schema }}.audit_log (deployment_hash, created_at);
CREATE INDEX audit_log_created_at_brin
    ON {{ schema }}.audit_log USING brin (created_at);

-- Flyway-style "repeatable" bookkeeping: the sha256 of each function and sql/
-- file as last applied, so migrate re-applies only what changed.
CREATE TABLE {{ schema }}.schema_repeatables (
    name text NOT NULL,
    kind text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_repeatables_pkey PRIMARY KEY (kind, name),
    CONSTRAINT schema_repeatables_kind_check CHECK (kind IN ('function', 'sql'))
);
