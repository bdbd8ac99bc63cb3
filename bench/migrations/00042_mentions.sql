-- +goose Up
CREATE TABLE app.mentions (
    comment_id bigint NOT NULL REFERENCES app.comments (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES app.users (id) ON DELETE CASCADE,
    PRIMARY KEY (comment_id, user_id)
);
CREATE INDEX mentions_user_id_idx ON app.mentions (user_id);
-- +goose StatementBegin
CREATE FUNCTION app.notify_mention() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.notifications (user_id, kind, task_id, payload)
    SELECT NEW.user_id, 'mention', c.task_id, jsonb_build_object('comment_id', c.id)
    FROM app.comments c WHERE c.id = NEW.comment_id;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER mentions_notify AFTER INSERT ON app.mentions
    FOR EACH ROW EXECUTE FUNCTION app.notify_mention();
GRANT SELECT, INSERT, DELETE ON app.mentions TO bench_app;

-- +goose Down
DROP TABLE app.mentions;
DROP FUNCTION app.notify_mention();
