// Package strategy decides when tenants are queued for migration: the
// full_fleet scan (Fleet), the progressive collector (Collector) and the
// limiter for background retries of FAILED_STALE tenants (StaleLimiter). The
// on_request strategy needs nothing here: the request path migrates inline.
//
// The package depends on the queue only through EnqueueFunc, which
// (*queue.Queue).Enqueue satisfies.
package strategy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultPageSize is how many tenants Fleet reads, and enqueues, per page.
const DefaultPageSize = 1000

// DefaultEnqueueConcurrency is how many pages Fleet enqueues at once.
const DefaultEnqueueConcurrency = 2

// EnqueueFunc queues a migrate_tenant job per tenant, skipping tenants that
// already have a live job, and returns how many it queued.
// (*queue.Queue).Enqueue has this shape.
type EnqueueFunc func(ctx context.Context, ids []string) (inserted int, err error)

// Scanner pages through the tenants behind a version. controlplane.Store
// satisfies it.
type Scanner interface {
	// ScanBehind returns up to limit ids of tenants whose version is below
	// latest (or unknown) with cursor_id above afterCursor, in cursor order,
	// leaving out FAILED_STALE tenants unless includeStale. nextCursor is the
	// afterCursor of the next page; 0 (or any value not above afterCursor)
	// means there is no next page.
	ScanBehind(ctx context.Context, latest int64, includeStale bool, afterCursor int64, limit int) (ids []string, nextCursor int64, err error)
}

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Scanner lists the tenants behind Latest. Required.
	Scanner Scanner

	// Enqueue queues the tenants of one page. Required.
	Enqueue EnqueueFunc

	// Latest is the version tenants should be at: the highest migration this
	// process knows.
	Latest int64

	// PageSize is how many tenants one ScanBehind call returns and one
	// Enqueue call queues. Memory use is bounded by one page.
	//
	// Defaults to 1000.
	PageSize int

	// EnqueueConcurrency is how many pages are enqueued at once, each in its
	// own Enqueue call (and transaction), while the next page is read. A
	// page's insert is one statement, which PostgreSQL runs on one core; two
	// at once keep a 2-core database busy and halve a 100k-tenant scan.
	// Pages hold disjoint tenants, so concurrent Enqueue calls never wait on
	// each other's rows. Memory use is bounded by EnqueueConcurrency+1 pages.
	//
	// Defaults to DefaultEnqueueConcurrency (2).
	EnqueueConcurrency int

	// Logger receives a line per finished scan.
	//
	// Defaults to discarding logs.
	Logger *slog.Logger
}

// Fleet is the full_fleet strategy: it queues every tenant behind the latest
// version.
//
// # Who scans at start
//
// Several instances starting together on one control plane must scan the
// fleet once, not once each. Fleet leaves that to River (see
// queue.Config.FleetScan) rather than to an advisory lock of its own:
//
//   - River already elects exactly one leader per schema (river_leader, with
//     a TTL, taken over when the leader dies). The leader's periodic job
//     enqueuer inserts a fleet_scan job when it gains leadership (RunOnStart)
//     and then every rescan interval; followers insert nothing.
//   - The scan is a durable job. If the instance running it dies, River
//     rescues the job and another instance runs it again; with a lock held
//     in a session, a scan interrupted by a crash would just be lost until
//     the next restart or rescan.
//   - An advisory lock only excludes instances that overlap in time. An
//     instance that starts after the first one finished would take the free
//     lock and scan again, so the lock needs a "last scan" record beside it,
//     i.e. a table and its upkeep in the control plane. The fleet_scan job
//     is that record: it is unique per rescan interval (River's unique index,
//     completed jobs included; windows are aligned to multiples of the
//     interval in UTC), so a change of leader within a window does not scan
//     again.
//   - Rescans need no timer per instance, and both scans and their results
//     show in River's tables and UI like every other job.
//
// The price is a dependency on River's leader election (a new leader is
// chosen at once when the old one stops, and within about 20 seconds when it
// dies) and a start-up delay of up to a second (River staggers its
// maintenance services).
//
// ScanNow runs a scan directly on the calling instance, for the admin API and
// the fleet_scan job alike. The job runs on whichever instance fetches it and
// scans against that instance's Latest. Wiring, where the cycle between the
// two is broken by a closure that runs only after both exist:
//
//	var q *queue.Queue
//	fleet := strategy.NewFleet(strategy.FleetConfig{
//		Scanner: store,
//		Latest:  latest,
//		Enqueue: func(ctx context.Context, ids []string) (int, error) { return q.Enqueue(ctx, ids) },
//	})
//	q, err := queue.New(queue.Config{ /* ... */ FleetScan: fleet.ScanNow})
type Fleet struct {
	cfg FleetConfig
}

// NewFleet returns a Fleet.
func NewFleet(cfg FleetConfig) *Fleet {
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.EnqueueConcurrency <= 0 {
		cfg.EnqueueConcurrency = DefaultEnqueueConcurrency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fleet{cfg: cfg}
}

// ScanNow pages through the tenants behind Latest by cursor, FAILED_STALE ones
// too when includeStale, and enqueues each page with one Enqueue call, up to
// EnqueueConcurrency pages at once. It returns how many jobs it queued;
// tenants that already had a live job are not counted. On error the count
// covers the pages queued before it (the scan stops reading and waits for
// the pages in flight), and running ScanNow again is safe.
func (f *Fleet) ScanNow(ctx context.Context, includeStale bool) (scheduled int, err error) {
	return f.ScanAt(ctx, f.cfg.Latest, includeStale)
}

// ScanAt is ScanNow for tenants behind latest rather than FleetConfig.Latest:
// a fleet_scan job carries the latest version of the release that queued it,
// and scans for it whichever instance runs it.
func (f *Fleet) ScanAt(ctx context.Context, latest int64, includeStale bool) (scheduled int, err error) {
	if f.cfg.Scanner == nil || f.cfg.Enqueue == nil {
		return 0, errors.New("fleet scan: Scanner and Enqueue are required")
	}
	start := time.Now()
	var (
		queued atomic.Int64
		failed atomic.Bool
	)
	// The pages are read one after another (the cursor of one is the start
	// of the next) and enqueued in the group. A failed Enqueue stops the
	// reading, but does not cancel the pages in flight: a canceled insert
	// may still have committed, and its count would be lost.
	var g errgroup.Group
	g.SetLimit(f.cfg.EnqueueConcurrency)
	var (
		cursor  int64
		pages   int
		readErr error
	)
	for !failed.Load() {
		pages++
		ids, next, err := f.cfg.Scanner.ScanBehind(ctx, latest, includeStale, cursor, f.cfg.PageSize)
		if err != nil {
			readErr = fmt.Errorf("read tenants after cursor %d: %w", cursor, err)
			break
		}
		if len(ids) > 0 {
			pageCursor := cursor
			g.Go(func() error {
				n, err := f.cfg.Enqueue(ctx, ids)
				queued.Add(int64(n))
				if err != nil {
					failed.Store(true)
					return fmt.Errorf("queue page after cursor %d: %w", pageCursor, err)
				}
				return nil
			})
		}
		// The cursor decides, not the page's length: a Scanner may cap limit.
		// A cursor that does not move ends the scan rather than loop.
		if len(ids) == 0 || next <= cursor {
			break
		}
		cursor = next
	}
	enqueueErr := g.Wait()
	scheduled = int(queued.Load())
	// The enqueue error first: it is why the reading stopped.
	if err := cmp.Or(enqueueErr, readErr); err != nil {
		return scheduled, fmt.Errorf("fleet scan (%d queued): %w", scheduled, err)
	}
	f.cfg.Logger.InfoContext(ctx, "fleet scan finished",
		slog.Int64("version", latest),
		slog.Bool("include_stale", includeStale),
		slog.Int("scheduled", scheduled),
		slog.Int("pages", pages),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	)
	return scheduled, nil
}
