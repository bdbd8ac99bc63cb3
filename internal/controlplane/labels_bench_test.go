package controlplane

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/labels"
)

// BenchmarkSelectors lists a page of 100 tenants, and counts them, for
// selectors of several selectivities over BENCH_TENANTS tenants (default
// 100,000; BENCHMARKS.md has 1,000,000), through the GIN index and, side by
// side on the same table, with bitmap scans turned off (what the planner
// does without the index):
//
//	BENCH_TENANTS=1000000 go test -run '^$' -bench Selectors -benchtime 20x ./internal/controlplane/
//
// Labels: server=db00..db99 (1% each), tier=gold|silver|bronze (a third
// each), region=eu on half, canary=true on 0.1%.
func BenchmarkSelectors(b *testing.B) {
	n := 100_000
	if s := os.Getenv("BENCH_TENANTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	dbURL := newTestDB(b)
	ctx := context.Background()
	pool := newTestPool(b, dbURL)
	require.NoError(b, Migrate(ctx, pool))
	c := testCipher(b)
	enc, err := c.Encrypt("postgres://app:secret@127.0.0.1:1/bench")
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO tenantmigrate.tenants (id, database_url, key_id, labels)
		SELECT 'tenant-' || lpad(i::text, 7, '0'), $1, $2,
			jsonb_build_object('server', 'db' || lpad((i % 100)::text, 2, '0'),
				'tier', (ARRAY['gold', 'silver', 'bronze'])[i % 3 + 1])
			|| CASE WHEN i % 2 = 0 THEN '{"region": "eu"}'::jsonb ELSE '{}' END
			|| CASE WHEN i % 1000 = 7 THEN '{"canary": "true"}'::jsonb ELSE '{}' END
		FROM generate_series(1, $3) AS i`, enc, c.KeyID(), n)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `VACUUM ANALYZE tenantmigrate.tenants`)
	require.NoError(b, err)

	noBitmap, err := pgxpool.ParseConfig(dbURL)
	require.NoError(b, err)
	noBitmap.ConnConfig.RuntimeParams["enable_bitmapscan"] = "off"
	noIndexPool, err := pgxpool.NewWithConfig(ctx, noBitmap)
	require.NoError(b, err)
	b.Cleanup(noIndexPool.Close)

	for _, sel := range []string{"canary", "server=db07", "server=db07,tier=gold", "tier=gold", "region=eu,!canary", "server=db07,region!=eu"} {
		parsed, err := labels.Parse(sel)
		require.NoError(b, err)
		for _, mode := range []struct {
			name string
			pool *pgxpool.Pool
		}{{"gin", pool}, {"no_bitmap", noIndexPool}} {
			s := NewStore(mode.pool, c)
			b.Run(fmt.Sprintf("n=%d/%s/page100/%s", n, sel, mode.name), func(b *testing.B) {
				for b.Loop() {
					page, _, err := s.ListMatching(ctx, parsed, 0, 100)
					require.NoError(b, err)
					require.NotEmpty(b, page)
				}
			})
			b.Run(fmt.Sprintf("n=%d/%s/count/%s", n, sel, mode.name), func(b *testing.B) {
				cond, args := parsed.SQL("labels", 1)
				for b.Loop() {
					var count int64
					require.NoError(b, mode.pool.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.tenants WHERE `+cond, args...).Scan(&count))
					require.Positive(b, count)
				}
			})
		}
	}
}
