package tenantmigrate

import (
	"context"
	"fmt"
	"iter"
	"strconv"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/labels"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
)

// This file selects a rollback's tenants by label selector or by rollout
// (RollbackSelection.Selector, RollbackSelection.Rollout).

// checkRollbackScope refuses a selection that mixes a Selector or a
// Rollout with another way of choosing tenants, and a bad selector. The
// error wraps ErrInvalid.
func checkRollbackScope(sel RollbackSelection) error {
	n := 0
	if sel.All || len(sel.IDs) > 0 {
		n++
	}
	if sel.Selector != "" {
		n++
	}
	if sel.Rollout != 0 {
		n++
	}
	if n > 1 {
		return fmt.Errorf("roll back: %w: choose the tenants one way: by ids or all, by selector, or by rollout", ErrInvalid)
	}
	if sel.Rollout < 0 {
		return fmt.Errorf("roll back: %w: rollout id %d: want 1 or more", ErrInvalid, sel.Rollout)
	}
	if err := ValidateSelector(sel.Selector); err != nil {
		return fmt.Errorf("roll back: selector: %w", err)
	}
	return nil
}

// ResolveRollback returns sel ready to run: for a Rollout, it reads from
// the run history the tenants that rollout moved and the version each had
// before it, and when To is below 0 sets To to the lowest of those
// versions, the fleet target Rollback pins. The result carries those
// tenants, so CheckRollback, RollbackTenants, Rollback and QueueRollback
// given it read the history no more. Other selections are returned as they
// are.
//
// It returns an error wrapping ErrRolloutNotFound for an unknown rollout,
// and one wrapping ErrInvalid for a bad selection or a rollout that moved
// no tenant while To is below 0.
func (o *Orchestrator) ResolveRollback(ctx context.Context, sel RollbackSelection) (RollbackSelection, error) {
	if sel.resolved || sel.Rollout == 0 {
		return sel, nil
	}
	if err := checkRollbackScope(sel); err != nil {
		return sel, err
	}
	if _, err := o.rollouts.Get(ctx, sel.Rollout); err != nil {
		return sel, fmt.Errorf("roll back rollout %d: %w", sel.Rollout, err)
	}
	moved, err := o.history.RolloutMoved(ctx, strconv.FormatInt(sel.Rollout, 10))
	if err != nil {
		return sel, err
	}
	if sel.To < 0 {
		if len(moved) == 0 {
			return sel, fmt.Errorf("roll back rollout %d: %w: the run history has no tenant it moved", sel.Rollout, ErrInvalid)
		}
		sel.To = moved[0].Before
		for _, m := range moved[1:] {
			sel.To = min(sel.To, m.Before)
		}
	}
	sel.moved, sel.resolved = moved, true
	return sel, nil
}

// rolloutSelection yields the tenants of a resolved Rollout selection, each
// going back to the version it had before the rollout, or To when higher.
func rolloutSelection(sel RollbackSelection) iter.Seq2[selected, error] {
	return func(yield func(selected, error) bool) {
		for _, m := range sel.moved {
			if !yield(selected{id: m.TenantID, explicit: true, direction: run.DirectionDown, to: max(m.Before, sel.To)}, nil) {
				return
			}
		}
	}
}

// selectorSelection yields the tenants recorded above To whose labels
// match sel.Selector, a page at a time.
func (o *Orchestrator) selectorSelection(ctx context.Context, sel RollbackSelection) iter.Seq2[selected, error] {
	ls, err := labels.Parse(sel.Selector)
	if err != nil {
		return func(yield func(selected, error) bool) {
			yield(selected{}, fmt.Errorf("roll back: selector: %w", invalid(err)))
		}
	}
	return namedThenScanned(nil, selected{direction: run.DirectionDown, to: sel.To},
		func(cursor int64) ([]controlplane.TenantVersion, int64, error) {
			return o.store.ScanAboveMatching(ctx, sel.To, ls, cursor, scanPageSize)
		}, tenantVersionID)
}
