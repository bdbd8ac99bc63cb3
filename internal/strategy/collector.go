package strategy

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/riverqueue/river/rivershared/startstop"
)

// Defaults of CollectorConfig.
const (
	DefaultCollectInterval  = time.Minute
	DefaultCollectBatchSize = 200
)

// CollectorConfig configures a Collector.
type CollectorConfig struct {
	// Enqueue queues one batch. Required.
	Enqueue EnqueueFunc

	// Interval is how often the collector queues whatever it holds.
	//
	// Defaults to 1 minute.
	Interval time.Duration

	// BatchSize is the most tenants one Enqueue call gets; holding this many
	// triggers a flush before the interval ends.
	//
	// Defaults to 200.
	BatchSize int

	// Logger receives failed background flushes (the tenants are kept and
	// retried at the next interval).
	//
	// Defaults to discarding logs.
	Logger *slog.Logger
}

// Collector is the progressive strategy: requests report tenants that are
// behind with Add, and the collector queues them in batches, so the fleet is
// migrated in the order tenants show up without a job insert per request.
type Collector struct {
	cfg CollectorConfig

	mu      sync.Mutex
	pending map[string]struct{}
	// closed is set by Stop before its last flush, and cleared by Start:
	// from then on Add holds nothing, since no flush would queue it.
	closed bool

	full chan struct{} // a batch is ready; buffered, never blocks Add

	// life is the flusher's Start/Stop state, River's own helper: Start twice
	// starts one flusher, Stop without Start or twice is safe, and a stopped
	// Collector starts again. Add never takes its lock.
	life startstop.BaseStartStop
}

// stopFlushTimeout bounds the flush on Stop. It is not Stop's ctx deadline:
// the tenants held must reach the queue even when the shutdown's time ran
// out waiting for migrations.
const stopFlushTimeout = 10 * time.Second

// NewCollector returns a Collector; call Start to flush in the background.
func NewCollector(cfg CollectorConfig) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultCollectInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultCollectBatchSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		cfg:     cfg,
		pending: make(map[string]struct{}),
		full:    make(chan struct{}, 1),
	}
}

// Add records that tenantID should be queued. It never blocks on I/O: it
// adds to an in-memory set (a tenant held already is not added twice) and, at
// BatchSize tenants, wakes the flusher. It reports false, holding nothing,
// once Stop has begun its last flush: the caller queues the tenant itself.
func (c *Collector) Add(tenantID string) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.pending[tenantID] = struct{}{}
	n := len(c.pending)
	c.mu.Unlock()
	if n >= c.cfg.BatchSize {
		select {
		case c.full <- struct{}{}:
		default:
		}
	}
	return true
}

// Len is how many tenants the collector holds.
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Start runs the flusher until Stop is called: every Interval it queues
// everything held, and in between a batch whenever BatchSize tenants are
// held. The flusher runs under a context detached from ctx, so cancelling ctx
// (a signal) does not end it: Stop does, and flushes. Calling Start on a
// running Collector does nothing.
func (c *Collector) Start(ctx context.Context) error {
	ctx, shouldStart, started, stopped := c.life.StartInit(context.WithoutCancel(ctx))
	if !shouldStart {
		return nil
	}
	c.mu.Lock()
	c.closed = false
	c.mu.Unlock()
	go func() {
		started()
		defer stopped()
		c.run(ctx)
	}()
	return nil
}

// Stop ends the flusher (a batch in flight is cancelled and kept), then
// queues every tenant still held, BatchSize per Enqueue call. Both run under
// ctx's values with a timeout of their own (10 seconds), not ctx's deadline,
// so that the tenants are queued even when the caller's time is up. If the
// flush fails the tenants stay held and Stop returns the error; calling Stop
// again retries. Stop is safe to call more than once and without Start.
func (c *Collector) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopFlushTimeout)
	defer cancel()
	if shouldStop, stopped, finalizeStop := c.life.StopInit(); shouldStop {
		select {
		case <-stopped:
			finalizeStop(true)
		case <-ctx.Done():
			finalizeStop(false)
			return fmt.Errorf("progressive collector: stop: %w", ctx.Err())
		}
	}
	// Adds from now on are the callers' to queue: what is held now is all
	// this flush, or a retried Stop's, has to queue.
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if _, err := c.flush(ctx, 0); err != nil {
		return fmt.Errorf("progressive collector: flush %d tenants on stop: %w", c.Len(), err)
	}
	return nil
}

// run is the flusher loop; it returns when Stop cancels ctx.
func (c *Collector) run(ctx context.Context) {
	ticker := time.NewTicker(c.cfg.Interval)
	defer ticker.Stop()
	failed := false // after a failure only the ticker retries, so a dead database is not hammered
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			failed = false
			_, err = c.flush(ctx, 0)
		case <-c.full:
			if failed {
				continue
			}
			_, err = c.flush(ctx, c.cfg.BatchSize)
		}
		if err != nil && ctx.Err() == nil {
			failed = true
			c.cfg.Logger.ErrorContext(ctx, "progressive collector: queue tenants; retrying at next interval",
				slog.Int("held", c.Len()), slog.String("err", err.Error()))
		}
	}
}

// flush queues held tenants in batches of BatchSize while at least min are
// held (min 0: until none are). A batch that fails goes back to the set.
func (c *Collector) flush(ctx context.Context, minHeld int) (queued int, err error) {
	for {
		batch := c.pop(minHeld)
		if len(batch) == 0 {
			return queued, nil
		}
		n, err := c.cfg.Enqueue(ctx, batch)
		if err != nil {
			c.putBack(batch)
			return queued, err
		}
		queued += n
	}
}

// pop removes and returns up to BatchSize tenants, or nothing when fewer than
// max(minHeld, 1) are held.
func (c *Collector) pop(minHeld int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 || len(c.pending) < minHeld {
		return nil
	}
	batch := make([]string, 0, min(len(c.pending), c.cfg.BatchSize))
	for id := range c.pending {
		if len(batch) == c.cfg.BatchSize {
			break
		}
		batch = append(batch, id)
		delete(c.pending, id)
	}
	return batch
}

func (c *Collector) putBack(batch []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range batch {
		c.pending[id] = struct{}{}
	}
}
