-- Reference data: the permission catalogue and which role has which.
-- +goose Up
CREATE TABLE app.permissions (
    code        text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO app.permissions (code, description)
SELECT r || '.' || a, initcap(a) || ' ' || replace(r, '_', ' ')
FROM unnest(ARRAY['account', 'user', 'team', 'project', 'task', 'comment', 'tag', 'attachment',
                  'invoice', 'api_key', 'webhook', 'export', 'report', 'setting', 'audit_log']) AS r,
     unnest(ARRAY['read', 'create', 'update', 'delete']) AS a;
CREATE TABLE app.role_permissions (
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    permission_code text NOT NULL REFERENCES app.permissions (code) ON DELETE CASCADE,
    PRIMARY KEY (role, permission_code)
);
INSERT INTO app.role_permissions (role, permission_code)
SELECT 'owner', code FROM app.permissions
UNION ALL
SELECT 'admin', code FROM app.permissions WHERE code NOT LIKE 'account.%'
UNION ALL
SELECT 'member', code FROM app.permissions
WHERE code ~ '^(task|comment|tag|attachment|project)\.' OR code LIKE '%.read'
UNION ALL
SELECT 'guest', code FROM app.permissions WHERE code LIKE '%.read' AND code NOT LIKE 'audit_log.%';

-- +goose Down
DROP TABLE app.role_permissions;
DROP TABLE app.permissions;
