-- +goose Up
CREATE TYPE app.task_status AS ENUM ('backlog', 'todo', 'in_progress', 'review', 'done');
CREATE TABLE app.tasks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    project_id  bigint NOT NULL REFERENCES app.projects (id) ON DELETE CASCADE,
    number      integer NOT NULL,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    body        text NOT NULL DEFAULT '',
    status      app.task_status NOT NULL DEFAULT 'backlog',
    assignee_id bigint REFERENCES app.users (id) ON DELETE SET NULL,
    reporter_id bigint REFERENCES app.users (id) ON DELETE SET NULL,
    due_at      timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, number)
);
CREATE INDEX tasks_assignee_id_idx ON app.tasks (assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_account_status_idx ON app.tasks (account_id, status);
CREATE TRIGGER tasks_set_updated_at BEFORE UPDATE ON app.tasks
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();

-- +goose Down
DROP TABLE app.tasks;
DROP TYPE app.task_status;
