package controlplane

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// fleet describes the tenants seedFleet inserts, by expected category.
type fleet struct {
	all, behind, behindNotStale, failed []string
}

// seedFleet inserts n tenants in id order, cycling through five states with
// latest version 3: never run; COMPLETED at 3; COMPLETED at 2; FAILED at 1;
// FAILED_STALE at 2.
func seedFleet(t *testing.T, s *Store, n int) fleet {
	t.Helper()
	ctx := testContext(t)
	enc, err := testCipher(t).Encrypt("postgres://app:pw@db/fleet")
	require.NoError(t, err)

	var (
		f    fleet
		rows [][]any
	)
	for i := range n {
		id := fmt.Sprintf("tenant-%05d", i)
		var (
			version *int64
			status  *string
			lastErr *string
		)
		switch i % 5 {
		case 0:
			f.behind = append(f.behind, id)
			f.behindNotStale = append(f.behindNotStale, id)
		case 1:
			version, status = ptr(int64(3)), ptr(string(StatusCompleted))
		case 2:
			version, status = ptr(int64(2)), ptr(string(StatusCompleted))
			f.behind = append(f.behind, id)
			f.behindNotStale = append(f.behindNotStale, id)
		case 3:
			version, status, lastErr = ptr(int64(1)), ptr(string(StatusFailed)), ptr("boom "+id)
			f.behind = append(f.behind, id)
			f.behindNotStale = append(f.behindNotStale, id)
			f.failed = append(f.failed, id)
		case 4:
			version, status, lastErr = ptr(int64(2)), ptr(string(StatusFailedStale)), ptr("stale "+id)
			f.behind = append(f.behind, id)
			f.failed = append(f.failed, id)
		}
		f.all = append(f.all, id)
		rows = append(rows, []any{id, enc, version, status, lastErr})
	}
	// One COPY: cursor_id follows the row order.
	_, err = s.Pool().CopyFrom(ctx, pgx.Identifier{Schema, "tenants"},
		[]string{"id", "database_url", "migrations_version", "migrations_status", "last_error"},
		pgx.CopyFromRows(rows))
	require.NoError(t, err)
	return f
}

// scanAll pages through ScanBehind and checks the paging contract.
func scanAll(t *testing.T, s *Store, latest int64, includeStale bool, limit int) (ids []string, pages int) {
	t.Helper()
	ctx := testContext(t)
	var cursor int64
	for {
		page, next, err := s.ScanBehind(ctx, latest, includeStale, cursor, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), limit)
		pages++
		ids = append(ids, page...)
		if next == 0 {
			return ids, pages
		}
		require.Len(t, page, limit, "only the last page is short")
		require.Greater(t, next, cursor)
		cursor = next
	}
}

func TestScanBehindStatsListFailed(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	f := seedFleet(t, s, 1050)
	require.Len(t, f.behind, 840)
	require.Len(t, f.behindNotStale, 630)

	t.Run("ScanBehind", func(t *testing.T) {
		ids, pages := scanAll(t, s, 3, false, 100)
		require.Equal(t, f.behindNotStale, ids) // in cursor order, no duplicates
		require.Equal(t, 7, pages)

		ids, pages = scanAll(t, s, 3, true, 100)
		require.Equal(t, f.behind, ids)
		require.Equal(t, 9, pages)

		// A limit that divides the count exactly: no empty last page.
		ids, pages = scanAll(t, s, 3, false, 210)
		require.Equal(t, f.behindNotStale, ids)
		require.Equal(t, 3, pages)

		// Everyone is behind a newer version; nobody is behind version 1
		// except those never migrated, and the scan also takes those that
		// failed at version 1.
		ids, _ = scanAll(t, s, 4, true, 500)
		require.Equal(t, f.all, ids)
		ids, _ = scanAll(t, s, 1, true, 500)
		require.Len(t, ids, 420)
	})

	t.Run("CountBehind", func(t *testing.T) {
		n, err := s.CountBehind(ctx, 3)
		require.NoError(t, err)
		require.EqualValues(t, 840, n)
		n, err = s.CountBehind(ctx, 1)
		require.NoError(t, err)
		require.EqualValues(t, 210, n)
	})

	t.Run("Stats", func(t *testing.T) {
		st, err := s.Stats(ctx, 3)
		require.NoError(t, err)
		require.EqualValues(t, 1050, st.Total)
		require.EqualValues(t, 840, st.Behind)
		require.Equal(t, []VersionCount{
			{Version: nil, Count: 210},
			{Version: ptr(int64(1)), Count: 210},
			{Version: ptr(int64(2)), Count: 420},
			{Version: ptr(int64(3)), Count: 210},
		}, st.ByVersion)
		require.Equal(t, map[Status]int64{
			"":                210,
			StatusCompleted:   420,
			StatusFailed:      210,
			StatusFailedStale: 210,
		}, st.ByStatus)
	})

	t.Run("ListFailed", func(t *testing.T) {
		var (
			ids    []string
			cursor int64
		)
		for {
			page, next, err := s.ListFailed(ctx, cursor, 50)
			require.NoError(t, err)
			for _, st := range page {
				require.Contains(t, []Status{StatusFailed, StatusFailedStale}, st.MigrationsStatus)
				require.True(t, strings.HasSuffix(st.LastError, st.ID), "last error %q", st.LastError)
				require.NotNil(t, st.MigrationsVersion)
				ids = append(ids, st.ID)
			}
			if next == 0 {
				break
			}
			cursor = next
		}
		require.Equal(t, f.failed, ids)
	})
}

// A tenant whose last run failed after every version was applied is at the
// latest version but not COMPLETED: the scan takes it (FAILED_STALE only with
// includeStale), so that a job records it COMPLETED. One FAILED above the
// scanning release's version belongs to a newer release and is left alone.
func TestScanBehindTakesFailedAtLatest(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	for _, tc := range []struct {
		id      string
		version int64
		status  Status
	}{
		{"a-failed-at-latest", 3, StatusFailed},
		{"b-stale-at-latest", 3, StatusFailedStale},
		{"c-failed-above", 4, StatusFailed},
		{"d-completed", 3, StatusCompleted},
		{"e-behind", 2, StatusCompleted},
	} {
		_, err := s.Create(ctx, Tenant{ID: tc.id, DatabaseURL: testURL})
		require.NoError(t, err)
		if tc.status == StatusCompleted {
			require.NoError(t, s.RecordSuccess(ctx, tc.id, currentOrigin(t, s, tc.id), tc.version))
		} else {
			require.NoError(t, s.RecordFailure(ctx, tc.id, currentOrigin(t, s, tc.id), &tc.version, tc.status, "lost the connection after the last commit"))
		}
	}
	ids, _ := scanAll(t, s, 3, false, 2)
	require.Equal(t, []string{"a-failed-at-latest", "e-behind"}, ids)
	ids, _ = scanAll(t, s, 3, true, 2)
	require.Equal(t, []string{"a-failed-at-latest", "b-stale-at-latest", "e-behind"}, ids)

	n, err := s.CountBehind(ctx, 3)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "CountBehind counts versions only")
}

func TestEmptyFleet(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	ids, next, err := s.ScanBehind(ctx, 1, true, 0, 10)
	require.NoError(t, err)
	require.Empty(t, ids)
	require.Zero(t, next)
	st, err := s.Stats(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, Stats{ByVersion: []VersionCount{}, ByStatus: map[Status]int64{}}, st)
	failed, next, err := s.ListFailed(ctx, 0, 0)
	require.NoError(t, err)
	require.Empty(t, failed)
	require.Zero(t, next)
}

func TestRecordSuccessAndFailure(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	_, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)

	st, err := s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, TenantState{ID: "acme", UpdatedAt: st.UpdatedAt}, st)

	require.NoError(t, s.RecordSuccess(ctx, "acme", currentOrigin(t, s, "acme"), 5))
	st, err = s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(5)), st.MigrationsVersion)
	require.Equal(t, StatusCompleted, st.MigrationsStatus)
	require.Empty(t, st.LastError)

	// A failure without a version keeps the stored one; the message is cut
	// to 2000 characters and made valid text.
	long := "é" + strings.Repeat("x", 5000) + "\x00\xff"
	require.NoError(t, s.RecordFailure(ctx, "acme", currentOrigin(t, s, "acme"), nil, StatusFailed, long))
	st, err = s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(5)), st.MigrationsVersion)
	require.Equal(t, StatusFailed, st.MigrationsStatus)
	require.Equal(t, 2000, utf8.RuneCountInString(st.LastError))
	require.True(t, strings.HasPrefix(st.LastError, "éxxx"))

	// Bad bytes in a short message.
	require.NoError(t, s.RecordFailure(ctx, "acme", currentOrigin(t, s, "acme"), ptr(int64(4)), StatusFailedStale, "bad\x00\xffbyte"))
	st, err = s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(4)), st.MigrationsVersion)
	require.Equal(t, StatusFailedStale, st.MigrationsStatus)
	require.Equal(t, "bad\uFFFDbyte", st.LastError)

	for _, bad := range []Status{"", StatusCompleted, "failed"} {
		require.ErrorIs(t, s.RecordFailure(ctx, "acme", currentOrigin(t, s, "acme"), nil, bad, "x"), ErrInvalid)
	}

	// Success clears the error.
	require.NoError(t, s.RecordSuccess(ctx, "acme", currentOrigin(t, s, "acme"), 6))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(6)), got.MigrationsVersion)
	require.Equal(t, StatusCompleted, got.MigrationsStatus)
	require.Empty(t, got.LastError)
}

// TestBehindQueriesUseIndex checks on 100k up-to-date tenants that the
// "behind" queries do not read the table sequentially.
func TestBehindQueriesUseIndex(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	_, err := s.Pool().Exec(ctx, `
		INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		SELECT 't' || i, '\x00'::bytea, 5, 'COMPLETED' FROM generate_series(1, 100000) AS i`)
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `ANALYZE tenantmigrate.tenants`)
	require.NoError(t, err)

	for name, q := range map[string]struct {
		sql  string
		args []any
	}{
		"count":            {countBehindSQL, []any{int64(5)}},
		"scan":             {scanBehindSQL, []any{int64(5), int64(0), 101}},
		"scan excl. stale": {scanBehindNotStaleSQL, []any{int64(5), int64(0), 101}},
	} {
		var plan []map[string]any
		require.NoError(t, s.Pool().QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+q.sql, q.args...).Scan(&plan), name)
		planJSON, err := json.Marshal(plan)
		require.NoError(t, err)
		require.NotContains(t, string(planJSON), `"Seq Scan"`, "%s plan: %s", name, planJSON)
		require.Contains(t, string(planJSON), "tenants_migrations_version_idx", "%s plan: %s", name, planJSON)
	}

	n, err := s.CountBehind(ctx, 5)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = s.CountBehind(ctx, 6)
	require.NoError(t, err)
	require.EqualValues(t, 100000, n)
}

// TestStaleResultsAreDropped: a result applies only to the target and state
// its run read. A re-registered tenant, a re-pointed one, and a state another
// run recorded meanwhile are left as they are, with ErrStaleResult.
func TestStaleResultsAreDropped(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	// Removed and registered again (pointing at an empty database B) while a
	// run on database A was under way.
	_, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	runOnA := currentOrigin(t, s, "acme")
	require.NoError(t, s.Delete(ctx, "acme"))
	_, err = s.Create(ctx, Tenant{ID: "acme", DatabaseURL: "postgres://app:pw@db-b/acme"})
	require.NoError(t, err)
	require.ErrorIs(t, s.RecordSuccess(ctx, "acme", runOnA, 2), ErrStaleResult)
	require.ErrorIs(t, s.RecordFailure(ctx, "acme", runOnA, nil, StatusFailed, "x"), ErrStaleResult)
	st, err := s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Nil(t, st.MigrationsVersion, "B is still unknown")

	// Re-pointed by PATCH during a run.
	run := currentOrigin(t, s, "acme")
	_, err = s.Patch(ctx, "acme", TenantPatch{Schema: ptr("acme_v2")})
	require.NoError(t, err)
	require.ErrorIs(t, s.RecordSuccess(ctx, "acme", run, 4), ErrStaleResult)
	st, err = s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Nil(t, st.MigrationsVersion)

	// A run that timed out on the tenant's lock must not overwrite the
	// COMPLETED the lock holder recorded meanwhile.
	waiter := currentOrigin(t, s, "acme")
	holder := currentOrigin(t, s, "acme")
	require.NoError(t, s.RecordSuccess(ctx, "acme", holder, 4))
	require.ErrorIs(t, s.RecordFailure(ctx, "acme", waiter, nil, StatusFailed, "timed out waiting for the tenant migration lock"), ErrStaleResult)
	st, err = s.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, StatusCompleted, st.MigrationsStatus)
	require.Equal(t, ptr(int64(4)), st.MigrationsVersion)

	// A failure on the state it read is recorded; so is the next one.
	run = currentOrigin(t, s, "acme")
	require.NoError(t, s.RecordFailure(ctx, "acme", run, ptr(int64(4)), StatusFailed, "boom"))
	run = currentOrigin(t, s, "acme")
	require.NoError(t, s.RecordFailure(ctx, "acme", run, ptr(int64(4)), StatusFailedStale, "boom again"))

	require.ErrorIs(t, s.RecordSuccess(ctx, "nobody", RunOrigin{}, 1), ErrTenantNotFound)
}
