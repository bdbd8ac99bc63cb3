-- +goose Up
CREATE TYPE app.export_state AS ENUM ('queued', 'running', 'done', 'failed');
CREATE TABLE app.exports (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    requested_by bigint REFERENCES app.users (id) ON DELETE SET NULL,
    format       text NOT NULL CHECK (format IN ('csv', 'json', 'xlsx')),
    state        app.export_state NOT NULL DEFAULT 'queued',
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX exports_queued_idx ON app.exports (created_at) WHERE state = 'queued';
-- +goose StatementBegin
CREATE FUNCTION app.request_export(p_user_id bigint, p_format text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_account_id bigint;
    v_id bigint;
BEGIN
    IF NOT app.has_permission(p_user_id, 'export.create') THEN
        RAISE EXCEPTION 'user % may not export', p_user_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT account_id INTO STRICT v_account_id FROM app.users WHERE id = p_user_id;
    INSERT INTO app.exports (account_id, requested_by, format)
    VALUES (v_account_id, p_user_id, p_format)
    RETURNING id INTO v_id;
    PERFORM pg_notify('exports', v_id::text);
    RETURN v_id;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION app.request_export(bigint, text);
DROP TABLE app.exports;
DROP TYPE app.export_state;
