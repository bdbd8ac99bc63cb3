-- +goose Up
CREATE TABLE app.attachments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    task_id      bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    uploader_id  bigint REFERENCES app.users (id) ON DELETE SET NULL,
    file_name    text NOT NULL,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    storage_key  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_task_id_idx ON app.attachments (task_id);

-- +goose Down
DROP TABLE app.attachments;
