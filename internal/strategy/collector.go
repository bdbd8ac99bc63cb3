package strategy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
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

	full chan struct{} // a batch is ready; buffered, never blocks Add

	lifeMu   sync.Mutex // serialises Start and Stop
	stop     chan struct{}
	done     chan struct{}
	started  bool
	stopping bool // stop is closed; the flusher may still be finishing
}

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
// BatchSize tenants, wakes the flusher.
func (c *Collector) Add(tenantID string) {
	c.mu.Lock()
	c.pending[tenantID] = struct{}{}
	n := len(c.pending)
	c.mu.Unlock()
	if n >= c.cfg.BatchSize {
		select {
		case c.full <- struct{}{}:
		default:
		}
	}
}

// Len is how many tenants the collector holds.
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Start runs the flusher until Stop is called or ctx ends: every Interval it
// queues everything held, and in between a batch whenever BatchSize tenants
// are held. Calling Start on a running Collector does nothing.
func (c *Collector) Start(ctx context.Context) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.started {
		return nil
	}
	c.started = true
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go c.run(ctx, c.stop, c.done)
	return nil
}

// Stop ends the flusher, waiting for a batch in flight, then queues every
// tenant still held, BatchSize per Enqueue call, with ctx. If that fails the
// tenants stay held and Stop returns the error; calling Stop again retries.
// Stop is safe to call more than once and without Start.
func (c *Collector) Stop(ctx context.Context) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.started {
		if !c.stopping {
			close(c.stop)
			c.stopping = true
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("progressive collector: stop: %w", ctx.Err())
		}
		c.started, c.stopping = false, false
	}
	if _, err := c.flush(ctx, 0); err != nil {
		return fmt.Errorf("progressive collector: flush %d tenants on stop: %w", c.Len(), err)
	}
	return nil
}

// run is the flusher loop.
func (c *Collector) run(ctx context.Context, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(c.cfg.Interval)
	defer ticker.Stop()
	failed := false // after a failure only the ticker retries, so a dead database is not hammered
	for {
		var err error
		select {
		case <-stop:
			return
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
		if err != nil {
			failed = true
			if !errors.Is(err, context.Canceled) {
				c.cfg.Logger.ErrorContext(ctx, "progressive collector: queue tenants; retrying at next interval",
					slog.Int("held", c.Len()), slog.String("err", err.Error()))
			}
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
