-- Full-text search on tasks, maintained by a trigger.
-- +goose Up
ALTER TABLE app.tasks ADD COLUMN search tsvector;
-- +goose StatementBegin
CREATE FUNCTION app.tasks_search_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := setweight(to_tsvector('simple', coalesce(NEW.title, '')), 'A')
               || setweight(to_tsvector('simple', coalesce(NEW.body, '')), 'B');
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER tasks_search_update BEFORE INSERT OR UPDATE OF title, body ON app.tasks
    FOR EACH ROW EXECUTE FUNCTION app.tasks_search_update();
CREATE INDEX tasks_search_idx ON app.tasks USING gin (search);

-- +goose Down
DROP INDEX app.tasks_search_idx;
DROP TRIGGER tasks_search_update ON app.tasks;
DROP FUNCTION app.tasks_search_update();
ALTER TABLE app.tasks DROP COLUMN search;
