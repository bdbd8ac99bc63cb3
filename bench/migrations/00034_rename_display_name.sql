-- +goose Up
ALTER TABLE app.users RENAME COLUMN display_name TO full_name;
UPDATE app.users SET full_name = initcap(split_part(email::text, '@', 1)) WHERE full_name = '';

-- +goose Down
ALTER TABLE app.users RENAME COLUMN full_name TO display_name;
