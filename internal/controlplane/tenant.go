package controlplane

import "github.com/tenantmigrate/tenantmigrate/tenanttype"

// The registry's types are public (package tenanttype); the control plane
// uses them as they are.
type (
	// Status is tenanttype.Status.
	Status = tenanttype.Status
	// Tenant is tenanttype.Tenant, one row of the tenants table.
	Tenant = tenanttype.Tenant
	// TenantState is tenanttype.TenantState.
	TenantState = tenanttype.TenantState
	// TenantPatch is tenanttype.TenantPatch, the fields Store.Patch changes.
	TenantPatch = tenanttype.TenantPatch
	// VersionCount is tenanttype.VersionCount.
	VersionCount = tenanttype.VersionCount
	// Stats is tenanttype.Stats.
	Stats = tenanttype.Stats
)

// The statuses of tenanttype.
const (
	StatusCompleted   = tenanttype.StatusCompleted
	StatusFailed      = tenanttype.StatusFailed
	StatusFailedStale = tenanttype.StatusFailedStale
)

// RunOrigin is what a run read of a tenant before it started: the target it
// ran against and the state it found. RecordSuccess and RecordFailure check
// it so that a result lands only where it was computed.
type RunOrigin struct {
	// TargetSeq is the tenant's TargetSeq as the run read it.
	TargetSeq int64
	// Version and Status are the tenant's state as the run read it.
	Version *int64
	Status  Status
}

// OriginOf returns the RunOrigin of a run that read t.
func OriginOf(t Tenant) RunOrigin {
	return RunOrigin{TargetSeq: t.TargetSeq, Version: t.MigrationsVersion, Status: t.MigrationsStatus}
}
