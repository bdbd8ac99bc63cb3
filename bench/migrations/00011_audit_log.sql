-- The audit log is partitioned by month.
-- +goose Up
CREATE TABLE audit.log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    table_name  text NOT NULL,
    operation   text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    row_id      bigint,
    actor       text NOT NULL DEFAULT current_user,
    old_row     jsonb,
    new_row     jsonb,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE audit.log_default PARTITION OF audit.log DEFAULT;
CREATE INDEX log_table_row_idx ON audit.log (table_name, row_id);

-- +goose Down
DROP TABLE audit.log;
