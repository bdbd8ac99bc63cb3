-- +goose Up
CREATE TABLE app.account_settings (
    account_id bigint PRIMARY KEY REFERENCES app.accounts (id) ON DELETE CASCADE,
    settings   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_settings_gin_idx ON app.account_settings USING gin (settings jsonb_path_ops);
CREATE TRIGGER account_settings_set_updated_at BEFORE UPDATE ON app.account_settings
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();
INSERT INTO app.account_settings (account_id, settings)
SELECT id, jsonb_build_object('timezone', 'UTC', 'week_start', 'monday', 'locale', 'en') FROM app.accounts;

-- +goose Down
DROP TABLE app.account_settings;
