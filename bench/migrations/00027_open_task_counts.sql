-- Projects keep a count of their open tasks, maintained by a trigger.
-- +goose Up
ALTER TABLE app.projects ADD COLUMN open_task_count integer NOT NULL DEFAULT 0;
-- +goose StatementBegin
CREATE FUNCTION app.maintain_open_task_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status <> 'done' THEN
        UPDATE app.projects SET open_task_count = open_task_count - 1 WHERE id = OLD.project_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status <> 'done' THEN
        UPDATE app.projects SET open_task_count = open_task_count + 1 WHERE id = NEW.project_id;
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER tasks_open_task_count AFTER INSERT OR DELETE OR UPDATE OF status, project_id ON app.tasks
    FOR EACH ROW EXECUTE FUNCTION app.maintain_open_task_count();
UPDATE app.projects p
SET open_task_count = (SELECT count(*) FROM app.tasks t WHERE t.project_id = p.id AND t.status <> 'done');

-- +goose Down
DROP TRIGGER tasks_open_task_count ON app.tasks;
DROP FUNCTION app.maintain_open_task_count();
ALTER TABLE app.projects DROP COLUMN open_task_count;
