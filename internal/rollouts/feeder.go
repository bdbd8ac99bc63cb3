package rollouts

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivershared/startstop"
)

// Defaults of FeederConfig.
const (
	// DefaultFeedBatch is how many tenants a feeder queues at once; it
	// queues a batch whenever fewer than that are in flight, so with one
	// feeder a rollout has at most 2*DefaultFeedBatch live jobs. The count
	// and the claim are two statements, so N instances' feeders that count
	// at once may each queue a batch: at most (N+1)*DefaultFeedBatch.
	DefaultFeedBatch = 100
	// DefaultFeedInterval is how often a feeder steps the rollout when
	// nothing wakes it.
	DefaultFeedInterval = time.Second
)

// FeederConfig configures a Feeder.
type FeederConfig struct {
	Store *Store
	// Target is the version of this instance's release: the feeder feeds
	// only the rollout to it.
	Target int64
	// EnqueueTx queues jobs for tenants in the claim's transaction.
	// Required.
	EnqueueTx func(ctx context.Context, tx pgx.Tx, ids []string) (int, error)
	// BatchSize defaults to DefaultFeedBatch.
	BatchSize int
	// Interval defaults to DefaultFeedInterval.
	Interval time.Duration
	// Logger receives step failures at warn. Defaults to discarding.
	Logger *slog.Logger
}

// Feeder feeds the queue from the active rollout of its target in bounded
// batches and steps the rollout's waves. Every instance that works the
// queue runs one; they share the work through the control plane.
type Feeder struct {
	cfg      FeederConfig
	wake     chan struct{}
	fillWake chan struct{}

	life startstop.BaseStartStop
}

// NewFeeder returns a Feeder.
func NewFeeder(cfg FeederConfig) *Feeder {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultFeedBatch
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultFeedInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Feeder{cfg: cfg, wake: make(chan struct{}, 1), fillWake: make(chan struct{}, 1)}
}

// Start starts feeding, under a context detached from ctx's cancellation.
// Starting a running Feeder does nothing.
func (f *Feeder) Start(ctx context.Context) error {
	ctx, shouldStart, started, stopped := f.life.StartInit(context.WithoutCancel(ctx))
	if !shouldStart {
		return nil
	}
	go func() {
		started()
		defer stopped()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); f.loop(ctx) }()
		go func() { defer wg.Done(); f.fillLoop(ctx) }()
		wg.Wait()
	}()
	return nil
}

// Stop stops feeding and waits for the step in progress. An insert of a
// rollout's later waves in progress (Store.Fill) is rolled back, and another
// instance, or this one when started again, takes it over. It is safe to
// call twice and on a Feeder never started.
func (f *Feeder) Stop() { f.life.Stop() }

// Wake makes the feeder step now (a tenant of the rollout finished).
func (f *Feeder) Wake() {
	for _, c := range []chan struct{}{f.wake, f.fillWake} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func (f *Feeder) loop(ctx context.Context) {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		if err := f.Feed(ctx); err != nil && ctx.Err() == nil {
			f.cfg.Logger.WarnContext(ctx, "rollout feeder step failed", "version", f.cfg.Target, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.wake:
		}
	}
}

// Feed steps the rollout once and, when it is running with fewer than a
// batch of tenants in flight, queues the next batch.
func (f *Feeder) Feed(ctx context.Context) error {
	state, err := f.cfg.Store.Step(ctx, f.cfg.Target)
	if err != nil || state != StateRunning {
		return err
	}
	inflight, err := f.cfg.Store.InFlight(ctx, f.cfg.Target)
	if err != nil || inflight >= int64(f.cfg.BatchSize) {
		return err
	}
	_, err = f.cfg.Store.Claim(ctx, f.cfg.Target, f.cfg.BatchSize, 0, func(ctx context.Context, tx pgx.Tx, ids []string) error {
		_, err := f.cfg.EnqueueTx(ctx, tx, ids)
		return err
	})
	return err
}

// fillLoop inserts the later waves of the rollout to the feeder's target
// (Store.Fill) beside the feeding loop, which meanwhile hands out the
// rollout's head: an insert of 1M tenants takes seconds.
func (f *Feeder) fillLoop(ctx context.Context) {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := f.cfg.Store.Fill(ctx, f.cfg.Target); err != nil && ctx.Err() == nil {
			f.cfg.Logger.WarnContext(ctx, "rollout backlog insert failed", "version", f.cfg.Target, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.fillWake:
		}
	}
}
