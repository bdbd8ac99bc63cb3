-- The checksum of every tenant migration version, as first applied to any
-- tenant. At start, tenantmigrate compares them with its migration source and
-- refuses to run when an applied file was edited or removed (see
-- Config.AllowChangedMigrations). Rows are never updated: the first record of
-- a version wins (INSERT ... ON CONFLICT DO NOTHING).

-- +goose Up
CREATE TABLE tenantmigrate.migration_checksums (
    version bigint PRIMARY KEY,
    -- File name of a SQL migration, "go migration N" for a Go migration.
    name text NOT NULL,
    -- "sha256:<hex>" of the file's bytes; "go" for a Go migration (not hashed).
    checksum text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE tenantmigrate.migration_checksums;
