-- +goose Up
CREATE TABLE app.comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    task_id    bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    author_id  bigint REFERENCES app.users (id) ON DELETE SET NULL,
    body       text NOT NULL,
    edited     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER comments_set_updated_at BEFORE UPDATE ON app.comments
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();

-- +goose Down
DROP TABLE app.comments;
