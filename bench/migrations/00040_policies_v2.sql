-- Guests see only the projects of their teams.
-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION app.current_user_id() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('app.user_id', true), '')::bigint
$$;
-- +goose StatementEnd
DROP POLICY projects_account ON app.projects;
CREATE POLICY projects_account ON app.projects
    USING (
        account_id = app.current_account_id()
        AND (
            NOT EXISTS (SELECT 1 FROM app.users u WHERE u.id = app.current_user_id() AND u.role = 'guest')
            OR team_id IN (SELECT tm.team_id FROM app.team_members tm WHERE tm.user_id = app.current_user_id())
        )
    )
    WITH CHECK (account_id = app.current_account_id());

-- +goose Down
DROP POLICY projects_account ON app.projects;
CREATE POLICY projects_account ON app.projects
    USING (account_id = app.current_account_id())
    WITH CHECK (account_id = app.current_account_id());
DROP FUNCTION app.current_user_id();
