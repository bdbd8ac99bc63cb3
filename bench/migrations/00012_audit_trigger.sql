-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION audit.record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_old jsonb;
    v_new jsonb;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        v_old := to_jsonb(OLD);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        v_new := to_jsonb(NEW);
    END IF;
    INSERT INTO audit.log (table_name, operation, row_id, old_row, new_row)
    VALUES (TG_TABLE_NAME, TG_OP, coalesce((v_new ->> 'id')::bigint, (v_old ->> 'id')::bigint), v_old, v_new);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER projects_audit AFTER INSERT OR UPDATE OR DELETE ON app.projects
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
CREATE TRIGGER tasks_audit AFTER INSERT OR UPDATE OR DELETE ON app.tasks
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON app.users
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();

-- +goose Down
DROP TRIGGER users_audit ON app.users;
DROP TRIGGER tasks_audit ON app.tasks;
DROP TRIGGER projects_audit ON app.projects;
DROP FUNCTION audit.record_change();
