-- +goose Up
ALTER TABLE app.tasks ADD COLUMN priority smallint NOT NULL DEFAULT 3
    CONSTRAINT tasks_priority_range CHECK (priority BETWEEN 1 AND 5);
UPDATE app.tasks SET priority = 1 + (number % 5) WHERE status <> 'done';

-- +goose Down
ALTER TABLE app.tasks DROP COLUMN priority;
