-- +goose Up
CREATE TABLE app.webhooks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    url        text NOT NULL CHECK (url ~ '^https://'),
    events     text[] NOT NULL CHECK (cardinality(events) > 0),
    secret     text NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE app.webhook_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id   bigint NOT NULL REFERENCES app.webhooks (id) ON DELETE CASCADE,
    event        text NOT NULL,
    payload      jsonb NOT NULL,
    attempt      smallint NOT NULL DEFAULT 1,
    status_code  smallint,
    delivered_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_pending_idx ON app.webhook_deliveries (webhook_id, created_at)
    WHERE delivered_at IS NULL;

-- +goose Down
DROP TABLE app.webhook_deliveries;
DROP TABLE app.webhooks;
