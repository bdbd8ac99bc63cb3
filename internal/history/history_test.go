package history_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
)

// newStore returns a Store on a fresh control plane, and its pool.
func newStore(t *testing.T) (*history.Store, *pgxpool.Pool) {
	t.Helper()
	return newStoreTB(t)
}

func newStoreTB(tb testing.TB) (*history.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, err := pgxpool.New(tb.Context(), fleettest.NewControlPlane(tb, ""))
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return history.NewStore(pool, "test-host:1"), pool
}

func ptr[T any](v T) *T { return &v }

// run is a completed run of tenant id from 1 to 2 that started at start and
// took d.
func run(id string, start time.Time, d time.Duration) history.Run {
	return history.Run{
		TenantID: id, FromVersion: ptr(int64(1)), ToVersion: ptr(int64(2)),
		Result: history.ResultCompleted, StartedAt: start, FinishedAt: start.Add(d), Trigger: "queue",
	}
}

func count(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.runs`).Scan(&n))
	return n
}

// TestRecordAndList: a run reads back as written, defaults filled in, and a
// tenant's runs page newest first, by start then id, to the end.
func TestRecordAndList(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond)

	failed := history.Run{
		TenantID: "a", RolloutID: "r1", FromVersion: nil, ToVersion: nil, Result: history.ResultFailed,
		Error: "boom\x00" + strings.Repeat("é", 3000), Attempt: 2,
		StartedAt: base, FinishedAt: base.Add(time.Second), Trigger: "batch",
	}
	require.NoError(t, s.Record(ctx, failed))
	// Seven more, two starting at the same instant (the id breaks the tie),
	// and one of another tenant.
	for i := range 7 {
		start := base.Add(time.Duration(i/2+1) * time.Minute)
		require.NoError(t, s.Record(ctx, run("a", start, time.Duration(i+1)*time.Second)))
	}
	require.NoError(t, s.Record(ctx, run("b", base, time.Second)))

	var all []history.Run
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		runs, next, err := s.List(ctx, "a", cursor, 3)
		require.NoError(t, err)
		all = append(all, runs...)
		if next == "" {
			require.LessOrEqual(t, len(runs), 3)
			break
		}
		require.Len(t, runs, 3)
		cursor = next
	}
	require.Len(t, all, 8)
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		require.True(t, prev.StartedAt.After(cur.StartedAt) || (prev.StartedAt.Equal(cur.StartedAt) && prev.ID > cur.ID),
			"run %d (%s, %d) listed before run %d (%s, %d)", i-1, prev.StartedAt, prev.ID, i, cur.StartedAt, cur.ID)
	}

	got := all[len(all)-1]
	require.Equal(t, "a", got.TenantID)
	require.Equal(t, "r1", got.RolloutID)
	require.Nil(t, got.FromVersion)
	require.Nil(t, got.ToVersion)
	require.Equal(t, "up", got.Direction)
	require.Equal(t, history.ResultFailed, got.Result)
	require.Equal(t, 2, got.Attempt)
	require.Equal(t, "test-host:1", got.Process)
	require.Equal(t, "batch", got.Trigger)
	require.True(t, base.Equal(got.StartedAt))
	require.Equal(t, time.Second, got.Duration())
	require.Len(t, []rune(got.Error), history.MaxErrorLen)
	require.True(t, strings.HasPrefix(got.Error, "boomé"))
	require.True(t, strings.HasSuffix(got.Error, "…"))

	newest := all[0]
	require.Equal(t, int64(2), *newest.ToVersion)
	require.Empty(t, newest.RolloutID)
	require.Empty(t, newest.Error)

	runs, next, err := s.List(ctx, "nobody", "", 0)
	require.NoError(t, err)
	require.Empty(t, runs)
	require.Empty(t, next)
}

// TestListBadPaging: a cursor List did not hand out, or a limit out of
// range, is an error naming it, not a query.
func TestListBadPaging(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	for _, c := range []string{"x", "1", "1.", ".1", "1.0", "-1.1", "01.1", "1.01", "1.1.1", "1.-1", "99999999999999999999.1", "1 .1"} {
		_, _, err := s.List(t.Context(), "a", c, 10)
		require.ErrorIs(t, err, history.ErrInvalidCursor, "cursor %q", c)
	}
	for _, l := range []int{-1, history.MaxPageSize + 1} {
		_, _, err := s.List(t.Context(), "a", "", l)
		require.ErrorIs(t, err, history.ErrInvalidLimit, "limit %d", l)
	}
	_, _, err := s.List(t.Context(), "a", "1700000000000000.5", history.MaxPageSize)
	require.NoError(t, err)
}

// TestDurations: p50 and p95 of the completed runs that applied something,
// since the given time; other runs do not count.
func TestDurations(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	now := time.Now()

	d, err := s.Durations(ctx, now.Add(-time.Hour))
	require.NoError(t, err)
	require.Equal(t, history.Durations{}, d)

	for i := 1; i <= 100; i++ {
		require.NoError(t, s.Record(ctx, run(fmt.Sprintf("t%d", i), now.Add(-time.Duration(i)*time.Second), time.Duration(i)*10*time.Millisecond)))
	}
	// Not counted: too old, failed, nothing applied.
	require.NoError(t, s.Record(ctx, run("old", now.Add(-2*time.Hour), time.Hour)))
	failed := run("failed", now, time.Hour)
	failed.Result = history.ResultFailed
	require.NoError(t, s.Record(ctx, failed))
	noop := run("noop", now, time.Hour)
	noop.ToVersion = noop.FromVersion
	require.NoError(t, s.Record(ctx, noop))

	d, err = s.Durations(ctx, now.Add(-time.Hour))
	require.NoError(t, err)
	require.Equal(t, 100, d.Runs)
	require.InDelta(t, 505*time.Millisecond, d.P50, float64(time.Millisecond))
	require.InDelta(t, 950*time.Millisecond+500*time.Microsecond, d.P95, float64(time.Millisecond))
}

// TestPruneBatches: a pruning deletes every run older than the retention,
// a bounded batch per DELETE, and keeps the newer ones.
func TestPruneBatches(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	for i := range 25 {
		require.NoError(t, s.Record(ctx, run(fmt.Sprintf("old%d", i), now.Add(-31*24*time.Hour-time.Duration(i)*time.Minute), time.Second)))
	}
	for i := range 5 {
		require.NoError(t, s.Record(ctx, run(fmt.Sprintf("new%d", i), now.Add(-29*24*time.Hour), time.Second)))
	}

	// One batch deletes at most its size, the oldest first.
	n, err := s.Prune(ctx, now.Add(-30*24*time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, int64(10), n)
	var oldest time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT min(started_at) FROM tenantmigrate.runs`).Scan(&oldest))
	require.True(t, oldest.Before(now.Add(-31*24*time.Hour-14*time.Minute)), "the oldest ten are gone: %s", oldest)

	p := history.NewPruner(history.PrunerConfig{Store: s, Batch: 4, Now: func() time.Time { return now }})
	n, err = p.PruneOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(15), n)
	require.Equal(t, 5, count(t, pool))
	var left []string
	rows, err := pool.Query(ctx, `SELECT tenant_id FROM tenantmigrate.runs ORDER BY tenant_id`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		left = append(left, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"new0", "new1", "new2", "new3", "new4"}, left)
}

// TestPrunersSideBySide: pruners of several instances at once delete every
// old row once, none waits for another, and they keep the new ones.
func TestPrunersSideBySide(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	now := time.Now()
	_, err := pool.Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, result, started_at, finished_at, process, trigger)
		SELECT 't' || i, 'completed', $1::timestamptz - i * interval '1 second', $1, 'p', 'queue'
		FROM generate_series(1, 2000) i`, now.Add(-40*24*time.Hour))
	require.NoError(t, err)
	require.NoError(t, s.Record(ctx, run("recent", now, time.Second)))

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
	)
	for range 4 {
		wg.Go(func() {
			p := history.NewPruner(history.PrunerConfig{Store: s, Batch: 50})
			n, err := p.PruneOnce(ctx)
			require.NoError(t, err)
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, int64(2000), total)
	require.Equal(t, 1, count(t, pool))
}

// TestPrunerService: a started Pruner prunes at once and on its interval,
// Stop ends it (twice is fine), and it starts again.
func TestPrunerService(t *testing.T) {
	t.Parallel()
	s, pool := newStore(t)
	ctx := t.Context()
	old := func() {
		require.NoError(t, s.Record(ctx, run("old", time.Now().Add(-2*time.Hour), time.Second)))
	}
	old()
	p := history.NewPruner(history.PrunerConfig{Store: s, Retention: time.Hour, Interval: 20 * time.Millisecond})
	p.Stop() // before Start: nothing to stop
	require.NoError(t, p.Start(ctx))
	require.NoError(t, p.Start(ctx))
	fleettest.Poll(t, 10*time.Millisecond, 10*time.Second, "first pruning", func() bool { return count(t, pool) == 0 })
	old()
	fleettest.Poll(t, 10*time.Millisecond, 10*time.Second, "pruning on the interval", func() bool { return count(t, pool) == 0 })
	p.Stop()
	p.Stop()

	old()
	require.Equal(t, 1, count(t, pool), "a stopped pruner deletes nothing")
	require.NoError(t, p.Start(context.WithoutCancel(ctx)))
	t.Cleanup(p.Stop)
	fleettest.Poll(t, 10*time.Millisecond, 10*time.Second, "pruning after a restart", func() bool { return count(t, pool) == 0 })
}
