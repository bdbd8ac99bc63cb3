-- +goose Up
ALTER TABLE tasks ADD COLUMN priority smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5);
INSERT INTO accounts (name, slug) VALUES ('Sample', 'sample');
INSERT INTO projects (account_id, key, name) SELECT id, 'DEMO', 'Demo' FROM accounts;
INSERT INTO tasks (account_id, project_id, number, title)
    SELECT p.account_id, p.id, n, 'Task ' || n FROM projects p, generate_series(1, 3) n;

-- +goose Down
DELETE FROM tasks;
DELETE FROM projects;
DELETE FROM accounts;
ALTER TABLE tasks DROP COLUMN priority;
