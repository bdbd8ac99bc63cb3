package servers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// BenchmarkHandOff: the time from a slot's release to a run of the same
// process that waited for it (a request behind a queued job, say) taking
// it, after the waiter has waited hold. go test ./internal/servers -run '^$'
// -bench HandOff -benchtime 20x reports it as handoff-ms (BENCHMARKS.md).
func BenchmarkHandOff(b *testing.B) {
	ctx := b.Context()
	pool, err := pgxpool.New(ctx, fleettest.NewControlPlane(b, ""))
	require.NoError(b, err)
	defer pool.Close()
	m := servers.New(servers.Config{Pool: pool, MaxPerServer: 1})
	defer m.Close(ctx)
	const hold = 500 * time.Millisecond
	var total time.Duration
	for b.Loop() {
		held, err := m.Take(ctx, "db1:5432", false)
		require.NoError(b, err)
		got := make(chan time.Time, 1)
		go func() {
			s, err := m.Take(ctx, "db1:5432", true)
			require.NoError(b, err)
			got <- time.Now()
			s.Release(ctx)
		}()
		// Until the waiter is registered: a run that does not wait is
		// refused for it.
		for {
			if s, err := m.Take(ctx, "db1:5432", false); errors.Is(err, servers.ErrRequestWaits) {
				break
			} else if err == nil {
				s.Release(ctx)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(hold) // the waiter backs off as a real wait does
		released := time.Now()
		held.Release(ctx)
		total += (<-got).Sub(released)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "handoff-ms")
}

// TestWakeUpPassedOnWhenWaitEnds: a waiting run woken by a release whose
// wait ends during the look that follows (here the look blocks on the
// locked servers table until the run's context ends) passes the wake-up to
// the next waiting run: the released slot is free, and the next run is
// told at once instead of at its next look.
func TestWakeUpPassedOnWhenWaitEnds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// The manager's own pool, one session with a name, so the test sees
	// its looks (the slot's lock is this manager's: no query finds it held).
	cpURL := fleettest.NewControlPlane(t, "")
	observer, err := pgxpool.New(ctx, cpURL)
	require.NoError(t, err)
	t.Cleanup(observer.Close)
	pcfg, err := pgxpool.ParseConfig(cpURL)
	require.NoError(t, err)
	pcfg.MaxConns = 1
	pcfg.ConnConfig.RuntimeParams["application_name"] = "wake-test"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	m := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1, MaxTakeBackoff: time.Hour})
	held, err := m.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	var since time.Time
	lookEnded := func() bool { // a look started after since read the server's row and ended
		var n int
		err := observer.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'wake-test' AND state = 'idle' AND query_start > $1
				AND query LIKE '%FROM tenantmigrate.servers WHERE server%'`, since).Scan(&n)
		return err == nil && n > 0
	}

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	aDone := make(chan error, 1)
	go func() {
		s, err := m.Take(actx, "db1:5432", true)
		s.Release(ctx)
		aDone <- err
	}()
	require.Eventually(t, func() bool {
		s, err := m.Take(ctx, "db1:5432", false)
		s.Release(ctx)
		return errors.Is(err, servers.ErrRequestWaits)
	}, 30*time.Second, 2*time.Millisecond, "the first run to wait")
	// The server's clock, which query_start is on.
	require.NoError(t, observer.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&since))
	next, leave := m.AddWaiter("db1:5432")
	defer leave(false)
	// The first run's look ended (its lock of the slot is this manager's:
	// no query): it waits for its timer or a release.
	require.Eventually(t, lookEnded, 30*time.Second, 2*time.Millisecond, "a look of the first run to end")

	tx, err := observer.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, `LOCK TABLE tenantmigrate.servers IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	held.Release(ctx) // wakes the first run, whose look then blocks
	require.Eventually(t, func() bool {
		var n int
		err := observer.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%FROM tenantmigrate.servers WHERE server%'`).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 2*time.Millisecond, "the first run's look to block")
	cancel()
	require.ErrorIs(t, <-aDone, servers.ErrFull)
	select {
	case <-next:
	default:
		t.Fatal("the next waiting run was not woken")
	}
}
