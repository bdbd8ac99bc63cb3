-- +goose Up
CREATE TABLE app.teams (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
CREATE TABLE app.team_members (
    team_id   bigint NOT NULL REFERENCES app.teams (id) ON DELETE CASCADE,
    user_id   bigint NOT NULL REFERENCES app.users (id) ON DELETE CASCADE,
    is_lead   boolean NOT NULL DEFAULT false,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_id_idx ON app.team_members (user_id);
CREATE TRIGGER teams_set_updated_at BEFORE UPDATE ON app.teams
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();

-- +goose Down
DROP TABLE app.team_members;
DROP TABLE app.teams;
