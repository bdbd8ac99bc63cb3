-- labels are a tenant's string-to-string map (internal/labels: keys of 1-63
-- characters of [a-z0-9_.-/], values of at most 255 characters, at most 32
-- labels; validated by the Store). Selectors (labels.Selector.SQL) filter
-- with the jsonb operators @> (the k=v terms, as one object) and ? (k), which
-- the GIN index answers (jsonb_ops: jsonb_path_ops would not serve ?); the
-- negations (k!=v, !k) filter the rows those find. Adding the column with a
-- constant default rewrites no row (PostgreSQL 11+). Label changes are not
-- notified (notify_tenant_changed): no cache holds them.

-- +goose Up
ALTER TABLE tenantmigrate.tenants
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT tenants_labels_object CHECK (jsonb_typeof(labels) = 'object');
CREATE INDEX tenants_labels_idx ON tenantmigrate.tenants USING gin (labels);

-- +goose Down
ALTER TABLE tenantmigrate.tenants DROP COLUMN labels;
