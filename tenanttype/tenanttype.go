// Package tenanttype holds the types of tenantmigrate's tenant registry that
// callers of the library see: a tenant, its migration state and the fleet's
// summary. Like rivertype for River, it is a small public package that the
// root package and its internal packages share, so the public API never
// exposes internal types.
package tenanttype

import (
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// Status is the outcome of the last migration run of a tenant. The empty
// Status means the tenant was never migrated (NULL in the database).
type Status string

const (
	// StatusCompleted: the last run applied every migration it was asked to.
	StatusCompleted Status = "COMPLETED"
	// StatusFailed: the last run failed; it will be retried.
	StatusFailed Status = "FAILED"
	// StatusFailedStale: the last run failed in a way that retrying will not
	// fix (for example a broken migration); scans skip such tenants
	// unless asked to include them.
	StatusFailedStale Status = "FAILED_STALE"
)

// Tenant is one row of the tenants table.
type Tenant struct {
	// ID identifies the tenant; see tenantmigrate.ValidateTenantID.
	ID string
	// DatabaseURL is the postgres:// URL of the tenant's database, decrypted.
	// Never log it: use RedactedURL.
	DatabaseURL string
	// Schema is the tenant's schema inside that database, or "" when the
	// tenant has the whole database (database-per-tenant).
	Schema string
	// MigrationsVersion is the last migration version known to be applied,
	// nil when the tenant was never migrated.
	MigrationsVersion *int64
	// MigrationsStatus is the outcome of the last migration run.
	MigrationsStatus Status
	// LastError is the error of the last failed run, "" after a success.
	LastError string
	// Labels are the tenant's labels (see tenantmigrate.ValidateLabels),
	// never nil on a tenant read from the Store. Selectors pick tenants by
	// them (ListTenantsMatching, rollout canaries).
	Labels map[string]string
	// CursorID orders tenants for paging (the registry's list calls).
	CursorID int64
	// TargetSeq identifies the target (URL and schema) the migration state
	// describes. It changes when the URL or schema changes, and a tenant
	// registered again gets a new one. A run's result is recorded only if it
	// did not change while the run ran.
	TargetSeq int64
	// CreatedAt and UpdatedAt are set by the Store.
	CreatedAt, UpdatedAt time.Time
	// DecryptError, when not "", says why DatabaseURL is empty: no
	// configured encryption key opens the stored URL (it names the key id,
	// never the ciphertext). Lists return such a tenant with its state
	// rather than failing the page; a run of it fails, naming it.
	DecryptError string
}

// TenantState is the migration state of a tenant, without its database URL.
type TenantState struct {
	ID                string
	MigrationsVersion *int64
	MigrationsStatus  Status
	LastError         string
	UpdatedAt         time.Time
}

// TenantPatch lists the fields a patch of a tenant changes; nil fields are left as
// they are.
type TenantPatch struct {
	// DatabaseURL, when not nil, replaces the tenant's database URL.
	DatabaseURL *string
	// Schema, when not nil, replaces the tenant's schema; "" makes the tenant
	// database-per-tenant.
	Schema *string
	// Labels, when not nil, are merged into the tenant's labels: a key with
	// a nil value is removed, any other is set. Labels never change the
	// migration state.
	Labels map[string]*string
}

// VersionCount is the number of tenants at one migration version.
type VersionCount struct {
	// Version is nil for tenants that were never migrated.
	Version *int64
	Count   int64
}

// Stats summarizes the fleet.
type Stats struct {
	// Total is the number of tenants.
	Total int64
	// Behind is the number of tenants whose version is nil or below latest.
	Behind int64
	// ByVersion counts tenants per version: never migrated first, then by
	// ascending version.
	ByVersion []VersionCount
	// ByStatus counts tenants per status; the "" key counts tenants never
	// migrated. Statuses without tenants are absent.
	ByStatus map[Status]int64
}

// RedactedURL returns the tenant's database URL without its password, for
// display and logs.
// A tenant whose URL could not be decrypted shows "<cannot decrypt>".
func (t Tenant) RedactedURL() string {
	if t.DecryptError != "" {
		return "<cannot decrypt>"
	}
	return redact.URL(t.DatabaseURL)
}

// ServerState says whether a database server takes migrations.
type ServerState string

const (
	// ServerUp: runs on the server go ahead, within its cap.
	ServerUp ServerState = "UP"
	// ServerDown: repeated connection-level failures; the server's tenants
	// wait, using no attempt, until a probe reaches it again.
	ServerDown ServerState = "DOWN"
)

// Server is one database server of the fleet: the lower-case host:port of
// its tenants' URLs, or their "server" label.
type Server struct {
	// Server names it ("db1.internal:5432").
	Server string
	State  ServerState
	// Since is when State last changed.
	Since time.Time
	// Running counts the migrations holding one of its slots now, in every
	// process on the control plane.
	Running int
	// Waiting counts the queued migrate_tenant jobs of its tenants that are
	// not running.
	Waiting int
	// Tenants counts the tenants on it, databases and schemas alike.
	Tenants int
	// MaxConcurrent is its cap: the override set for it, else the default
	// of the process that reads it.
	MaxConcurrent int
	// MaxConcurrentOverride reports whether MaxConcurrent is an override.
	MaxConcurrentOverride bool
	// LastError is the last connection-level failure, without credentials;
	// "" when none was seen.
	LastError string
}

// RunResult is how one run of a tenant's migrations ended, in its history.
type RunResult string

const (
	// RunCompleted: the run applied every migration it was asked to (or
	// found none to apply).
	RunCompleted RunResult = "completed"
	// RunFailed: the run failed; Run.Error says why.
	RunFailed RunResult = "failed"
	// RunInterrupted: a shutdown cancelled the run at its deadline; it
	// rolled back and nothing was recorded for the tenant.
	RunInterrupted RunResult = "interrupted"
)

// Run directions.
const (
	// DirectionUp applies pending migrations.
	DirectionUp = "up"
	// DirectionDown undoes migrations (a rollback).
	DirectionDown = "down"
	// DirectionForce set the version table without running SQL (a repair).
	DirectionForce = "force"
)

// Run is one attempt of one tenant's migration, as the run history keeps it:
// one row per run of the migrator, whatever triggered it (a request, a
// queued job, the admin API, a batch such as migrate --all).
type Run struct {
	// ID orders runs: a later run has a higher one.
	ID       int64
	TenantID string
	// RolloutID is the rollout the run counted toward, "" for none.
	RolloutID string
	// FromVersion is the version the control plane recorded before the
	// run, nil when it was never migrated.
	FromVersion *int64
	// ToVersion is the tenant database's version after the run, nil when a
	// failed run could not read it (an unreachable tenant).
	ToVersion *int64
	// Direction is DirectionUp, DirectionDown or DirectionForce.
	Direction string
	Result    RunResult
	// Error is the failure's message, its passwords masked and cut to 2000
	// characters; "" unless Result is RunFailed or RunInterrupted.
	Error string
	// Attempt is the queued job's attempt or the batch's, from 1; 0 for
	// the other triggers.
	Attempt int
	// StartedAt and FinishedAt bound the run.
	StartedAt, FinishedAt time.Time
	// Process names what ran it: "host:pid", or an instance id.
	Process string
	// Trigger says what started the run: request, stale_retry, queue,
	// admin or batch (tenantmigrate.Trigger).
	Trigger string
}

// Duration is how long the run took.
func (r Run) Duration() time.Duration { return r.FinishedAt.Sub(r.StartedAt) }

// RunDurations summarises how long tenants took to migrate: the runs that
// completed and applied at least one migration, the latest of them first.
type RunDurations struct {
	// Runs is the number of runs measured; P50 and P95 are 0 without any.
	Runs     int
	P50, P95 time.Duration
}
