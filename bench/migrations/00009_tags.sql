-- +goose Up
CREATE TABLE app.tags (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    name       citext NOT NULL,
    color      text NOT NULL DEFAULT '#888888' CHECK (color ~ '^#[0-9a-fA-F]{6}$'),
    UNIQUE (account_id, name)
);
CREATE TABLE app.task_tags (
    task_id bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    tag_id  bigint NOT NULL REFERENCES app.tags (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, tag_id)
);
CREATE INDEX task_tags_tag_id_idx ON app.task_tags (tag_id);

-- +goose Down
DROP TABLE app.task_tags;
DROP TABLE app.tags;
