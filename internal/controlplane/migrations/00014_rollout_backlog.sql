-- The later waves of a rollout still to be inserted into rollout_tenants
-- (internal/rollouts: Store.Ensure writes the row, Store.Fill consumes it).
--
-- Ordering a million tenants into rollout_tenants takes ~18 s, and a
-- rollout's first job should start within a second. So the transaction that
-- creates a rollout inserts only its head (the canary wave and the start of
-- the first wave after it, in order) and records here, in the same snapshot,
-- the ids of every other member: the non-canary tenants behind at creation.
-- The membership is thereby fixed once, in that snapshot, and the order is a
-- pure function of the ids (md5 of the id, then the id), so the rows Fill
-- inserts later, by whichever process, are exactly those the single
-- transaction used to insert, at the same positions, whatever happened to
-- the tenants in between (migrated, added, relabelled, deleted).
--
-- The row is also the marker that the rollout's later waves are not all in
-- rollout_tenants yet: Store.Step does not pass or complete a wave that ends
-- beyond head while it exists, and AddLate adds no late tenants. Fill
-- deletes it in the transaction that inserts the rows, so a reader sees
-- either the marker or the rows, never neither.
--
-- The lease of the inserter is the row lock: Fill locks the row (FOR UPDATE
-- SKIP LOCKED) for the whole insert, so at most one process inserts, and
-- when that process dies its session, its transaction and the lock go, and
-- the next Fill (every feeder and migrate --all calls it) takes over.
--
-- tenant_ids is stored uncompressed (STORAGE EXTERNAL): about 20 MB at 1M
-- tenants, written faster than pglz compresses it. A value is at most 1 GB,
-- about 50M tenants.

-- +goose Up
CREATE TABLE tenantmigrate.rollout_backlog (
    rollout_id bigint PRIMARY KEY REFERENCES tenantmigrate.rollouts (id) ON DELETE CASCADE,
    -- Positions [0, head) are in rollout_tenants.
    head bigint NOT NULL,
    -- The number of canaries: the position of the first of tenant_ids in
    -- their order.
    canaries bigint NOT NULL,
    -- The non-canary members, unordered (their order is md5(id), id).
    tenant_ids text[] NOT NULL
);
ALTER TABLE tenantmigrate.rollout_backlog ALTER COLUMN tenant_ids SET STORAGE EXTERNAL;

-- +goose Down
DROP TABLE tenantmigrate.rollout_backlog;
