package servers_test

import (
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
