package tenantmigrate

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
)

// This file wires the instance heartbeat (internal/instances): a process
// heartbeats while it can run migrations, between Start and Stop and for the
// length of each MigrateTenants call, and a process that works the queue also
// rescues the jobs of dead instances.

// heartbeatUsers counts who needs the heartbeat running: Start (until Stop)
// and each MigrateTenants call. The first one starts it, the last one stops
// it.
type heartbeatUsers struct {
	mu sync.Mutex
	n  int
}

// newInstances builds the heartbeat Service of a non-ReadOnly Orchestrator.
func (o *Orchestrator) newInstances(id string) (*instances.Service, error) {
	return instances.New(instances.Config{
		ID:                id,
		Pool:              o.pool,
		Timeout:           o.cfg.Queue.InstanceTimeout,
		Rescue:            o.worksQueue(),
		OrphanRescueAfter: o.queue.RescueAfter(),
		OnDiscard:         o.recordDiscarded,
		Logger:            o.logger,
	})
}

// holdHeartbeat starts the heartbeat unless it runs already. Every
// successful call must be matched by a releaseHeartbeat.
func (o *Orchestrator) holdHeartbeat(ctx context.Context) error {
	if o.instances == nil {
		return nil
	}
	o.beats.mu.Lock()
	defer o.beats.mu.Unlock()
	if o.beats.n == 0 {
		if err := o.instances.Start(ctx); err != nil {
			return err
		}
	}
	o.beats.n++
	return nil
}

// releaseHeartbeat stops the heartbeat once nobody holds it: the instance is
// marked stopped, and whatever job it still lists as running is rescued at
// once by the other instances.
func (o *Orchestrator) releaseHeartbeat(ctx context.Context) error {
	if o.instances == nil {
		return nil
	}
	o.beats.mu.Lock()
	defer o.beats.mu.Unlock()
	if o.beats.n == 0 {
		return nil
	}
	o.beats.n--
	if o.beats.n > 0 {
		return nil
	}
	return o.instances.Stop(ctx)
}

// releaseHeartbeatAfterFailedStart undoes Start's holdHeartbeat.
func (o *Orchestrator) releaseHeartbeatAfterFailedStart(ctx context.Context) {
	stopCtx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := o.releaseHeartbeat(stopCtx); err != nil {
		o.logger.Error("stop instance heartbeat after a failed start", "err", err)
	}
}

// recordDiscarded records FAILED_STALE for the tenants of migrate_tenant
// jobs the rescue discarded: the instances that ran them kept dying, and the
// jobs had no attempt left. A tenant COMPLETED at the target meanwhile is
// left as it is. Without it the tenant would keep the state of
// its last finished run, and the next fleet scan would hand the migration to
// an instance again.
func (o *Orchestrator) recordDiscarded(ctx context.Context, jobs []instances.Rescued) {
	for _, j := range jobs {
		if j.TenantID == "" {
			continue
		}
		t, err := o.store.Get(ctx, j.TenantID)
		if err == nil && o.exec.AtTarget(t) {
			// Completed meanwhile (a migrate --all took it over): the
			// discarded job no longer matters, and its tenant is fine.
			continue
		}
		if err == nil {
			err = o.store.RecordFailure(ctx, j.TenantID, controlplane.OriginOf(t), nil, controlplane.StatusFailedStale,
				fmt.Sprintf("the instances running its migration died %d times in a row (the last one %s); not retried", j.Rescues, j.Instance))
		}
		if err != nil {
			o.logger.ErrorContext(ctx, "record a discarded job's tenant as FAILED_STALE",
				slog.String("tenant_id", j.TenantID), slog.String("err", err.Error()))
		}
	}
}
