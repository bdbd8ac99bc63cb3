-- Row-level security: a session sees the rows of its account only.
-- +goose Up
ALTER TABLE app.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.comments ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.attachments ENABLE ROW LEVEL SECURITY;
CREATE POLICY projects_account ON app.projects
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());
CREATE POLICY tasks_account ON app.tasks
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());
CREATE POLICY comments_account ON app.comments
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());
CREATE POLICY attachments_account ON app.attachments
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());

-- +goose Down
DROP POLICY attachments_account ON app.attachments;
DROP POLICY comments_account ON app.comments;
DROP POLICY tasks_account ON app.tasks;
DROP POLICY projects_account ON app.projects;
ALTER TABLE app.attachments DISABLE ROW LEVEL SECURITY;
ALTER TABLE app.comments DISABLE ROW LEVEL SECURITY;
ALTER TABLE app.tasks DISABLE ROW LEVEL SECURITY;
ALTER TABLE app.projects DISABLE ROW LEVEL SECURITY;
