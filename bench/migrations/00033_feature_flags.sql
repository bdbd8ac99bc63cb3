-- +goose Up
CREATE TABLE app.feature_flags (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    enabled     boolean NOT NULL DEFAULT false,
    rollout_pct smallint NOT NULL DEFAULT 0 CHECK (rollout_pct BETWEEN 0 AND 100),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO app.feature_flags (name, enabled, rollout_pct) VALUES
    ('new_editor', true, 100),
    ('kanban_v2', false, 10),
    ('ai_summaries', false, 0),
    ('time_tracking', true, 100),
    ('exports_v2', false, 50);

-- +goose Down
DROP TABLE app.feature_flags;
