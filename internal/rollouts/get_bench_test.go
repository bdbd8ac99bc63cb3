package rollouts_test

import (
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// BenchmarkGet is the cost of reading a running rollout of BENCH_TENANTS
// tenants (default 100,000), half of them finished with a duration, with
// its progress and ETA (from 1000 runs of history):
//
//	go test -run '^$' -bench 'Get$' -benchtime 20x ./internal/rollouts/
func BenchmarkGet(b *testing.B) {
	n := 100_000
	if s := os.Getenv("BENCH_TENANTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	ctx := b.Context()
	pool, err := pgxpool.New(ctx, fleettest.NewControlPlane(b, ""))
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		SELECT 'tenant-' || i, '\x00'::bytea, 1, 'COMPLETED' FROM generate_series(1, $1) i`, n)
	require.NoError(b, err)
	s := rollouts.NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, rollouts.Options{Waves: []rollouts.WaveSize{{Percent: 100}}})
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED', duration_ms = 400 + position % 100,
		finished_at = now() - (position % 1000) * interval '1 second' WHERE rollout_id = $1 AND position % 2 = 0`, r.ID)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, result, started_at, finished_at, process, trigger)
		SELECT 'h' || i, 1, 2, 'completed', now() - i * interval '1 second', now() - i * interval '1 second' + interval '400 ms', 'p:1', 'queue'
		FROM generate_series(1, 1000) i`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `VACUUM ANALYZE`)
	require.NoError(b, err)
	for b.Loop() {
		got, err := s.Get(ctx, r.ID)
		require.NoError(b, err)
		require.NotNil(b, got.ETA)
	}
}
