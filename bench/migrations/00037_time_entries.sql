-- +goose Up
CREATE TABLE app.time_entries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    task_id    bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES app.users (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    note       text NOT NULL DEFAULT '',
    CHECK (ended_at IS NULL OR ended_at > started_at)
);
CREATE INDEX time_entries_task_idx ON app.time_entries (task_id);
CREATE UNIQUE INDEX time_entries_one_running_idx ON app.time_entries (user_id) WHERE ended_at IS NULL;
ALTER TABLE app.time_entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY time_entries_account ON app.time_entries
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());

-- +goose Down
DROP TABLE app.time_entries;
