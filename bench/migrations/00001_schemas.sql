-- Schemas and extensions every tenant database starts with.
-- +goose Up
CREATE SCHEMA app;
CREATE SCHEMA audit;
CREATE SCHEMA reporting;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- +goose Down
DROP SCHEMA reporting CASCADE;
DROP SCHEMA audit CASCADE;
DROP SCHEMA app CASCADE;
