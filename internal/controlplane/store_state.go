package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// GetState returns the migration state of tenant id without decrypting its
// URL (it works without a cipher), in one primary-key lookup. It returns
// ErrTenantNotFound when there is no such tenant; an invalid id never
// matches and costs no query.
func (s *Store) GetState(ctx context.Context, id string) (TenantState, error) {
	if ValidateTenantID(id) != nil {
		return TenantState{}, fmt.Errorf("get tenant state %s: %w", quoteShort(id), ErrTenantNotFound)
	}
	st, _, err := scanState(s.pool.QueryRow(ctx, `
		SELECT id, migrations_version, coalesce(migrations_status, ''), coalesce(last_error, ''), updated_at, cursor_id
		FROM tenantmigrate.tenants WHERE id = $1`, id))
	if err != nil {
		return TenantState{}, fmt.Errorf("get tenant state %s: %w", id, err)
	}
	return st, nil
}

// RecordSuccess records that tenant id is at version after a successful run
// that started from origin: status COMPLETED, no last error. It writes only
// while the tenant's target and state are still origin's: the version was
// read from that target, and no other run (a rollback or a force that moved
// the tenant's version table after this run released its lock) recorded a
// result meanwhile. It returns ErrTenantNotFound when there is no such
// tenant, and ErrStaleResult when it changed (nothing written).
func (s *Store) RecordSuccess(ctx context.Context, id string, origin RunOrigin, version int64) error {
	tag, err := s.pool.Exec(ctx, `
		UPDATE tenantmigrate.tenants
		SET migrations_version = $2, migrations_status = 'COMPLETED', last_error = NULL, updated_at = now()
		WHERE id = $1 AND target_seq = $3
			AND migrations_version IS NOT DISTINCT FROM $4::bigint
			AND migrations_status IS NOT DISTINCT FROM NULLIF($5, '')`,
		id, version, origin.TargetSeq, origin.Version, string(origin.Status))
	if err != nil {
		return fmt.Errorf("record success of tenant %s: %w", quoteShort(id), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("record success of tenant %s: %w", quoteShort(id), s.missingOrStale(ctx, id))
	}
	return nil
}

// RecordFailure records a failed run of tenant id that started from origin:
// status (StatusFailed or StatusFailedStale, else an error wrapping
// ErrInvalid), the last version known to be applied (nil keeps the stored
// one) and errMsg, cut to 2000 characters. errMsg is stored and shown to
// operators: it must not contain a password.
//
// It writes only while the tenant's target and state are still origin's: a
// failure must not overwrite what another run recorded meanwhile (a run that
// timed out waiting for the tenant's lock while the lock holder completed
// it). It returns ErrTenantNotFound when there is no such tenant and
// ErrStaleResult when it changed (nothing written).
func (s *Store) RecordFailure(ctx context.Context, id string, origin RunOrigin, version *int64, status Status, errMsg string) error {
	if status != StatusFailed && status != StatusFailedStale {
		return fmt.Errorf("record failure of tenant %s: %w status %q: use %s or %s",
			quoteShort(id), ErrInvalid, status, StatusFailed, StatusFailedStale)
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE tenantmigrate.tenants
		SET migrations_version = coalesce($2::bigint, migrations_version), migrations_status = $3,
			last_error = NULLIF($4, ''), updated_at = now()
		WHERE id = $1 AND target_seq = $5
			AND migrations_version IS NOT DISTINCT FROM $6::bigint
			AND migrations_status IS NOT DISTINCT FROM NULLIF($7, '')`,
		id, version, string(status), truncateError(errMsg), origin.TargetSeq, origin.Version, string(origin.Status))
	if err != nil {
		return fmt.Errorf("record failure of tenant %s: %w", quoteShort(id), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("record failure of tenant %s: %w", quoteShort(id), s.missingOrStale(ctx, id))
	}
	return nil
}

// missingOrStale tells why a conditional write of tenant id matched no row.
func (s *Store) missingOrStale(ctx context.Context, id string) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenantmigrate.tenants WHERE id = $1)`, id).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return ErrTenantNotFound
	}
	return ErrStaleResult
}

// The filter "migrations_version < $1 OR migrations_version IS NULL" is
// answered with tenants_migrations_version_idx (a BitmapOr of two index
// scans), so an up-to-date fleet costs two empty index probes. ScanBehind
// also takes tenants whose last run failed after every version was applied
// (FAILED at exactly $1, e.g. a connection lost after the last commit): they
// are at the latest version but not COMPLETED, and nothing else would ever
// run them again. That arm states the predicate of the partial index
// tenants_failed_cursor_idx, a third, small index scan in the BitmapOr.
// Tenants FAILED above $1 are left alone: an instance of an older release
// must not overwrite what a newer one recorded.
const (
	scanBehindWhere = `
		WHERE (migrations_version < $1 OR migrations_version IS NULL
			OR (migrations_status IN ('FAILED', 'FAILED_STALE') AND migrations_version = $1))
		AND cursor_id > $2`
	scanBehindSQL = `
		SELECT id, cursor_id FROM tenantmigrate.tenants` + scanBehindWhere + `
		ORDER BY cursor_id LIMIT $3`
	scanBehindNotStaleSQL = `
		SELECT id, cursor_id FROM tenantmigrate.tenants` + scanBehindWhere + `
			AND migrations_status IS DISTINCT FROM 'FAILED_STALE'
		ORDER BY cursor_id LIMIT $3`
	countBehindSQL = `
		SELECT count(*) FROM tenantmigrate.tenants
		WHERE migrations_version < $1 OR migrations_version IS NULL`
)

// ScanBehind returns the ids of up to limit tenants (see DefaultPageSize,
// MaxPageSize) whose version is nil or below latest, or equal to latest with
// a failed last run (FAILED or FAILED_STALE), with cursor_id above
// afterCursor, in cursor_id order. Tenants with status FAILED_STALE are left
// out unless includeStale. nextCursor is the afterCursor of the next page, 0
// when there is none, so a caller walks the fleet in constant memory.
func (s *Store) ScanBehind(ctx context.Context, latest int64, includeStale bool, afterCursor int64, limit int) (ids []string, nextCursor int64, err error) {
	limit = pageSize(limit)
	query := scanBehindNotStaleSQL
	if includeStale {
		query = scanBehindSQL
	}
	type idCursor struct {
		id     string
		cursor int64
	}
	rows, err := s.pool.Query(ctx, query, latest, afterCursor, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("scan tenants behind %d: %w", latest, err)
	}
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (idCursor, error) {
		var r idCursor
		err := row.Scan(&r.id, &r.cursor)
		return r, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("scan tenants behind %d: %w", latest, err)
	}
	found, nextCursor = page(found, limit, func(r idCursor) int64 { return r.cursor })
	ids = make([]string, len(found))
	for i, r := range found {
		ids[i] = r.id
	}
	return ids, nextCursor, nil
}

// CountBehind returns the number of tenants whose version is nil or below
// latest, whatever their status.
func (s *Store) CountBehind(ctx context.Context, latest int64) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, countBehindSQL, latest).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tenants behind %d: %w", latest, err)
	}
	return n, nil
}

// Stats counts the tenants, those behind latest, and the tenants per version
// and per status. It reads the summary the tenants table's triggers keep
// (tenantmigrate.tenant_counts, migration 00012): one row per (version,
// status), exact under concurrent writes, so its cost does not grow with the
// fleet.
func (s *Store) Stats(ctx context.Context, latest int64) (Stats, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT nullif(version, -1), status, n
		FROM tenantmigrate.tenant_counts
		WHERE n <> 0
		ORDER BY version`)
	if err != nil {
		return Stats{}, fmt.Errorf("tenant stats: %w", err)
	}
	defer rows.Close()

	st := Stats{ByVersion: []VersionCount{}, ByStatus: map[Status]int64{}}
	for rows.Next() {
		var (
			version *int64
			status  string
			n       int64
		)
		if err := rows.Scan(&version, &status, &n); err != nil {
			return Stats{}, fmt.Errorf("tenant stats: %w", err)
		}
		st.Total += n
		if version == nil || *version < latest {
			st.Behind += n
		}
		st.ByStatus[Status(status)] += n
		// Rows come ordered by version, one per (version, status).
		if last := len(st.ByVersion) - 1; last >= 0 && equalVersion(st.ByVersion[last].Version, version) {
			st.ByVersion[last].Count += n
		} else {
			st.ByVersion = append(st.ByVersion, VersionCount{Version: version, Count: n})
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, fmt.Errorf("tenant stats: %w", err)
	}
	return st, nil
}

// ListFailed returns up to limit tenants (see DefaultPageSize, MaxPageSize)
// with status FAILED or FAILED_STALE and cursor_id above afterCursor, in
// cursor_id order, with their last error. nextCursor is the afterCursor of
// the next page, 0 when there is none.
func (s *Store) ListFailed(ctx context.Context, afterCursor int64, limit int) (failed []TenantState, nextCursor int64, err error) {
	limit = pageSize(limit)
	rows, err := s.pool.Query(ctx, `
		SELECT id, migrations_version, migrations_status, coalesce(last_error, ''), updated_at, cursor_id
		FROM tenantmigrate.tenants
		WHERE migrations_status IN ('FAILED', 'FAILED_STALE') AND cursor_id > $1
		ORDER BY cursor_id LIMIT $2`, afterCursor, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("list failed tenants: %w", err)
	}
	defer rows.Close()
	var cursors []int64
	for rows.Next() {
		st, cursor, err := scanState(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("list failed tenants: %w", err)
		}
		failed = append(failed, st)
		cursors = append(cursors, cursor)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list failed tenants: %w", err)
	}
	if len(failed) > limit {
		return failed[:limit], cursors[limit-1], nil
	}
	return failed, 0, nil
}

// scanState scans id, migrations_version, status, last_error, updated_at and
// cursor_id. No row is ErrTenantNotFound.
func scanState(row pgx.Row) (TenantState, int64, error) {
	var (
		st     TenantState
		status string
		cursor int64
	)
	err := row.Scan(&st.ID, &st.MigrationsVersion, &status, &st.LastError, &st.UpdatedAt, &cursor)
	if errors.Is(err, pgx.ErrNoRows) {
		return TenantState{}, 0, ErrTenantNotFound
	}
	if err != nil {
		return TenantState{}, 0, err
	}
	st.MigrationsStatus = Status(status)
	return st, cursor, nil
}

func equalVersion(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// truncateError makes errMsg storable as text (valid UTF-8 without NUL) and
// cuts it to maxLastErrorLen characters.
func truncateError(errMsg string) string {
	errMsg = strings.ReplaceAll(strings.ToValidUTF8(errMsg, "\uFFFD"), "\x00", "")
	if utf8.RuneCountInString(errMsg) <= maxLastErrorLen {
		return errMsg
	}
	const ellipsis = "…"
	runes := []rune(errMsg)
	return string(runes[:maxLastErrorLen-1]) + ellipsis
}
