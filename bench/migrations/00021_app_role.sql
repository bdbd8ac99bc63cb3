-- The application role is cluster-wide: every tenant database creates it if
-- missing and sets its defaults. ALTER ROLE ... SET updates one row of the
-- shared catalog pg_db_role_setting, so tenants migrating at the same moment
-- sometimes fail with "tuple concurrently updated" (SQLSTATE XX000); a retry
-- succeeds.
-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    CREATE ROLE bench_app NOLOGIN;
EXCEPTION
    -- duplicate_object when the role exists; unique_violation when another
    -- database created it concurrently.
    WHEN duplicate_object OR unique_violation THEN NULL;
END;
$$;
-- +goose StatementEnd
ALTER ROLE bench_app SET statement_timeout = '30s';
ALTER ROLE bench_app SET idle_in_transaction_session_timeout = '60s';
GRANT USAGE ON SCHEMA app, reporting TO bench_app;

-- +goose Down
REVOKE USAGE ON SCHEMA app, reporting FROM bench_app;
