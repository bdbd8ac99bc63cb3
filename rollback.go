package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
)

// This file rolls tenants back: Rollback runs the Down sections of the
// versions above a version on the selected tenants, through the one
// executor (run.go) and the batch engine of MigrateTenants, so limits,
// progress, state and hooks are those of a migrate.

// Direction says which way a run went (RunEvent.Direction).
type Direction string

// Directions of a run.
const (
	// DirectionUp applies pending versions.
	DirectionUp Direction = Direction(run.DirectionUp)
	// DirectionDown undoes versions (Rollback).
	DirectionDown Direction = Direction(run.DirectionDown)
	// DirectionForce sets the version table without running SQL (Force).
	DirectionForce Direction = Direction(run.DirectionForce)
)

// ErrNoDown is wrapped by the error of Rollback and CheckRollback when a
// version to undo has no Down section (empty or missing); the message names
// every such file. Nothing was changed.
var ErrNoDown = migrator.ErrNoDown

// RollbackSelection says which tenants Rollback moves back, and to which
// version.
type RollbackSelection struct {
	// To is the version the tenants go back to: the versions above it are
	// undone. From 0 to Latest. With Rollout, below 0 means the lowest
	// version a tenant of the rollout had before it (see ResolveRollback).
	To int64
	// IDs are rolled back when they are above To (a tenant recorded
	// COMPLETED at or below To has nothing to undo).
	IDs []string
	// All adds every tenant recorded above To, in cursor order.
	All bool
	// Selector selects, instead, the tenants recorded above To whose
	// labels match it (see ListTenantsMatching), in cursor order.
	Selector string
	// Rollout selects, instead, exactly the tenants that rollout moved
	// (from the run history): each goes back to the version it had before
	// the rollout, or to To when that is higher. Tenants the rollout never
	// moved are left alone.
	Rollout int64

	// moved are Rollout's tenants, read once by ResolveRollback.
	moved    []history.Moved
	resolved bool
}

// RollbackOptions tune Rollback.
type RollbackOptions struct {
	MigrateOptions
	// KeepTarget leaves the fleet target as it is. By default Rollback
	// first pins it to To, so that no instance re-applies what it undoes.
	KeepTarget bool
}

// validate checks the selection itself.
func (o *Orchestrator) checkRollbackSelection(sel RollbackSelection) error {
	if err := checkRollbackScope(sel); err != nil {
		return err
	}
	if err := o.checkTarget(sel.To); err != nil {
		return fmt.Errorf("roll back: %w", err)
	}
	if !sel.All && len(sel.IDs) == 0 && sel.Selector == "" && sel.Rollout == 0 {
		return fmt.Errorf("roll back: %w: no tenants selected", ErrInvalidTarget)
	}
	for _, id := range sel.IDs {
		if err := ValidateTenantID(id); err != nil {
			return fmt.Errorf("roll back: %w", err)
		}
	}
	return nil
}

// CheckRollback refuses a rollback before it touches any tenant: a bad
// version (ErrInvalidTarget), an unknown tenant (ErrTenantNotFound), or a
// version to undo without a Down section (ErrNoDown, naming every such
// file). The versions to undo are the source's above sel.To and up to the
// highest version a selected tenant is recorded at.
func (o *Orchestrator) CheckRollback(ctx context.Context, sel RollbackSelection) error {
	sel, err := o.ResolveRollback(ctx, sel)
	if err != nil {
		return err
	}
	if err := o.checkRollbackSelection(sel); err != nil {
		return err
	}
	var top int64
	if sel.All || sel.Selector != "" || sel.Rollout != 0 {
		v, err := o.store.MaxMigrationsVersion(ctx)
		if err != nil {
			return err
		}
		top = v
	}
	for _, id := range sel.IDs {
		st, err := o.store.GetState(ctx, id)
		if err != nil {
			return err
		}
		if st.MigrationsVersion != nil {
			top = max(top, *st.MigrationsVersion)
		}
	}
	files, err := o.migrator.WithoutDown(sel.To, min(top, o.latest))
	if err != nil {
		return err
	}
	if len(files) > 0 {
		return fmt.Errorf("roll back to version %d: %w", sel.To, &migrator.NoDownError{Files: files})
	}
	return nil
}

// RollbackTenant is one tenant a rollback selects, for a dry run.
type RollbackTenant struct {
	ID string
	// Version is the version the control plane records for it.
	Version int64
	// To is the version it goes back to.
	To int64
}

// rollbackSelection walks sel: the IDs first, then (All) the tenants
// recorded above To, a page at a time. A tenant is selected once.
func (o *Orchestrator) rollbackSelection(ctx context.Context, sel RollbackSelection) iter.Seq2[selected, error] {
	if sel.Rollout != 0 {
		return rolloutSelection(sel)
	}
	if sel.Selector != "" {
		return o.selectorSelection(ctx, sel)
	}
	var scan func(cursor int64) ([]controlplane.TenantVersion, int64, error)
	if sel.All {
		scan = func(cursor int64) ([]controlplane.TenantVersion, int64, error) {
			return o.store.ScanAbove(ctx, sel.To, cursor, scanPageSize)
		}
	}
	return namedThenScanned(sel.IDs, selected{direction: run.DirectionDown, to: sel.To}, scan, tenantVersionID)
}

// tenantVersionID is the id of a tenant a scan of versions found.
func tenantVersionID(t controlplane.TenantVersion) string { return t.ID }

// RollbackTenants yields the tenants Rollback would move now for sel, with
// their recorded version, leaving out named tenants with nothing to undo.
func (o *Orchestrator) RollbackTenants(ctx context.Context, sel RollbackSelection) iter.Seq2[RollbackTenant, error] {
	return func(yield func(RollbackTenant, error) bool) {
		sel, err := o.ResolveRollback(ctx, sel)
		if err != nil {
			yield(RollbackTenant{}, err)
			return
		}
		for s, err := range o.rollbackSelection(ctx, sel) {
			if err != nil {
				yield(RollbackTenant{}, err)
				return
			}
			st, err := o.store.GetState(ctx, s.id)
			if errors.Is(err, controlplane.ErrTenantNotFound) {
				continue
			}
			if err != nil {
				yield(RollbackTenant{}, err)
				return
			}
			if st.MigrationsVersion == nil ||
				(*st.MigrationsVersion <= s.to && st.MigrationsStatus == StatusCompleted) {
				continue
			}
			if !yield(RollbackTenant{ID: s.id, Version: *st.MigrationsVersion, To: s.to}, nil) {
				return
			}
		}
	}
}

// UndoVersions returns the versions a rollback to `to` would undo on the
// tenant, newest first, read from its database in a read-only session.
func (o *Orchestrator) UndoVersions(ctx context.Context, id string, to int64) ([]int64, error) {
	applied, err := o.AppliedVersions(ctx, id)
	if err != nil {
		return nil, err
	}
	var undo []int64
	for _, v := range slices.Backward(applied) {
		if v > to {
			undo = append(undo, v)
		}
	}
	return undo, nil
}

// Rollback runs, on each selected tenant above sel.To, the Down sections of
// its versions above sel.To, newest first, opts.Concurrency tenants at once,
// and records each as a migrate does: COMPLETED at sel.To, or FAILED at the
// version where its Down stopped, with the error. It is safe while servers
// run: each tenant's run holds its lock.
//
// Before it touches any tenant it runs CheckRollback, and then, unless
// opts.KeepTarget, pins the fleet target to sel.To (SetTarget), so that no
// instance re-applies what it undoes; ClearTarget later brings the fleet
// back to the latest version. After the run it forgets the checksums of the
// versions no tenant has any more (drift.go), so a version fixed before it
// is applied again is not taken for an edited one.
//
// It returns ErrReadOnly on a ReadOnly Orchestrator; tenants' errors go to
// opts.OnProgress and the counts, as in MigrateTenants.
func (o *Orchestrator) Rollback(ctx context.Context, sel RollbackSelection, opts RollbackOptions) (MigrateResult, error) {
	if o.cfg.ReadOnly {
		return MigrateResult{}, ErrReadOnly
	}
	sel, err := o.ResolveRollback(ctx, sel)
	if err != nil {
		return MigrateResult{}, err
	}
	if err := o.CheckRollback(ctx, sel); err != nil {
		return MigrateResult{}, err
	}
	if !opts.KeepTarget {
		if _, err := o.SetTarget(ctx, sel.To); err != nil {
			return MigrateResult{}, err
		}
	}
	res, err := o.runBatch(ctx, o.rollbackSelection(ctx, sel), nil, opts.MigrateOptions)
	o.forgetUndoneChecksums(ctx)
	return res, err
}

// forgetUndoneChecksums forgets the checksums of the versions no tenant
// has any more; a failure is logged (a stale checksum only refuses an
// edited file later, which AllowChangedMigrations overrides).
func (o *Orchestrator) forgetUndoneChecksums(ctx context.Context) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	versions, err := o.store.ForgetChecksumsAbove(ctx)
	if err != nil {
		o.logger.Warn("forget the checksums of undone versions", "err", err)
		return
	}
	if len(versions) > 0 {
		o.forgetRecordedAbove(slices.Min(versions) - 1)
		o.logger.Info("undone everywhere: their checksums are recorded again when they are applied", "versions", versions)
	}
}
