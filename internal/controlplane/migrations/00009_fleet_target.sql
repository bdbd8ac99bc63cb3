-- The fleet's target version: the version every instance migrates tenants
-- to. One row. version NULL: no pin, the target is each release's latest
-- version. An operator pins it lower to hold the fleet back (and a rollback
-- pins it to the version it rolls back to, so that no instance re-applies
-- what it undoes). generation counts the changes; a fleet scan queued for a
-- change carries it, so one per change runs.
--
-- Every change notifies the tenants channel with the payload '#target', which
-- no tenant id can be (ids start with a letter or digit): listeners re-read
-- the row, and releases that predate the pin drop a cache entry that does not
-- exist.

-- +goose Up
CREATE TABLE tenantmigrate.fleet_target (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT fleet_target_one_row CHECK (id),
    version bigint NULL CONSTRAINT fleet_target_version_not_negative CHECK (version >= 0),
    generation bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenantmigrate.fleet_target (id) VALUES (true);

-- +goose StatementBegin
CREATE FUNCTION tenantmigrate.notify_fleet_target_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenantmigrate_tenant_changed', '#target');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER fleet_target_notify
    AFTER UPDATE ON tenantmigrate.fleet_target
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION tenantmigrate.notify_fleet_target_changed();

-- +goose Down
DROP TABLE tenantmigrate.fleet_target;
DROP FUNCTION tenantmigrate.notify_fleet_target_changed();
