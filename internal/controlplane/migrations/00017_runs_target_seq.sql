-- The target (tenants.target_seq) a run ran on, so that a rollback of a
-- rollout (History.RolloutMoved) takes only the tenants whose current target
-- the rollout moved, not a tenant registered again (or moved to another
-- database or schema) since. NULL: unknown (rows written before this column,
-- provisioning rows).

-- +goose Up
ALTER TABLE tenantmigrate.runs ADD COLUMN target_seq bigint NULL;

-- +goose Down
ALTER TABLE tenantmigrate.runs DROP COLUMN target_seq;
