-- The run history: one row per run of the migrator on one tenant, whatever
-- triggered it (internal/history writes, reads and prunes it; the one
-- executor, internal/run, writes a row per Migrate call). Rows are inserted
-- once, when the run ends, and never updated; they are deleted by age
-- (Config.History.Retention) in bounded batches.
--
-- tenant_id has no foreign key: a row is written in one INSERT with no
-- lookup or lock of the tenant row, and the history of a tenant removed
-- meanwhile stays until it ages out.

-- +goose Up
CREATE TABLE tenantmigrate.runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL,
    -- The rollout the run counted toward; NULL: none.
    rollout_id text NULL,
    -- Recorded version before the run; NULL: never migrated.
    from_version bigint NULL,
    -- The tenant database's version after the run; NULL: unknown (a failed
    -- run that could not read it).
    to_version bigint NULL,
    direction text NOT NULL DEFAULT 'up'
        CONSTRAINT runs_direction CHECK (direction IN ('up', 'down', 'force')),
    result text NOT NULL
        CONSTRAINT runs_result CHECK (result IN ('completed', 'failed', 'interrupted')),
    -- Passwords masked, at most 2000 characters.
    error text NULL,
    attempt integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    -- "host:pid" or an instance id.
    process text NOT NULL,
    trigger text NOT NULL
);

-- A tenant's runs, newest first, paged by (started_at, id): History.List.
CREATE INDEX runs_tenant_started_idx ON tenantmigrate.runs (tenant_id, started_at DESC, id DESC);

-- Pruning by age: one probe when nothing is old enough.
CREATE INDEX runs_started_idx ON tenantmigrate.runs (started_at);

-- The fleet's recent per-tenant durations (History.Durations): the latest
-- runs that applied migrations, read backwards without stepping over the
-- runs that applied nothing or failed, however many there are.
CREATE INDEX runs_applied_started_idx ON tenantmigrate.runs (started_at)
    WHERE result = 'completed' AND direction = 'up' AND to_version IS DISTINCT FROM from_version;

-- +goose Down
DROP TABLE tenantmigrate.runs;
