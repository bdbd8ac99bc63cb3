-- +goose Up
REFRESH MATERIALIZED VIEW reporting.user_workload;
ANALYZE app.tasks;
ANALYZE app.comments;

-- +goose Down
SELECT 1;
