-- +goose Up
-- +goose StatementBegin
-- SET search_path FROM CURRENT pins the function to the schema it is created in, so it finds
-- the tenant's notes table whatever the caller's search_path.
CREATE FUNCTION user_note_count(p_user_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM notes WHERE user_id = p_user_id;
    RETURN n;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION user_note_count(bigint);
