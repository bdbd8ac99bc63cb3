-- Monthly partitions of the audit log for the year ahead, from next month on
-- (this month's rows are already in the default partition).
-- +goose Up
-- +goose StatementBegin
DO $$
DECLARE
    v_month date := (date_trunc('month', now()) + interval '1 month')::date;
BEGIN
    FOR i IN 0..11 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS audit.%I PARTITION OF audit.log FOR VALUES FROM (%L) TO (%L)',
            'log_' || to_char(v_month + make_interval(months => i), 'YYYY_MM'),
            v_month + make_interval(months => i),
            v_month + make_interval(months => i + 1));
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose Down
SELECT 1;
