-- +goose Up
CREATE VIEW open_task_counts AS
    SELECT p.account_id, p.id AS project_id, count(t.id) AS open_tasks
    FROM projects p
    LEFT JOIN tasks t ON t.project_id = p.id AND t.status <> 'done'
    GROUP BY p.account_id, p.id;

-- +goose Down
DROP VIEW open_task_counts;
