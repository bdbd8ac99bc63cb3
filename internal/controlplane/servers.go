package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// FillServers sets the server column (servers.Of of the URL) of the tenants
// written by a release that did not record it, a page at a time, and
// returns how many it set. Without a cipher it does nothing.
func (s *Store) FillServers(ctx context.Context) (int, error) {
	if s.cipher == nil {
		return 0, nil
	}
	n := 0
	var cursor int64
	for {
		rows, err := s.pool.Query(ctx, `SELECT `+tenantColumns+` FROM tenantmigrate.tenants
			WHERE server IS NULL AND cursor_id > $1 ORDER BY cursor_id LIMIT 500`, cursor)
		if err != nil {
			return n, fmt.Errorf("fill in servers: %w", err)
		}
		var ids, names []string
		read := 0
		for rows.Next() {
			t, enc, err := scanTenant(rows)
			if err != nil {
				rows.Close()
				return n, fmt.Errorf("fill in servers: %w", err)
			}
			read++
			cursor = t.CursorID
			url, err := s.cipher.Decrypt(enc.keyID, enc.b)
			if err != nil {
				// No configured key opens it: it keeps no server until its
				// URL is written again (or a key that opens it is given);
				// it fails only itself, when it is run.
				continue
			}
			ids, names = append(ids, t.ID), append(names, servers.Of(url, t.Labels))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, fmt.Errorf("fill in servers: %w", err)
		}
		if len(ids) > 0 {
			// "" for an unparsable URL: '?' marks the row done. Rows another
			// writer holds are skipped, not waited for (instances starting
			// together fill in the same rows; unordered multi-row waits
			// could deadlock): whoever holds them fills them in, or the next
			// start does.
			tag, err := s.pool.Exec(ctx, `UPDATE tenantmigrate.tenants t SET server = coalesce(nullif(u.server, ''), '?')
				FROM unnest($1::text[], $2::text[]) AS u(id, server)
				WHERE t.id = u.id AND t.server IS NULL
				  AND t.id IN (SELECT id FROM tenantmigrate.tenants WHERE id = ANY($1) AND server IS NULL FOR UPDATE SKIP LOCKED)`, ids, names)
			if err != nil {
				return n, fmt.Errorf("fill in servers: %w", err)
			}
			n += int(tag.RowsAffected())
		}
		if read < 500 {
			return n, nil
		}
	}
}

// ServerTenant returns the id of one tenant on server, for a probe; it
// wraps ErrTenantNotFound when the server has none.
func (s *Store) ServerTenant(ctx context.Context, server string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.tenants WHERE server = $1 ORDER BY cursor_id LIMIT 1`, server).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("a tenant of server %s: %w", server, ErrTenantNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("a tenant of server %s: %w", server, err)
	}
	return id, nil
}

// WaitingJobs returns up to n ids of the queued migrate_tenant and
// rollback_tenant jobs of server's tenants that no worker runs, oldest job
// first: the ones to wake when the server has room again. That is the jobs
// that wait for a time to come (snoozed, or scheduled), and also the ones
// whose time has come but that no producer has fetched yet: a short snooze
// ends as an available job that River fetches at its next poll only.
func (s *Store) WaitingJobs(ctx context.Context, server string, n int) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT j.id FROM tenantmigrate.river_job j JOIN tenantmigrate.tenants t ON t.id = j.args->>'tenant_id'
		WHERE j.kind IN ('migrate_tenant', 'rollback_tenant') AND t.server = $1
			AND j.state IN ('available', 'scheduled')
		ORDER BY j.created_at, j.id LIMIT $2`, server, n)
	if err != nil {
		return nil, fmt.Errorf("waiting jobs of server %s: %w", server, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("waiting jobs of server %s: %w", server, err)
	}
	return ids, nil
}
