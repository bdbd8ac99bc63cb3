package history

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river/rivershared/startstop"
)

// Defaults of PrunerConfig.
const (
	// DefaultRetention is how long runs are kept by default: 30 days.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultPruneInterval is how often a Pruner looks for old runs.
	DefaultPruneInterval = 10 * time.Minute
	// DefaultPruneBatch is how many runs one DELETE removes at most.
	DefaultPruneBatch = 1000
)

// PrunerConfig configures a Pruner.
type PrunerConfig struct {
	// Store is the history to prune. Required.
	Store *Store
	// Retention is how long a run is kept after it started. Defaults to
	// DefaultRetention.
	Retention time.Duration
	// Interval is the pause between two prunings. Defaults to
	// DefaultPruneInterval.
	Interval time.Duration
	// Batch bounds the rows one DELETE removes, so a pruning after a long
	// pause holds no long lock and writes no huge transaction. Defaults to
	// DefaultPruneBatch.
	Batch int
	// Pause is the wait between two batches of one pruning, which leaves
	// the control plane to the fleet's work. Defaults to none.
	Pause time.Duration
	// Logger receives a line per pruning that deleted rows, and its failures
	// (retried at the next interval). Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock, for tests. Defaults to time.Now.
	Now func() time.Time
}

// Pruner deletes the runs older than the retention in the background: at
// Start, then every Interval, one batch after another until a batch finds
// fewer rows than it may delete. Several Pruners (one per instance) may run
// at once: Store.Prune skips the rows another one holds.
type Pruner struct {
	cfg  PrunerConfig
	life startstop.BaseStartStop
}

// NewPruner returns a Pruner; call Start to run it.
func NewPruner(cfg PrunerConfig) *Pruner {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPruneInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultPruneBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pruner{cfg: cfg}
}

// Start runs the pruner until Stop, under a context detached from ctx's
// cancellation. Calling Start on a running Pruner does nothing; a stopped
// one starts again.
func (p *Pruner) Start(ctx context.Context) error {
	ctx, shouldStart, started, stopped := p.life.StartInit(context.WithoutCancel(ctx))
	if !shouldStart {
		return nil
	}
	go func() {
		started()
		defer stopped()
		p.run(ctx)
	}()
	return nil
}

// Stop cancels a pruning in flight (the batch being deleted rolls back) and
// waits for the pruner to end. It is safe to call more than once and
// without Start.
func (p *Pruner) Stop() { p.life.Stop() }

func (p *Pruner) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		n, err := p.PruneOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.cfg.Logger.WarnContext(ctx, "prune run history; retrying at next interval",
				slog.Int64("deleted", n), slog.String("err", err.Error()))
		case n > 0:
			p.cfg.Logger.InfoContext(ctx, "pruned run history",
				slog.Int64("deleted", n), slog.Duration("retention", p.cfg.Retention))
		}
		timer.Reset(p.cfg.Interval)
	}
}

// PruneOnce deletes every run older than the retention, Batch rows per
// DELETE, and returns how many it deleted, until a batch deletes fewer than
// Batch rows or ctx ends.
func (p *Pruner) PruneOnce(ctx context.Context) (int64, error) {
	before := p.cfg.Now().Add(-p.cfg.Retention)
	var total int64
	for {
		n, err := p.cfg.Store.Prune(ctx, before, p.cfg.Batch)
		total += n
		if err != nil || n < int64(p.cfg.Batch) {
			return total, err
		}
		if p.cfg.Pause > 0 {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-time.After(p.cfg.Pause):
			}
		}
	}
}
