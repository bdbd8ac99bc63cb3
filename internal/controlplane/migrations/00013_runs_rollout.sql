-- The runs of one rollout (History.RolloutMoved: a rollback of exactly the
-- tenants a rollout moved), without reading the whole history.

-- +goose Up
CREATE INDEX runs_rollout_idx ON tenantmigrate.runs (rollout_id, tenant_id, started_at, id)
    WHERE rollout_id IS NOT NULL;

-- +goose Down
DROP INDEX tenantmigrate.runs_rollout_idx;
