package tenantmigrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// This file holds what Config.ReadOnly changes. A read-only Orchestrator
// serves the commands that look at the fleet (status, tenants, verify,
// migrate --dry-run): it must leave no trace of the migration source it was
// given, or of the lack of one. Before ReadOnly existed, such a command run
// without the fleet's migrations recorded the checksums of whatever source it
// had (the embedded example set) as the ones applied, and every later serve
// or migrate with the real migrations refused to start.

// ErrReadOnly is returned by MigrateTenant, by EnsureMigrated for a tenant
// that needs a run, and by queued jobs, of an Orchestrator with
// Config.ReadOnly: it applies no migration.
var ErrReadOnly = errors.New("read-only orchestrator: it applies no migrations (Config.ReadOnly)")

// openControlPlaneReadOnly is what New does with the control-plane schema
// under Config.ReadOnly. A schema that does not exist yet is created (the
// control plane is new: the first tenants add sets it up, and a status of it
// reads "no tenants" rather than failing). An existing schema is never
// written: one older than this build is an error, because upgrading it is a
// decision for serve or migrate (older instances may still run on it), not a
// side effect of a status.
func (o *Orchestrator) openControlPlaneReadOnly(ctx context.Context) error {
	have, want, err := controlplane.SchemaVersions(ctx, o.pool)
	if err != nil {
		return err
	}
	switch {
	case have == 0:
		return controlplane.Migrate(ctx, o.pool)
	case have < want:
		return fmt.Errorf("the control-plane schema is at version %d and this build needs %d: "+
			"a ReadOnly Orchestrator does not upgrade it; open it once without ReadOnly (serve and migrate do)", have, want)
	}
	return nil
}
