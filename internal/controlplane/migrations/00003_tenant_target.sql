-- A tenant's migration state describes one target: one database URL and
-- schema. target_seq names that target. It changes whenever the URL or the
-- schema changes (Store.Patch and Store.Upsert draw a new value and clear the
-- state), and a tenant removed and registered again gets a new one from the
-- sequence, never the old value. A run records its result only while
-- target_seq is still the one it read before it started (RecordSuccess,
-- RecordFailure), so a late result never lands on another target.

-- +goose Up
CREATE SEQUENCE tenantmigrate.tenant_target_seq;
ALTER TABLE tenantmigrate.tenants
    ADD COLUMN target_seq bigint NOT NULL DEFAULT nextval('tenantmigrate.tenant_target_seq');
ALTER SEQUENCE tenantmigrate.tenant_target_seq OWNED BY tenantmigrate.tenants.target_seq;

-- +goose Down
ALTER TABLE tenantmigrate.tenants DROP COLUMN target_seq;
