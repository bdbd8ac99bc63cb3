package queue_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// BenchmarkEnqueue1000 measures one Enqueue call of 1,000 new tenants (one
// InsertMany batch) on an insert-only Queue.
func BenchmarkEnqueue1000(b *testing.B) {
	ctx := context.Background()
	pool := newPool(b, newControlPlane(b), nil)
	q, err := queue.New(queue.Config{Pool: pool})
	require.NoError(b, err)

	ids := make([]string, 1000)
	round := 0
	for b.Loop() {
		b.StopTimer()
		round++
		for i := range ids {
			ids[i] = fmt.Sprintf("bench-%d-%04d", round, i)
		}
		b.StartTimer()

		n, err := q.Enqueue(ctx, ids)
		if err != nil {
			b.Fatal(err)
		}
		if n != len(ids) {
			b.Fatalf("inserted %d, want %d", n, len(ids))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(round)/1000, "µs/job")
}
