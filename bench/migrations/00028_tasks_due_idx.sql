-- +goose NO TRANSACTION

-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS app.tasks_due_open_idx;
CREATE INDEX CONCURRENTLY tasks_due_open_idx ON app.tasks (due_at) WHERE status <> 'done';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS app.tasks_due_open_idx;
