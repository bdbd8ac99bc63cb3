-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION app.refresh_invoice_total() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice_id bigint;
BEGIN
    v_invoice_id := CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END;
    UPDATE app.invoices
    SET total_cents = (SELECT coalesce(sum(line_total_cents), 0) FROM app.invoice_lines WHERE invoice_id = v_invoice_id)
    WHERE id = v_invoice_id;
    IF TG_OP = 'UPDATE' AND OLD.invoice_id <> NEW.invoice_id THEN
        UPDATE app.invoices
        SET total_cents = (SELECT coalesce(sum(line_total_cents), 0) FROM app.invoice_lines WHERE invoice_id = OLD.invoice_id)
        WHERE id = OLD.invoice_id;
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER invoice_lines_refresh_total AFTER INSERT OR UPDATE OR DELETE ON app.invoice_lines
    FOR EACH ROW EXECUTE FUNCTION app.refresh_invoice_total();

-- +goose Down
DROP TRIGGER invoice_lines_refresh_total ON app.invoice_lines;
DROP FUNCTION app.refresh_invoice_total();
