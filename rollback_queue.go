package tenantmigrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/riverqueue/river/rivertype"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// This file runs a rollback through the queue (the admin API's POST
// /admin/rollbacks): one rollback_tenant job per tenant, worked by every
// instance that works the queue (full_fleet and progressive servers), each
// through the one executor (run.go).

// RollbackStatus is the progress of a queued rollback.
type RollbackStatus = tenanttype.RollbackStatus

// rollbackEnqueuePage is how many tenants QueueRollback reads before it
// inserts their jobs.
const rollbackEnqueuePage = 1000

// QueueRollback checks the rollback as Rollback does (CheckRollback), pins
// the fleet target to sel.To unless keepTarget, and queues a rollback_tenant
// job per selected tenant above sel.To. It returns the rollback's id and
// job count; RollbackProgress follows it. Only instances that work the
// queue run the jobs.
func (o *Orchestrator) QueueRollback(ctx context.Context, sel RollbackSelection, keepTarget bool) (RollbackStatus, error) {
	sel, err := o.ResolveRollback(ctx, sel)
	if err != nil {
		return RollbackStatus{}, err
	}
	if err := o.CheckRollback(ctx, sel); err != nil {
		return RollbackStatus{}, err
	}
	if !keepTarget {
		if _, err := o.SetTarget(ctx, sel.To); err != nil {
			return RollbackStatus{}, err
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	st := RollbackStatus{ID: hex.EncodeToString(b[:]), To: sel.To}
	// A page of tenants going back to one version (a rollout's tenants go
	// back to different ones).
	page, pageTo := make([]string, 0, rollbackEnqueuePage), sel.To
	flush := func() error {
		n, err := o.queue.EnqueueRollback(ctx, st.ID, pageTo, page)
		st.Total += int64(n)
		page = page[:0]
		return err
	}
	for t, err := range o.RollbackTenants(ctx, sel) {
		if err != nil {
			return st, fmt.Errorf("select tenants (%d queued): %w", st.Total, err)
		}
		if t.To != pageTo && len(page) > 0 {
			if err := flush(); err != nil {
				return st, err
			}
		}
		pageTo = t.To
		if page = append(page, t.ID); len(page) == rollbackEnqueuePage {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	st.Pending, st.Done = st.Total, st.Total == 0
	return st, nil
}

// RollbackProgress counts the jobs of a queued rollback by state. found is
// false when no job has that id (an unknown rollback, or one whose jobs
// River removed a day after they finished).
func (o *Orchestrator) RollbackProgress(ctx context.Context, id string) (st RollbackStatus, found bool, err error) {
	if !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 {
		// No rollback has it (ids are hex), and PostgreSQL refuses it as text.
		return RollbackStatus{}, false, nil
	}
	to, byState, err := o.queue.RollbackJobs(ctx, id)
	if err != nil || to < 0 {
		return RollbackStatus{}, false, err
	}
	st = RollbackStatus{ID: id, To: to}
	for state, n := range byState {
		st.Total += n
		switch state {
		case rivertype.JobStateCompleted:
			st.Completed += n
		case rivertype.JobStateCancelled, rivertype.JobStateDiscarded:
			st.Failed += n
		case rivertype.JobStateRunning:
			st.Running += n
		default:
			st.Pending += n
		}
	}
	st.Done = st.Running == 0 && st.Pending == 0
	return st, true, nil
}

// RollbackTenant performs one attempt of a queued rollback_tenant job: the
// tenant's Down sections above to, recorded COMPLETED or FAILED. A failure
// is logged here, once, as for migrate_tenant jobs.
func (r *jobRunner) RollbackTenant(ctx context.Context, tenantID string, to int64, attempt, maxAttempts int) error {
	o := (*Orchestrator)(r)
	out, err := o.exec.Run(ctx, run.Request{
		TenantID:   tenantID,
		Trigger:    string(TriggerQueue),
		Attempt:    attempt,
		Generation: o.cache.generation(),
		Direction:  run.DirectionDown,
		To:         to,
		// A server that is full or down holds the job back (a snooze, no
		// attempt), as for migrate_tenant jobs.
		HoldUnreachable: true,
		FailStatus:      func(error) controlplane.Status { return controlplane.StatusFailed },
	})
	if errors.Is(err, controlplane.ErrTenantNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if out.Held != nil {
		return o.waitError(out.Held, out.Server)
	}
	if errors.Is(out.Err, run.ErrNewerRelease) {
		// Left to an instance of the newer release (rolling deploy).
		return fmt.Errorf("%w: %w", queue.ErrNewerRelease, out.Err)
	}
	if err := outcomeErr(tenantID, out); err != nil {
		if !out.Interrupted {
			o.logger.Warn("tenant rollback failed", "tenant_id", tenantID, "version", out.Version,
				"attempt", attempt, "max_attempts", maxAttempts, "err", err)
		}
		return err
	}
	if out.Ran {
		o.forgetUndoneChecksums(ctx)
	}
	return nil
}

// QueueRollbackRequest is QueueRollback for the admin API.
func (o *Orchestrator) QueueRollbackRequest(ctx context.Context, req tenanttype.RollbackRequest) (RollbackStatus, error) {
	return o.QueueRollback(ctx, RollbackSelection{To: req.To, IDs: req.Tenants, All: req.All, Selector: req.Selector, Rollout: req.Rollout}, req.KeepTarget)
}
