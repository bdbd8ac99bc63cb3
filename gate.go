package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
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
	return version != nil && *version >= o.latest && status == controlplane.StatusCompleted
}

// servable reports whether this instance has nothing to do for a tenant with
// this state: COMPLETED at its latest version, or recorded above it in any
// status. A tenant above this release's latest belongs to a newer release
// (a rolling deploy runs both): this instance's migrations are all applied
// to it, so it can be served, and this instance must neither run it (its
// source lacks the newer versions) nor record over the newer release's
// state.
func (o *Orchestrator) servable(version *int64, status controlplane.Status) bool {
	return o.atLatest(version, status) || o.newerRelease(version)
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
		if _, err := o.migrateShared(ctx, tenantID, gen); err != nil {
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
				if _, err := o.migrateNow(ctx, tenantID, gen, controlplane.StatusFailedStale); err != nil {
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
		o.collector.Add(tenantID)
		o.decide(GateEnqueued)
		return nil
	}
	o.decide(GateBehind)
	return nil
}

// migrateShared runs one migration of the tenant for all concurrent callers.
// The run itself is not cancelled when one caller gives up; each caller
// waits for it as long as its own ctx allows.
func (o *Orchestrator) migrateShared(ctx context.Context, tenantID string, gen uint64) (int64, error) {
	ch := o.flight.DoChan(tenantID, func() (any, error) {
		runCtx, done := o.runs.add(context.WithoutCancel(ctx)) // Stop waits for it
		defer done()
		runCtx, cancel := context.WithTimeout(runCtx, o.inlineTimeout())
		defer cancel()
		select {
		case o.inline <- struct{}{}:
			defer func() { <-o.inline }()
		case <-runCtx.Done():
			return int64(0), runCtx.Err()
		}
		return o.migrateNow(runCtx, tenantID, gen, controlplane.StatusFailed)
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

func (o *Orchestrator) inlineTimeout() time.Duration {
	return cmpOr(o.cfg.JobTimeout, 15*time.Minute)
}

// maxStaleReruns bounds how often one call runs a tenant again after its
// result could not be recorded because the tenant changed meanwhile (see
// controlplane.ErrStaleResult).
const maxStaleReruns = 3

// migrateNow migrates one tenant in this goroutine and records the result in
// the control plane. A failure is recorded with failStatus.
func (o *Orchestrator) migrateNow(ctx context.Context, tenantID string, gen uint64, failStatus controlplane.Status) (int64, error) {
	if o.cfg.ReadOnly {
		return 0, ErrReadOnly
	}
	for rerun := 0; ; rerun++ {
		t, err := o.store.Get(ctx, tenantID)
		if err != nil {
			return 0, fmt.Errorf("read tenant %s: %w", tenantID, err)
		}
		// A newer release owns it; or, on a rerun, another run completed it
		// meanwhile. A first run of a tenant at the latest version goes on: an
		// explicit MigrateTenant checks the tenant database itself.
		if o.newerRelease(t.MigrationsVersion) || (rerun > 0 && o.atLatest(t.MigrationsVersion, t.MigrationsStatus)) {
			o.cache.addIf(tenantID, gen)
			return *t.MigrationsVersion, nil
		}
		res, err := o.migrator.Migrate(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
		o.recordChecksums(ctx, res.Applied)
		o.runHook(err, res.Duration)
		if err != nil && cancelledByShutdown(ctx) {
			o.logger.Info("tenant migration interrupted by shutdown; nothing recorded", "tenant_id", tenantID, "version", res.Version, "duration_ms", res.Duration.Milliseconds())
			return res.Version, &MigrationError{TenantID: tenantID, Version: res.Version, Err: err}
		}
		if err != nil {
			o.logger.Warn("tenant migration failed", "tenant_id", tenantID, "version", res.Version, "duration_ms", res.Duration.Milliseconds(), "err", err)
			rerr := o.recordFailure(ctx, t, res, failStatus, err)
			if errors.Is(rerr, controlplane.ErrStaleResult) && rerun < maxStaleReruns {
				o.logger.Info("tenant changed during its run; failure not recorded, running it again", "tenant_id", tenantID)
				continue
			}
			if rerr != nil && !errors.Is(rerr, controlplane.ErrStaleResult) {
				o.logger.Error("record tenant failure", "tenant_id", tenantID, "err", rerr)
			}
			return res.Version, &MigrationError{TenantID: tenantID, Version: res.Version, Err: err}
		}
		if err := o.store.RecordSuccess(ctx, tenantID, t.Origin(), res.Version); err != nil {
			if errors.Is(err, controlplane.ErrStaleResult) && rerun < maxStaleReruns {
				o.logger.Info("tenant changed during its run; result not recorded, running it again", "tenant_id", tenantID, "version", res.Version)
				continue
			}
			return res.Version, fmt.Errorf("record tenant %s at version %d: %w", tenantID, res.Version, err)
		}
		o.logger.Info("tenant migrated", "tenant_id", tenantID, "version", res.Version, "applied", len(res.Applied), "duration_ms", res.Duration.Milliseconds())
		if res.Version >= o.latest {
			o.cache.addIf(tenantID, gen)
		}
		return res.Version, nil
	}
}

func (o *Orchestrator) runHook(err error, d time.Duration) {
	h := o.cfg.Hooks.OnMigrationRun
	if h == nil {
		return
	}
	result := "completed"
	if err != nil {
		result = "failed"
	}
	h(o.cfg.Strategy, result, d)
}

// knownVersion is the tenant's version after a failed run, or nil when the
// run learnt nothing (it could not connect: the migrator reports -1) or the
// tenant has nothing applied, so the stored one stays.
func knownVersion(res migrator.Result) *int64 {
	if res.Version <= 0 {
		return nil
	}
	return &res.Version
}

// cleanupCtx detaches ctx from cancellation for a short write that must
// happen even when the caller gave up, e.g. recording a failure.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// recordFailure records a failed run of t (as it was read before the run),
// even when ctx has ended.
func (o *Orchestrator) recordFailure(ctx context.Context, t controlplane.Tenant, res migrator.Result, status controlplane.Status, runErr error) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	return o.store.RecordFailure(ctx, t.ID, t.Origin(), knownVersion(res), status, runErr.Error())
}

// jobRunner runs queued migrate_tenant jobs for the queue package.
type jobRunner Orchestrator

// RunTenant performs one queued attempt: it re-reads the tenant and finishes
// at once when it was deleted or is already at the latest version; otherwise
// it migrates and records COMPLETED, FAILED while attempts remain, or
// FAILED_STALE after the last attempt or a non-retryable error.
func (r *jobRunner) RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error {
	o := (*Orchestrator)(r)
	if o.cfg.ReadOnly {
		return ErrReadOnly // not reached: a ReadOnly Orchestrator runs no workers
	}
	for rerun := 0; ; rerun++ {
		t, err := o.store.Get(ctx, tenantID)
		if errors.Is(err, controlplane.ErrTenantNotFound) {
			o.logger.Info("queued tenant was deleted; nothing to do", "tenant_id", tenantID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tenant %s: %w", tenantID, err)
		}
		if o.servable(t.MigrationsVersion, t.MigrationsStatus) {
			return nil
		}
		res, err := o.migrator.Migrate(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
		o.recordChecksums(ctx, res.Applied)
		o.runHook(err, res.Duration)
		if err == nil {
			if err := o.store.RecordSuccess(ctx, tenantID, t.Origin(), res.Version); err != nil {
				if errors.Is(err, controlplane.ErrStaleResult) && rerun < maxStaleReruns {
					o.logger.Info("tenant changed during its run; result not recorded, running it again", "tenant_id", tenantID, "version", res.Version)
					continue
				}
				return fmt.Errorf("record tenant %s at version %d: %w", tenantID, res.Version, err)
			}
			o.logger.Info("tenant migrated", "tenant_id", tenantID, "version", res.Version, "applied", len(res.Applied), "attempt", attempt, "duration_ms", res.Duration.Milliseconds())
			return nil
		}
		if cancelledByShutdown(ctx) {
			// The job goes back to the queue without using the attempt; the
			// tenant keeps the state it had.
			o.logger.Info("tenant migration interrupted by shutdown; requeued, nothing recorded", "tenant_id", tenantID, "version", res.Version, "attempt", attempt)
			return &MigrationError{TenantID: tenantID, Version: res.Version, Err: err}
		}
		status := controlplane.StatusFailed
		interrupted := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
		if attempt >= maxAttempts || (!interrupted && !migrator.IsRetryable(err)) {
			status = controlplane.StatusFailedStale
		}
		o.logger.Warn("tenant migration failed", "tenant_id", tenantID, "version", res.Version, "attempt", attempt, "max_attempts", maxAttempts, "status", status, "err", err)
		if rerr := o.recordFailure(ctx, t, res, status, err); rerr != nil {
			if errors.Is(rerr, controlplane.ErrStaleResult) && rerun < maxStaleReruns && ctx.Err() == nil {
				o.logger.Info("tenant changed during its run; failure not recorded, running it again", "tenant_id", tenantID)
				continue
			}
			if !errors.Is(rerr, controlplane.ErrStaleResult) {
				return fmt.Errorf("record failure of tenant %s: %w (migration error: %w)", tenantID, rerr, err)
			}
		}
		return &MigrationError{TenantID: tenantID, Version: res.Version, Err: err}
	}
}
