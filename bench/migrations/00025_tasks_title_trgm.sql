-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
-- +goose NO TRANSACTION

-- +goose Up
-- A failed CONCURRENTLY build leaves an INVALID index behind: drop it first so
-- that a retried run builds a valid one.
DROP INDEX CONCURRENTLY IF EXISTS app.tasks_title_trgm_idx;
CREATE INDEX CONCURRENTLY tasks_title_trgm_idx ON app.tasks USING gin (title gin_trgm_ops);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS app.tasks_title_trgm_idx;
