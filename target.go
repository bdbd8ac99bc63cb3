package tenantmigrate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// This file holds the fleet's target version: by default the source's
// latest, or lower while an operator pins it (tenantmigrate target set, PUT
// /admin/target, a rollback). The pin is stored in the control plane, and
// every instance hears of a change through the control-plane listener, so
// within moments every gate, scan, batch and report aims at it.

// ErrInvalidTarget is wrapped by the error of SetTarget (and of Rollback and
// Force) for a version below 0 or above the source's latest.
var ErrInvalidTarget = fmt.Errorf("%w target version", controlplane.ErrInvalid)

// targetReadTimeout bounds the read of the pin after a notification.
const targetReadTimeout = 5 * time.Second

// targetState is the Orchestrator's view of the stored pin.
type targetState struct {
	// mu serialises applyTarget's check of gen and its swap of pin: two
	// reads applied at once must not let the older one's pin win.
	mu  sync.Mutex
	pin atomic.Int64 // the pinned version, -1 when none
	gen atomic.Int64 // the stored generation last read
}

func (s *targetState) init() { s.pin.Store(-1) }

// FleetTarget is the fleet's target version, as FleetTarget, SetTarget and
// ClearTarget return it.
type FleetTarget = tenanttype.FleetTarget

// Target is the version tenants are migrated to now: the pinned fleet target
// when one is pinned (see SetTarget), else Latest.
func (o *Orchestrator) Target() int64 {
	if p := o.target.pin.Load(); p >= 0 && p < o.latest {
		return p
	}
	return o.latest
}

// TargetPinned reports whether a fleet target is pinned.
func (o *Orchestrator) TargetPinned() bool { return o.target.pin.Load() >= 0 }

// FleetTarget reads the fleet target from the control plane, and makes this
// Orchestrator aim at it.
func (o *Orchestrator) FleetTarget(ctx context.Context) (FleetTarget, error) {
	t, err := o.store.FleetTarget(ctx)
	if err != nil {
		return FleetTarget{}, err
	}
	o.applyTarget(ctx, t)
	return o.fleetTarget(t), nil
}

func (o *Orchestrator) fleetTarget(t controlplane.FleetTarget) FleetTarget {
	ft := FleetTarget{Version: o.latest, Pinned: t.Version, Latest: o.latest, UpdatedAt: t.UpdatedAt}
	if t.Version != nil {
		ft.Version = min(*t.Version, o.latest)
	}
	return ft
}

// SetTarget pins the fleet target to version: from then on no instance
// migrates a tenant above it, the gate serves tenants at or above it, and
// scans, batches and reports aim at it. Tenants above it stay where they
// are (Rollback moves them back). A version below 0 or above Latest is an
// error wrapping ErrInvalidTarget. Every running instance follows within
// moments (the control-plane listener).
func (o *Orchestrator) SetTarget(ctx context.Context, version int64) (FleetTarget, error) {
	if err := o.checkTarget(version); err != nil {
		return FleetTarget{}, err
	}
	t, err := o.store.SetFleetTarget(ctx, &version)
	if err != nil {
		return FleetTarget{}, err
	}
	o.applyTarget(ctx, t)
	return o.fleetTarget(t), nil
}

// ClearTarget removes the pin: the fleet goes back to the latest version
// through the strategies (full_fleet instances scan at once; the gate runs
// on_request and progressive tenants on their next request).
func (o *Orchestrator) ClearTarget(ctx context.Context) (FleetTarget, error) {
	t, err := o.store.SetFleetTarget(ctx, nil)
	if err != nil {
		return FleetTarget{}, err
	}
	o.applyTarget(ctx, t)
	return o.fleetTarget(t), nil
}

func (o *Orchestrator) checkTarget(version int64) error {
	switch {
	case version < 0:
		return fmt.Errorf("%w %d: must not be negative", ErrInvalidTarget, version)
	case o.migrator == nil:
		return fmt.Errorf("%w %d: without migrations the latest version is unknown", ErrInvalidTarget, version)
	case version > o.latest:
		return fmt.Errorf("%w %d: above the source's latest version, %d", ErrInvalidTarget, version, o.latest)
	}
	return nil
}

// storedTarget reads the fleet target from the control plane, makes this
// Orchestrator aim at it, and returns it (the executor's check under the
// tenant's lock, run.Config.StoredTarget).
func (o *Orchestrator) storedTarget(ctx context.Context) (int64, error) {
	// Bounded: the tenant's lock is held meanwhile.
	ctx, cancel := context.WithTimeout(ctx, targetReadTimeout)
	defer cancel()
	ft, err := o.FleetTarget(ctx)
	if err != nil {
		return 0, err
	}
	return ft.Version, nil
}

// loadTarget reads the stored pin; a failure is logged and the previous
// value kept.
func (o *Orchestrator) loadTarget(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), targetReadTimeout)
	defer cancel()
	t, err := o.store.FleetTarget(ctx)
	if err != nil {
		o.logger.Warn("read the fleet target; keeping the previous one", "err", err)
		return
	}
	o.applyTarget(ctx, t)
}

// applyTarget makes this Orchestrator aim at the stored target t. A change
// empties the up-to-date cache (a tenant cached at the old target may be
// behind the new one), lets the versions above a lowered target have their
// checksums recorded again when they are re-applied (drift.go), and, when
// the target rose on a full_fleet instance that works the queue, queues a
// fleet scan for it.
func (o *Orchestrator) applyTarget(ctx context.Context, t controlplane.FleetTarget) {
	o.target.mu.Lock()
	if t.Generation < o.target.gen.Load() {
		o.target.mu.Unlock()
		return // an older read
	}
	o.target.gen.Store(t.Generation)
	before := o.Target()
	pin := int64(-1)
	if t.Version != nil {
		pin = *t.Version
	}
	changed := o.target.pin.Swap(pin) != pin
	after := o.Target()
	o.target.mu.Unlock()
	if !changed {
		return
	}
	o.cache.reset()
	o.forgetRecordedAbove(after)
	o.logger.Info("fleet target changed", "version", after, "pinned", t.Version != nil, "latest", o.latest)
	if after > before && o.cfg.Strategy == StrategyFullFleet && o.worksQueue() && o.queue != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), targetReadTimeout)
			defer cancel()
			if err := o.queue.EnqueueFleetScan(ctx, t.Generation); err != nil {
				o.logger.Warn("queue a fleet scan for the raised target; the next rescan runs it", "err", err)
			}
		}()
	}
}

// forgetRecordedAbove drops the versions above target from the versions
// this process knows to have a checksum: a rollback below them forgets
// their checksums (controlplane.Store.ForgetChecksumsAbove), and their next
// application records them again.
func (o *Orchestrator) forgetRecordedAbove(target int64) {
	d := o.drift
	if d == nil {
		return
	}
	d.mu.Lock()
	for v := range d.recorded {
		if v > target {
			delete(d.recorded, v)
		}
	}
	d.mu.Unlock()
}
