package queue

import (
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Job kinds, as stored in river_job.kind.
const (
	// KindMigrateTenant migrates one tenant to the latest version.
	KindMigrateTenant = "migrate_tenant"
	// KindFleetScan scans the control plane for tenants behind the latest
	// version and enqueues a migrate_tenant job for each.
	KindFleetScan = "fleet_scan"
)

// liveStates are the job states in which a job still has work ahead of it. A
// tenant has at most one migrate_tenant job per target in these states;
// completed, cancelled and discarded jobs do not block a later enqueue.
//
// River requires available, pending, running and scheduled in a custom
// ByState (insert_opts.go, requiredV3states) and allows leaving out
// completed, cancelled and discarded; retryable is kept so that a tenant
// waiting for its retry is not queued a second time.
var liveStates = []rivertype.JobState{ //nolint:gochecknoglobals // read-only
	rivertype.JobStateAvailable,
	rivertype.JobStatePending,
	rivertype.JobStateRetryable,
	rivertype.JobStateRunning,
	rivertype.JobStateScheduled,
}

// MigrateTenantArgs are the arguments of a migrate_tenant job.
type MigrateTenantArgs struct {
	// TenantID is the tenant to migrate. With Target, the only fields that
	// take part in the job's uniqueness, so fields added later do not let a
	// tenant have two live jobs of one release.
	TenantID string `json:"tenant_id" river:"unique"`
	// Target is the latest version of the release that queued the job: the
	// version the tenant should reach. An instance whose source ends below
	// it does not run the job (it would find the tenant "at its latest" and
	// complete it without migrating); it snoozes it, using no attempt, for
	// an instance of that release. 0 (jobs queued before this field): any
	// instance runs it.
	//
	// Target is part of the unique key: a tenant has at most one live job
	// per release, and a live job of an older release (one an old instance
	// runs, or snoozed for its server) does not swallow a newer release's
	// enqueue, which would leave the tenant at the old release's version
	// until a rollout hands it out again. Runs of two releases' jobs of one
	// tenant are serialized by the tenant's migration lock; the later one
	// finds the tenant done (or records nothing above its own latest). A 0
	// Target is left out of the JSON, and so of the key: such jobs keep the
	// key of jobs queued before Target was unique (tenant id alone).
	Target int64 `json:"target,omitempty" river:"unique"`
}

// Kind returns KindMigrateTenant.
func (MigrateTenantArgs) Kind() string { return KindMigrateTenant }

// InsertOpts makes migrate_tenant jobs unique per tenant and target (the
// release that queued them) while live (available, pending, retryable,
// running or scheduled), whoever inserts them.
func (MigrateTenantArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		UniqueOpts: river.UniqueOpts{
			ByArgs:  true,
			ByState: liveStates,
		},
	}
}

// FleetScanArgs are the arguments of a fleet_scan job.
type FleetScanArgs struct {
	// Latest is the latest migration version of the release that queued the
	// scan. It is part of the job's unique key, so a new release scans at
	// once rather than after the rescan window of the previous one.
	Latest int64 `json:"latest,omitempty"`
	// IncludeStale also enqueues tenants whose status is FAILED_STALE.
	IncludeStale bool `json:"include_stale"`
	// TargetGeneration is the generation of the fleet target whose rise
	// queued the scan (EnqueueFleetScan); part of the unique key, so each
	// change of the target gets its scan. 0 for the scheduled scans.
	TargetGeneration int64 `json:"target_generation,omitempty"`
}

// Kind returns KindFleetScan.
func (FleetScanArgs) Kind() string { return KindFleetScan }

// fleetScanInsertOpts makes fleet_scan jobs unique per window: one scan per
// window however often leadership changes hands, including after the scan
// has completed (River's default ByState keeps completed jobs in the key).
func fleetScanInsertOpts(window time.Duration, maxAttempts int) *river.InsertOpts {
	return &river.InsertOpts{
		MaxAttempts: maxAttempts,
		UniqueOpts: river.UniqueOpts{
			ByArgs:   true,
			ByPeriod: window,
		},
	}
}
