-- +goose Up
CREATE VIEW reporting.project_summary AS
SELECT p.id AS project_id, p.key, p.name,
       count(t.id) AS tasks,
       count(t.id) FILTER (WHERE t.status = 'done') AS done,
       count(t.id) FILTER (WHERE t.due_at < now() AND t.status <> 'done') AS overdue
FROM app.projects p
LEFT JOIN app.tasks t ON t.project_id = p.id AND t.deleted_at IS NULL
WHERE p.deleted_at IS NULL
GROUP BY p.id, p.key, p.name;
CREATE MATERIALIZED VIEW reporting.user_workload AS
SELECT u.id AS user_id, u.email, count(t.id) AS open_tasks, max(t.updated_at) AS last_activity
FROM app.users u
LEFT JOIN app.tasks t ON t.assignee_id = u.id AND t.status <> 'done'
GROUP BY u.id, u.email;
CREATE UNIQUE INDEX user_workload_user_id_idx ON reporting.user_workload (user_id);

-- +goose Down
DROP MATERIALIZED VIEW reporting.user_workload;
DROP VIEW reporting.project_summary;
