-- The control-plane schema itself (tenantmigrate) is created by Migrate
-- before goose runs, because goose's version table lives in it.

-- +goose Up
CREATE TABLE tenantmigrate.tenants (
    -- Kept in sync with ValidateTenantID.
    id text PRIMARY KEY
        CONSTRAINT tenants_id_format CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    -- AES-256-GCM ciphertext (nonce | sealed) of the postgres:// URL.
    database_url bytea NOT NULL,
    -- NULL: the tenant has a whole database. Kept in sync with ValidateSchemaName.
    schema_name text NULL
        CONSTRAINT tenants_schema_name_format CHECK (
            schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'
            AND left(schema_name, 3) <> 'pg_'
            AND schema_name NOT IN ('information_schema', 'tenantmigrate')
        ),
    -- Last version known to be applied; NULL: never migrated.
    migrations_version bigint NULL,
    -- Outcome of the last run; NULL: never run.
    migrations_status text NULL
        CONSTRAINT tenants_migrations_status CHECK (migrations_status IN ('COMPLETED', 'FAILED', 'FAILED_STALE')),
    last_error text NULL,
    -- Stable order for paging with "cursor_id > $last ORDER BY cursor_id".
    cursor_id bigserial NOT NULL
        CONSTRAINT tenants_cursor_id_key UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- "Which tenants are behind version V": ScanBehind and CountBehind filter with
-- (migrations_version < $1 OR migrations_version IS NULL), which Postgres
-- answers with a BitmapOr of two scans of this index, so a fleet that is up to
-- date costs two empty index probes.
CREATE INDEX tenants_migrations_version_idx ON tenantmigrate.tenants (migrations_version);

-- ListFailed pages through failed tenants by cursor_id; failed tenants are few.
CREATE INDEX tenants_failed_cursor_idx ON tenantmigrate.tenants (cursor_id)
    WHERE migrations_status IN ('FAILED', 'FAILED_STALE');

-- Change events for caches of tenant state (Store.Listen). Notified:
--   * INSERT, so a cached "tenant not found" is dropped;
--   * DELETE;
--   * UPDATE that changes database_url, schema_name, migrations_version
--     (upwards or downwards) or migrations_status. Status transitions are
--     notified too because a cache that holds "FAILED" must learn about a later
--     success at the same version. Writes that leave those columns unchanged
--     (a repeated RecordSuccess, a new last_error text for a tenant already
--     FAILED) are not notified, so a fleet sweep that finds nothing to do sends
--     nothing.
--   * TRUNCATE, with an empty payload: anything may have changed.
-- NOTIFY is transactional: listeners hear about committed changes only, and
-- identical notifications of one transaction are delivered once.
-- +goose StatementBegin
CREATE FUNCTION tenantmigrate.notify_tenant_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('tenantmigrate_tenant_changed', '');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('tenantmigrate_tenant_changed', OLD.id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('tenantmigrate_tenant_changed', NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tenants_notify_insert_delete
    AFTER INSERT OR DELETE ON tenantmigrate.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantmigrate.notify_tenant_changed();

CREATE TRIGGER tenants_notify_update
    AFTER UPDATE ON tenantmigrate.tenants
    FOR EACH ROW
    WHEN (
        OLD.id IS DISTINCT FROM NEW.id
        OR OLD.database_url IS DISTINCT FROM NEW.database_url
        OR OLD.schema_name IS DISTINCT FROM NEW.schema_name
        OR OLD.migrations_version IS DISTINCT FROM NEW.migrations_version
        OR OLD.migrations_status IS DISTINCT FROM NEW.migrations_status
    )
    EXECUTE FUNCTION tenantmigrate.notify_tenant_changed();

CREATE TRIGGER tenants_notify_truncate
    AFTER TRUNCATE ON tenantmigrate.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.notify_tenant_changed();

-- +goose Down
DROP TABLE tenantmigrate.tenants;
DROP FUNCTION tenantmigrate.notify_tenant_changed();
