-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION app.has_permission(p_user_id bigint, p_code text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_role text;
BEGIN
    SELECT role INTO v_role FROM app.users WHERE id = p_user_id AND is_active;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM app.role_permissions
        WHERE role = v_role AND permission_code = p_code
    );
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION app.has_permission(bigint, text);
