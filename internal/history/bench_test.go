package history_test

import (
	"fmt"
	"testing"
	"time"
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
