package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
)

// latestCache holds the ids of tenants known to be at the latest version.
// Entries are dropped when the control plane notifies a change of the tenant,
// and all of them when the notification stream was interrupted. gen counts
// invalidations so that a lookup that raced with one does not re-add a stale
// entry.
type latestCache struct {
	mu  sync.RWMutex
	m   map[string]struct{}
	gen uint64
	// live is true while the control-plane listener is connected and has
	// reset the cache since; without it nothing is cached or served from the
	// cache, because nothing would invalidate the entries.
	live atomic.Bool
}

func (c *latestCache) init() { c.m = make(map[string]struct{}) }

// has reports whether id is cached as up to date. Nothing is while the
// listener is down: a change made meanwhile by another instance or operator
// would not have dropped the entry.
func (c *latestCache) has(id string) bool {
	if !c.live.Load() {
		return false
	}
	c.mu.RLock()
	_, ok := c.m[id]
	c.mu.RUnlock()
	return ok
}

func (c *latestCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// addIf caches id unless an invalidation happened since gen was read.
func (c *latestCache) addIf(id string, gen uint64) {
	if !c.live.Load() {
		return
	}
	c.mu.Lock()
	if c.gen == gen {
		c.m[id] = struct{}{}
	}
	c.mu.Unlock()
}

func (c *latestCache) drop(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.gen++
	c.mu.Unlock()
}

func (c *latestCache) reset() {
	c.mu.Lock()
	clear(c.m)
	c.gen++
	c.mu.Unlock()
}

func (o *Orchestrator) atLatest(version *int64, status controlplane.Status) bool {
	return version != nil && *version >= o.Target() && status == controlplane.StatusCompleted
}

// servable reports whether this instance has nothing to do for a tenant with
// this state: COMPLETED at its latest version, or recorded above it in any
// status. A tenant above this release's latest belongs to a newer release
// (a rolling deploy runs both): this instance's migrations are all applied
// to it, so it can be served, and this instance must neither run it (its
// source lacks the newer versions) nor record over the newer release's
// state.
func (o *Orchestrator) servable(version *int64, status controlplane.Status) bool {
	return o.atLatest(version, status) || o.newerRelease(version) || (o.Target() == 0 && o.latest > 0)
}

// newerRelease reports whether a tenant recorded at version belongs to a
// newer release than this instance's (see servable).
func (o *Orchestrator) newerRelease(version *int64) bool {
	return version != nil && *version > o.latest
}

func (o *Orchestrator) decide(d GateDecision) {
	if h := o.cfg.Hooks.OnGateDecision; h != nil {
		h(d)
	}
}

// EnsureMigrated makes sure the tenant can be served. A tenant known to be at
// the latest version returns at once, without a query. Otherwise the
// strategy decides: on_request migrates now (concurrent calls for one tenant
// share one run), progressive collects the tenant for the queue and returns,
// full_fleet returns and leaves the tenant to the queue. A tenant never
// migrated is migrated now under every strategy, as it has no schema to serve
// from.
//
// It returns ErrTenantNotFound for an unknown tenant and a *MigrationError
// when the migration failed.
func (o *Orchestrator) EnsureMigrated(ctx context.Context, tenantID string) error {
	if o.cache.has(tenantID) {
		o.decide(GateUpToDate)
		return nil
	}
	return o.ensureSlow(ctx, tenantID)
}

func (o *Orchestrator) ensureSlow(ctx context.Context, tenantID string) error {
	gen := o.cache.generation()
	st, err := o.store.GetState(ctx, tenantID)
	if err != nil {
		if errors.Is(err, controlplane.ErrTenantNotFound) {
			return err
		}
		return fmt.Errorf("read tenant %s: %w", tenantID, err)
	}
	if o.servable(st.MigrationsVersion, st.MigrationsStatus) {
		o.cache.addIf(tenantID, gen)
		o.decide(GateUpToDate)
		return nil
	}
	if o.cfg.Strategy == StrategyOnRequest || st.MigrationsVersion == nil {
		if _, err := o.migrateShared(ctx, tenantID, gen, TriggerRequest); err != nil {
			o.decide(GateFailed)
			return err
		}
		o.decide(GateMigratedInline)
		return nil
	}
	if st.MigrationsStatus == controlplane.StatusFailedStale {
		if o.stale.TryAcquire(tenantID) {
			started := o.runBackground(func(ctx context.Context) {
				defer o.stale.Release(tenantID)
				// A failed probe leaves the tenant FAILED_STALE: as FAILED, the
				// next request would queue it for MaxAttempts more attempts.
				// Nobody waits for this run: its failure is logged here, once.
				if _, err := o.migrateNow(ctx, tenantID, gen, controlplane.StatusFailedStale, TriggerStaleRetry); err != nil {
					o.logger.Warn("background retry of stale tenant failed", "tenant_id", tenantID, "err", err)
				}
			})
			if !started {
				o.stale.Release(tenantID)
			}
		}
		o.decide(GateStaleRetry)
		return nil
	}
	if o.cfg.Strategy == StrategyProgressive {
		if !o.collector.Add(tenantID) {
			// Stop has flushed the collector: nothing would queue the
			// tenant on the way out, so it is queued now.
			ectx, cancel := cleanupCtx(ctx)
			_, err := o.queue.Enqueue(ectx, []string{tenantID})
			cancel()
			if err != nil {
				o.logger.Warn("queue tenant of a request served while stopping", "tenant_id", tenantID, "err", err)
			}
		}
		o.decide(GateEnqueued)
		return nil
	}
	o.decide(GateBehind)
	return nil
}

// migrateShared runs one migration of the tenant for all concurrent callers;
// trigger is the first caller's. The run itself is not cancelled when one
// caller gives up; each caller waits for it as long as its own ctx allows.
//
// The run first waits for a slot of its tenant's database server, for at
// most Limits.InlineServerWait (then it ends with an error wrapping
// ErrServerFull, recording nothing), and only then for an inline slot
// (Limits.InlineConcurrency): a full server holds back its own tenants'
// runs, never the inline runs of other servers' tenants.
func (o *Orchestrator) migrateShared(ctx context.Context, tenantID string, gen uint64, trigger Trigger) (int64, error) {
	ch := o.flight.DoChan(tenantID, func() (any, error) {
		runCtx, done := o.runs.add(context.WithoutCancel(ctx)) // Stop waits for it
		defer done()
		runCtx, cancel := o.withInlineTimeout(runCtx)
		defer cancel()
		waitCtx, cancelWait := o.withServerWait(runCtx)
		defer cancelWait()
		out, err := o.exec.Run(runCtx, run.Request{
			TenantID:      tenantID,
			Trigger:       string(trigger),
			Generation:    gen,
			FailStatus:    func(error) controlplane.Status { return controlplane.StatusFailed },
			WaitForServer: true,
			WaitContext:   waitCtx,
			Limit:         o.inlineSlot,
		})
		if err != nil {
			return int64(0), err
		}
		return out.Version, outcomeErr(tenantID, out)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return 0, res.Err
		}
		return res.Val.(int64), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// withServerWait bounds an inline run's wait for a slot of its server by
// Limits.InlineServerWait; a negative one leaves it to ctx.
func (o *Orchestrator) withServerWait(ctx context.Context) (context.Context, context.CancelFunc) {
	d := cmpOr(o.cfg.Limits.InlineServerWait, DefaultInlineServerWait)
	if d < 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("no slot free within %s", d))
}

// inlineSlot waits for one of the Limits.InlineConcurrency slots of inline
// runs (run.Request.Limit), until ctx ends.
func (o *Orchestrator) inlineSlot(ctx context.Context) (func(), error) {
	select {
	case o.inline <- struct{}{}:
		return func() { <-o.inline }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
