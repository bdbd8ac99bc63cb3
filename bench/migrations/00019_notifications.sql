-- +goose Up
CREATE TABLE app.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES app.users (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    task_id    bigint REFERENCES app.tasks (id) ON DELETE CASCADE,
    payload    jsonb NOT NULL DEFAULT '{}',
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_unread_idx ON app.notifications (user_id, created_at DESC) WHERE read_at IS NULL;

-- +goose Down
DROP TABLE app.notifications;
