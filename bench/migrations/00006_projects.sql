-- +goose Up
CREATE TABLE app.projects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    team_id     bigint REFERENCES app.teams (id) ON DELETE SET NULL,
    key         text NOT NULL CHECK (key ~ '^[A-Z][A-Z0-9]{1,9}$'),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, key)
);
CREATE INDEX projects_team_id_idx ON app.projects (team_id);
CREATE TRIGGER projects_set_updated_at BEFORE UPDATE ON app.projects
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();

-- +goose Down
DROP TABLE app.projects;
