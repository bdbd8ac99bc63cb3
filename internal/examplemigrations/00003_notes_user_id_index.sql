-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
-- +goose NO TRANSACTION

-- +goose Up
-- A failed CONCURRENTLY build leaves an INVALID index behind, which IF NOT EXISTS would keep:
-- drop it first so that a retried run builds a valid one.
DROP INDEX CONCURRENTLY IF EXISTS notes_user_id_idx;
CREATE INDEX CONCURRENTLY notes_user_id_idx ON notes (user_id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS notes_user_id_idx;
