package rollouts

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// BenchmarkRolloutStart creates the rollout of BENCH_TENANTS tenants
// (default 100,000; BENCHMARKS.md has 1,000,000) that are all behind, and
// reports how long until its tenant count is known and its first batch is
// claimed (the first job could start), until every tenant is in
// rollout_tenants (Store.Fill, which runs beside the first batches), the
// cost of one batch claim after that, and this process's peak RSS:
//
//	BENCH_TENANTS=1000000 go test -run '^$' -bench RolloutStart -benchtime 1x ./internal/rollouts/
func BenchmarkRolloutStart(b *testing.B) {
	n := 100_000
	if s := os.Getenv("BENCH_TENANTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		pool, err := pgxpool.New(ctx, pgtest.NewDatabase(b))
		require.NoError(b, err)
		require.NoError(b, controlplane.Migrate(ctx, pool))
		_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status, labels)
			SELECT 'tenant-' || lpad(i::text, 7, '0'), '\x00'::bytea, 1, 'COMPLETED',
				CASE WHEN i % 10000 = 0 THEN '{"canary": "true"}'::jsonb ELSE '{}' END
			FROM generate_series(1, $1) AS i`, n)
		require.NoError(b, err)
		_, err = pool.Exec(ctx, `VACUUM ANALYZE tenantmigrate.tenants`)
		require.NoError(b, err)
		s := NewStore(pool, nil)
		b.StartTimer()

		start := time.Now()
		r, created, err := s.Ensure(ctx, 2, Options{CanarySelector: "canary=true", Waves: []WaveSize{{Percent: 100}}})
		require.NoError(b, err)
		require.True(b, created)
		require.Equal(b, int64(n), r.Total)
		known := time.Since(start)
		ids, err := s.Claim(ctx, 2, DefaultFeedBatch, 0, func(context.Context, pgx.Tx, []string) error { return nil })
		require.NoError(b, err)
		require.NotEmpty(b, ids)
		first := time.Since(start)
		// The rest of the rollout, inserted while the first batch runs.
		waiting, err := s.Fill(ctx, 2)
		require.NoError(b, err)
		require.False(b, waiting)
		all := time.Since(start)
		var rows int64
		require.NoError(b, pool.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1`, r.ID).Scan(&rows))
		require.Equal(b, int64(n), rows)

		// Finish the canary wave and open the next, then time a claim there.
		_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED' WHERE wave = 0`)
		require.NoError(b, err)
		_, err = s.Step(ctx, 2)
		require.NoError(b, err)
		t0 := time.Now()
		ids, err = s.Claim(ctx, 2, DefaultFeedBatch, 0, func(context.Context, pgx.Tx, []string) error { return nil })
		require.NoError(b, err)
		require.Len(b, ids, DefaultFeedBatch)
		claim := time.Since(t0)
		t0 = time.Now()
		_, err = s.Step(ctx, 2)
		require.NoError(b, err)
		step := time.Since(t0)
		t0 = time.Now()
		_, err = s.Get(ctx, r.ID)
		require.NoError(b, err)
		get := time.Since(t0)

		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		b.ReportMetric(known.Seconds(), "s-count-known")
		b.ReportMetric(first.Seconds(), "s-first-batch")
		b.ReportMetric(all.Seconds(), "s-all-inserted")
		b.ReportMetric(float64(claim.Microseconds())/1000, "ms-claim")
		b.ReportMetric(float64(step.Microseconds())/1000, "ms-step")
		b.ReportMetric(float64(get.Microseconds())/1000, "ms-get")
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-peak-rss")
		pool.Close()
	}
}
