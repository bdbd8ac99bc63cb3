-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION app.current_account_id() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('app.account_id', true), '')::bigint
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION app.current_account_id();
