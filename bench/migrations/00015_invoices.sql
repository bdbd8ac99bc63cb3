-- +goose Up
CREATE TABLE app.invoices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES app.accounts (id) ON DELETE RESTRICT,
    number       text NOT NULL UNIQUE,
    currency     char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'paid', 'void')),
    total_cents  bigint NOT NULL DEFAULT 0,
    issued_at    timestamptz,
    due_at       timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (due_at IS NULL OR issued_at IS NULL OR due_at >= issued_at)
);
CREATE INDEX invoices_account_status_idx ON app.invoices (account_id, status);
CREATE TABLE app.invoice_lines (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id       bigint NOT NULL REFERENCES app.invoices (id) ON DELETE CASCADE,
    description      text NOT NULL,
    quantity         numeric(12, 3) NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    line_total_cents bigint GENERATED ALWAYS AS ((quantity * unit_price_cents)::bigint) STORED
);
CREATE INDEX invoice_lines_invoice_id_idx ON app.invoice_lines (invoice_id);
CREATE TRIGGER invoices_set_updated_at BEFORE UPDATE ON app.invoices
    FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();

-- +goose Down
DROP TABLE app.invoice_lines;
DROP TABLE app.invoices;
