package history_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/history"
)

// BenchmarkRecord is the cost the executor adds to every tenant run: one
// INSERT of its history row, on a table that already holds rows of other
// tenants (both indexes maintained).
func BenchmarkRecord(b *testing.B) {
	s, pool := newStoreTB(b)
	ctx := b.Context()
	_, err := pool.Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, result, started_at, finished_at, process, trigger)
		SELECT 't' || (i % 10000), 'completed', now() - i * interval '1 second', now(), 'p:1', 'queue'
		FROM generate_series(1, 100000) i`)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE tenantmigrate.runs`); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := s.Record(ctx, run(fmt.Sprintf("t%d", i%10000), start, 400*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDurations is the cost of the p50/p95 read behind the fleet page
// and the rollout ETA, over the last 24 h of a history of BENCH_RUNS rows
// (default 100,000) spread over 48 h:
//
//	go test -run '^$' -bench Durations -benchtime 200x ./internal/history/
//
// "mixed": 80% of the rows applied migrations, the rest applied nothing,
// failed or went down. "noops": 99% of the rows applied nothing (a fleet
// whose scans find most tenants current), so the 1000 measured runs are
// spread over the whole window. The "-noindex" cases drop the partial
// index runs_applied_started_idx first, to show what it saves.
func BenchmarkDurations(b *testing.B) {
	n := 100_000
	if s := os.Getenv("BENCH_RUNS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		// applied is the share of rows, in percent, that applied migrations.
		applied   int
		dropIndex bool
	}{{"mixed", 80, false}, {"noops", 1, false}, {"mixed-noindex", 80, true}, {"noops-noindex", 1, true}} {
		b.Run(bc.name, func(b *testing.B) {
			s, pool := newStoreTB(b)
			ctx := b.Context()
			// Row i started i × 48 h / n ago and took 100 ms to 1.1 s.
			_, err := pool.Exec(ctx, `
				INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, direction, result,
					started_at, finished_at, process, trigger)
				SELECT 't' || (i % 10000), 1,
					CASE WHEN i % 100 < $2 THEN 2 ELSE 1 END,
					CASE WHEN i % 100 = 99 THEN 'down' ELSE 'up' END,
					CASE WHEN i % 100 = 98 THEN 'failed' ELSE 'completed' END,
					now() - i * (interval '48 hours' / $1),
					now() - i * (interval '48 hours' / $1) + (100 + i % 1000) * interval '1 millisecond',
					'p:1', 'queue'
				FROM generate_series(1, $1) i`, n, bc.applied)
			if err != nil {
				b.Fatal(err)
			}
			if bc.dropIndex {
				if _, err := pool.Exec(ctx, `DROP INDEX tenantmigrate.runs_applied_started_idx`); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := pool.Exec(ctx, `VACUUM ANALYZE tenantmigrate.runs`); err != nil {
				b.Fatal(err)
			}
			since := time.Now().Add(-24 * time.Hour)
			var d history.Durations
			for b.Loop() {
				if d, err = s.Durations(ctx, since); err != nil {
					b.Fatal(err)
				}
			}
			if d.Runs == 0 || d.P95 < d.P50 {
				b.Fatalf("measured %+v", d)
			}
			b.ReportMetric(float64(d.Runs), "runs-measured")
		})
	}
}
