-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION reporting.time_by_project(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (project_id bigint, project_key text, minutes bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_to <= p_from THEN
        RAISE EXCEPTION 'empty period % .. %', p_from, p_to;
    END IF;
    RETURN QUERY
    SELECT p.id, p.key,
           coalesce(sum(extract(epoch FROM least(coalesce(e.ended_at, now()), p_to) - greatest(e.started_at, p_from)) / 60), 0)::bigint
    FROM app.projects p
    JOIN app.tasks t ON t.project_id = p.id
    JOIN app.time_entries e ON e.task_id = t.id
    WHERE e.started_at < p_to AND coalesce(e.ended_at, now()) > p_from
    GROUP BY p.id, p.key
    ORDER BY 3 DESC;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION reporting.time_by_project(timestamptz, timestamptz);
