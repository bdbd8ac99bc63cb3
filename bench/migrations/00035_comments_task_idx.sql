-- +goose NO TRANSACTION

-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS app.comments_task_id_idx;
CREATE INDEX CONCURRENTLY comments_task_id_idx ON app.comments (task_id, created_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS app.comments_task_id_idx;
