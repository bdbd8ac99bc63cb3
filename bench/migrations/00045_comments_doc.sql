-- +goose Up
COMMENT ON SCHEMA app IS 'Application tables of one tenant';
COMMENT ON SCHEMA audit IS 'Append-only change log';
COMMENT ON TABLE app.tasks IS 'Work items; numbered per project';
COMMENT ON COLUMN app.tasks.search IS 'Maintained by tasks_search_update';
COMMENT ON COLUMN app.projects.open_task_count IS 'Maintained by tasks_open_task_count';
COMMENT ON FUNCTION app.has_permission(bigint, text) IS 'Role-based permission check';

-- +goose Down
COMMENT ON SCHEMA app IS NULL;
