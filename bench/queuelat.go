package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// queueResult is the outcome of the queue latency benchmark.
type queueResult struct {
	Samples int `json:"samples"`
	// Scenarios are keyed by who enqueues: "same instance" (the working
	// Queue itself) or "other instance" (an insert-only Queue on its own
	// pool, as the CLI, the admin API of another instance or a progressive
	// collector elsewhere).
	Scenarios []latencyStats `json:"scenarios"`
	Load      string         `json:"load"`
}

// latencyStats summarizes a set of durations, in milliseconds.
type latencyStats struct {
	Name string  `json:"name"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	// EnqueueP50 is the median duration of the Enqueue call itself.
	EnqueueP50 float64 `json:"enqueue_p50_ms,omitempty"`
}

// riverSettle is the pause before the queue is measured: River starts its
// maintenance services over a few seconds.
func riverSettle(settle time.Duration) time.Duration { return 2 * settle }

func summarize(name string, ds []time.Duration) latencyStats {
	slices.Sort(ds)
	q := func(p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		i := int(p*float64(len(ds))+0.5) - 1
		return ms(ds[min(max(i, 0), len(ds)-1)])
	}
	return latencyStats{Name: name, P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: q(1)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startRecorder is a queue.Runner that reports when each job starts.
type startRecorder struct {
	mu      sync.Mutex
	waiting map[string]chan time.Time
}

func (r *startRecorder) RunTenant(_ context.Context, tenantID string, _, _ int) error {
	now := time.Now()
	r.mu.Lock()
	ch := r.waiting[tenantID]
	r.mu.Unlock()
	if ch != nil {
		ch <- now
	}
	return nil
}

func (r *startRecorder) expect(id string) chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	return ch
}

// queueLatency measures enqueue -> worker start on an idle queue with the
// default configuration (4 workers, 1s poll interval, LISTEN/NOTIFY).
func (b *bench) queueLatency(ctx context.Context) error {
	name := b.o.prefix + "_queue"
	conn, err := b.srv.connect(ctx, "")
	if err != nil {
		return err
	}
	err = b.srv.recreateDB(ctx, conn, name, "")
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), []string{name}); err != nil {
			b.logf("drop %s: %v", name, err)
		}
	}()

	newPool := func() (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(b.srv.dbURL(name))
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = queue.DefaultWorkers + 8 // as tenantmigrate.New sizes it
		return pgxpool.NewWithConfig(ctx, cfg)
	}
	workPool, err := newPool()
	if err != nil {
		return err
	}
	defer workPool.Close()
	if err := controlplane.Migrate(ctx, workPool); err != nil {
		return err
	}
	rec := &startRecorder{waiting: map[string]chan time.Time{}}
	worker, err := queue.New(queue.Config{Pool: workPool, RunWorkers: true, Runner: rec})
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = worker.Stop(context.WithoutCancel(ctx)) }()

	insertPool, err := newPool()
	if err != nil {
		return err
	}
	defer insertPool.Close()
	inserter, err := queue.New(queue.Config{Pool: insertPool})
	if err != nil {
		return err
	}

	res := &queueResult{Samples: b.o.queueSamples, Load: loadAvg()}
	b.rep.Queue = res
	seq := 0
	measure := func(name string, q *queue.Queue) error {
		var lat, enq []time.Duration
		for i := -3; i < b.o.queueSamples; i++ { // three warm-up jobs
			// Idle between jobs: the producer has gone back to waiting.
			if err := sleep(ctx, 150*time.Millisecond+rand.N(100*time.Millisecond)); err != nil {
				return err
			}
			seq++
			id := fmt.Sprintf("latency-%d", seq)
			started := rec.expect(id)
			t0 := time.Now()
			if _, err := q.Enqueue(ctx, []string{id}); err != nil {
				return err
			}
			t1 := time.Now()
			select {
			case at := <-started:
				if i >= 0 {
					lat = append(lat, at.Sub(t0))
					enq = append(enq, t1.Sub(t0))
				}
			case <-time.After(10 * time.Second):
				return fmt.Errorf("job %s did not start within 10s", id)
			}
		}
		st := summarize(name, lat)
		st.EnqueueP50 = summarize("", enq).P50
		res.Scenarios = append(res.Scenarios, st)
		b.logf("queue: %-15s enqueue->start p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms (Enqueue call p50 %.1fms)",
			name, st.P50, st.P90, st.P99, st.Max, st.EnqueueP50)
		return nil
	}
	// Let River elect its leader and start its services first.
	if err := sleep(ctx, riverSettle(b.o.settle)); err != nil {
		return err
	}
	if err := measure("other instance", inserter); err != nil {
		return err
	}
	return measure("same instance", worker)
}
