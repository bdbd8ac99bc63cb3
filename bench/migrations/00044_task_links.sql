-- +goose Up
CREATE TABLE app.task_links (
    from_task_id bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    to_task_id   bigint NOT NULL REFERENCES app.tasks (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('blocks', 'duplicates', 'relates')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (from_task_id, to_task_id, kind),
    CHECK (from_task_id <> to_task_id)
);
CREATE INDEX task_links_to_idx ON app.task_links (to_task_id);
GRANT SELECT, INSERT, DELETE ON app.task_links TO bench_app;

-- +goose Down
DROP TABLE app.task_links;
