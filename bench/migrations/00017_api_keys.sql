-- +goose Up
CREATE TABLE app.api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    created_by   bigint REFERENCES app.users (id) ON DELETE SET NULL,
    name         text NOT NULL,
    prefix       text NOT NULL CHECK (length(prefix) = 8),
    key_hash     bytea NOT NULL,
    scopes       text[] NOT NULL DEFAULT '{}',
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX api_keys_prefix_idx ON app.api_keys (prefix);
CREATE INDEX api_keys_active_idx ON app.api_keys (account_id) WHERE revoked_at IS NULL;

-- +goose Down
DROP TABLE app.api_keys;
