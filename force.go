package tenantmigrate

import (
	"context"
	"fmt"
	"iter"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
)

// ForceSelection says which tenants Force sets.
type ForceSelection struct {
	// IDs are set whatever their state.
	IDs []string
	// AllAbove adds every tenant recorded above the forced version.
	AllAbove bool
}

// Force sets the selected tenants' version tables and control-plane state
// to version without running any SQL, for after a repair by hand: goose's
// rows above version are deleted and rows up to it added; a golang-migrate
// tenant gets version, clean (a dirty one is cleared). Each tenant is
// recorded COMPLETED at version. Each runs under the tenant's migration
// lock, so it is safe while servers run, and AllAbove reads the tenants a
// page at a time. A version below 0 or above Latest wraps ErrInvalidTarget.
//
// Pin the fleet target (SetTarget) at or below version first when it is
// below the tenants' versions, or the servers migrate them up again at once.
func (o *Orchestrator) Force(ctx context.Context, sel ForceSelection, version int64, opts MigrateOptions) (MigrateResult, error) {
	if o.cfg.ReadOnly {
		return MigrateResult{}, ErrReadOnly
	}
	if err := o.checkTarget(version); err != nil {
		return MigrateResult{}, fmt.Errorf("force: %w", err)
	}
	for _, id := range sel.IDs {
		if err := ValidateTenantID(id); err != nil {
			return MigrateResult{}, fmt.Errorf("force: %w", err)
		}
		if _, err := o.store.GetState(ctx, id); err != nil {
			return MigrateResult{}, err
		}
	}
	return o.runBatch(ctx, o.forceSelection(ctx, sel, version), nil, opts)
}

func (o *Orchestrator) forceSelection(ctx context.Context, sel ForceSelection, version int64) iter.Seq2[selected, error] {
	var scan func(cursor int64) ([]controlplane.TenantVersion, int64, error)
	if sel.AllAbove {
		scan = func(cursor int64) ([]controlplane.TenantVersion, int64, error) {
			return o.store.ScanAbove(ctx, version, cursor, scanPageSize)
		}
	}
	return namedThenScanned(sel.IDs, selected{direction: run.DirectionForce, to: version}, scan, tenantVersionID)
}
