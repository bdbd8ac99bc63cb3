-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block. It also
-- waits for the transactions of every other schema of the database that
-- started before it: schema tenants share one database.
-- +goose NO TRANSACTION

-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS tasks_due_open_idx;
CREATE INDEX CONCURRENTLY tasks_due_open_idx ON tasks (due_at) WHERE status <> 'done';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS tasks_due_open_idx;
