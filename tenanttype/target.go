package tenanttype

import "time"

// FleetTarget is the fleet's target version: the version every instance
// migrates tenants to.
type FleetTarget struct {
	// Version is the version tenants are migrated to: Pinned, or the
	// source's latest when nothing is pinned. It is never above Latest.
	Version int64 `json:"version"`
	// Pinned is the pinned version; nil when none is pinned.
	Pinned *int64 `json:"pinned"`
	// Latest is the source's latest version.
	Latest int64 `json:"latestVersion"`
	// UpdatedAt is when the pin last changed.
	UpdatedAt time.Time `json:"updatedAt"`
}

// RollbackStatus is the progress of a rollback run through the queue.
type RollbackStatus struct {
	// ID names the rollback.
	ID string `json:"id"`
	// To is the version its tenants go back to (the highest of them for a
	// rollout's tenants, which go back to the versions each had before it).
	To int64 `json:"to"`
	// Total is how many tenant jobs it queued.
	Total int64 `json:"total"`
	// Completed, Failed, Running and Pending count those jobs by state:
	// pending are waiting or scheduled for a retry.
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	Running   int64 `json:"running"`
	Pending   int64 `json:"pending"`
	// Done reports that no job is pending or running.
	Done bool `json:"done"`
}

// RollbackRequest is a rollback asked through the admin API: To and one of
// Tenants (with All: every tenant), Selector or Rollout.
type RollbackRequest struct {
	// To is the version to go back to; with Rollout, below 0 means the
	// lowest version its tenants had before it.
	To         int64
	Tenants    []string
	All        bool
	Selector   string
	Rollout    int64
	KeepTarget bool
}
