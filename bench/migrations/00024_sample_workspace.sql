-- Every new tenant gets a sample workspace: one account, a few users and
-- teams, two projects and a few hundred tasks with comments.
-- +goose Up
INSERT INTO app.accounts (name, slug, plan) VALUES ('Sample workspace', 'sample', 'team');
INSERT INTO app.users (account_id, email, display_name, role)
SELECT 1, 'user' || g || '@example.com', 'User ' || g,
       CASE WHEN g = 1 THEN 'owner' WHEN g <= 3 THEN 'admin' WHEN g <= 18 THEN 'member' ELSE 'guest' END
FROM generate_series(1, 20) AS g;
INSERT INTO app.teams (account_id, name) VALUES (1, 'Product'), (1, 'Engineering'), (1, 'Support');
INSERT INTO app.team_members (team_id, user_id, is_lead)
SELECT 1 + (u % 3), u, u <= 3 FROM generate_series(1, 20) AS u;
INSERT INTO app.projects (account_id, team_id, key, name, description)
VALUES (1, 2, 'ENG', 'Engineering', 'Product engineering'),
       (1, 3, 'SUP', 'Support', 'Customer requests');
INSERT INTO app.tasks (account_id, project_id, number, title, body, status, assignee_id, reporter_id, due_at)
SELECT 1, 1 + (g % 2), g, 'Sample task ' || g || ': ' || md5(g::text),
       repeat('Lorem ipsum dolor sit amet. ', 1 + g % 5),
       (ARRAY['backlog', 'todo', 'in_progress', 'review', 'done'])[1 + g % 5]::app.task_status,
       1 + g % 20, 1 + (g * 7) % 20, now() + (g % 30) * interval '1 day'
FROM generate_series(1, 400) AS g;
INSERT INTO app.comments (account_id, task_id, author_id, body)
SELECT 1, 1 + g % 400, 1 + g % 20, 'Comment ' || g || ' ' || md5(g::text)
FROM generate_series(1, 800) AS g;
INSERT INTO app.tags (account_id, name, color)
VALUES (1, 'bug', '#d73a4a'), (1, 'feature', '#a2eeef'), (1, 'question', '#d876e3'), (1, 'urgent', '#b60205');
INSERT INTO app.task_tags (task_id, tag_id)
SELECT g, 1 + g % 4 FROM generate_series(1, 400) AS g;

-- +goose Down
DELETE FROM app.accounts WHERE slug = 'sample';
