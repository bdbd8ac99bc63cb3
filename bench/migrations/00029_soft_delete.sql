-- +goose Up
ALTER TABLE app.projects ADD COLUMN deleted_at timestamptz;
ALTER TABLE app.tasks ADD COLUMN deleted_at timestamptz;
ALTER TABLE app.comments ADD COLUMN deleted_at timestamptz;
CREATE INDEX projects_live_idx ON app.projects (account_id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_live_project_idx ON app.tasks (project_id, number) WHERE deleted_at IS NULL;

-- +goose Down
DROP INDEX app.tasks_live_project_idx;
DROP INDEX app.projects_live_idx;
ALTER TABLE app.comments DROP COLUMN deleted_at;
ALTER TABLE app.tasks DROP COLUMN deleted_at;
ALTER TABLE app.projects DROP COLUMN deleted_at;
