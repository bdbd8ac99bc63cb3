package tenantmigrate

import (
	"context"
	"fmt"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/labels"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// The methods in this file manage tenants and migrations by hand. The admin
// API and the CLI are built on them.

// CreateTenant registers a tenant. It returns ErrTenantExists when the id is
// taken and ErrNoEncryptionKey without Config.EncryptionKey.
func (o *Orchestrator) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	return o.store.Create(ctx, t)
}

// UpsertTenant creates the tenant or replaces its URL and schema. The
// migration state is kept when both are unchanged and cleared (unknown) when
// either changes. It reports whether the tenant was created.
func (o *Orchestrator) UpsertTenant(ctx context.Context, t Tenant) (Tenant, bool, error) {
	t, created, err := o.store.Upsert(ctx, t)
	if err == nil {
		o.cache.drop(t.ID)
	}
	return t, created, err
}

// PatchTenant changes the fields of p that are set. A new URL or schema
// clears the migration state: the new target is unknown until it is read
// or migrated.
func (o *Orchestrator) PatchTenant(ctx context.Context, id string, p TenantPatch) (Tenant, error) {
	t, err := o.store.Patch(ctx, id, p)
	if err == nil {
		o.cache.drop(id)
	}
	return t, err
}

// DeleteTenant removes a tenant from the control plane. Its database is left
// as it is.
func (o *Orchestrator) DeleteTenant(ctx context.Context, id string) error {
	err := o.store.Delete(ctx, id)
	if err == nil {
		o.cache.drop(id)
	}
	return err
}

// GetTenant returns a tenant with its database URL in clear. Show it only
// through Tenant.RedactedURL.
func (o *Orchestrator) GetTenant(ctx context.Context, id string) (Tenant, error) {
	return o.store.Get(ctx, id)
}

// ListTenants returns up to limit tenants after the cursor, in cursor order,
// and the cursor of the next page (0 when there is none).
func (o *Orchestrator) ListTenants(ctx context.Context, afterCursor int64, limit int) ([]Tenant, int64, error) {
	return o.store.List(ctx, afterCursor, limit)
}

// ListTenantsMatching is ListTenants of the tenants whose labels match
// selector, kubectl's equality form: "k=v", "k!=v", "k" (has the label),
// "!k", comma-separated, all of which must hold; "" matches every tenant. A
// bad selector is an error wrapping ErrInvalid. It is answered through the
// index of the labels (see BENCHMARKS.md for 1M tenants).
func (o *Orchestrator) ListTenantsMatching(ctx context.Context, selector string, afterCursor int64, limit int) ([]Tenant, int64, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, 0, fmt.Errorf("list tenants: %w", invalid(err))
	}
	return o.store.ListMatching(ctx, sel, afterCursor, limit)
}

// ValidateLabels reports whether m may be a tenant's labels: at most 32,
// keys of 1-63 characters of [a-z0-9_.-/], values of at most 255 characters
// (UTF-8, no NUL). The error wraps ErrInvalid and names the label.
func ValidateLabels(m map[string]string) error { return controlplane.ValidateLabels(m) }

// ParseLabelArgs parses kubectl-style label arguments into a
// TenantPatch.Labels: "k=v" sets k, "k-" removes it. Keys and values are
// validated; the error wraps ErrInvalid.
func ParseLabelArgs(args []string) (map[string]*string, error) {
	p, err := labels.ParseArgs(args)
	return p, invalid(err)
}

// FormatLabels shows labels as "k=v,k2=v2", in key order.
func FormatLabels(m map[string]string) string { return labels.Format(m) }

// ValidateSelector reports whether s is a valid label selector (see
// ListTenantsMatching). The error wraps ErrInvalid.
func ValidateSelector(s string) error {
	_, err := labels.Parse(s)
	return invalid(err)
}

// invalid makes an error of package labels match ErrInvalid too, its
// message unchanged.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return invalidError{err}
}

type invalidError struct{ err error }

func (e invalidError) Error() string        { return e.err.Error() }
func (e invalidError) Unwrap() error        { return e.err }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

// TenantState returns a tenant's migration state without reading its URL.
func (o *Orchestrator) TenantState(ctx context.Context, id string) (TenantState, error) {
	return o.store.GetState(ctx, id)
}

// IsLatest reports whether the state is COMPLETED at the latest version.
func (o *Orchestrator) IsLatest(st TenantState) bool {
	return o.atLatest(st.MigrationsVersion, st.MigrationsStatus)
}

// MigrateTenant migrates the tenant now and records the result, whatever the
// strategy; it shares the run with concurrent requests for the same tenant.
// It returns the tenant's version, or a *MigrationError.
func (o *Orchestrator) MigrateTenant(ctx context.Context, id string) (int64, error) {
	if _, err := o.store.GetState(ctx, id); err != nil {
		return 0, err
	}
	return o.migrateShared(ctx, id, o.cache.generation(), TriggerAdmin)
}

// PendingVersions returns the tenant's current version and the versions it
// lacks, reading the tenant database without writing anything.
func (o *Orchestrator) PendingVersions(ctx context.Context, id string) (int64, []int64, error) {
	if o.migrator == nil {
		return 0, nil, errNoMigrationsConfigured
	}
	t, err := o.store.Get(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	return o.migrator.Pending(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
}

// ScanBehind returns the ids of up to limit tenants whose version is unknown
// or below Latest, after afterCursor in cursor order (FAILED_STALE ones only
// with includeStale), and the cursor of the next page, 0 when there is none.
// It reads ids only: no URL is decrypted.
func (o *Orchestrator) ScanBehind(ctx context.Context, includeStale bool, afterCursor int64, limit int) ([]string, int64, error) {
	return o.store.ScanBehind(ctx, o.Target(), includeStale, afterCursor, limit)
}

// EnqueueTenants queues a migrate_tenant job per tenant, in batches. Tenants
// that already have a live job are skipped. It returns how many were queued.
func (o *Orchestrator) EnqueueTenants(ctx context.Context, ids ...string) (int, error) {
	return o.queue.Enqueue(ctx, ids)
}

// ScheduleFleet scans the control plane now and queues every tenant behind
// the latest version (FAILED_STALE ones too with includeStale). It returns
// how many jobs were queued.
func (o *Orchestrator) ScheduleFleet(ctx context.Context, includeStale bool) (int, error) {
	return o.scanFleet(ctx, o.Target(), includeStale)
}

// Remaining is the number of live migrate_tenant jobs.
func (o *Orchestrator) Remaining(ctx context.Context) (int64, error) {
	return o.queue.Remaining(ctx)
}

// ListFailed returns FAILED and FAILED_STALE tenants with their last error,
// in cursor order, and the cursor of the next page (0 when there is none).
func (o *Orchestrator) ListFailed(ctx context.Context, afterCursor int64, limit int) ([]TenantState, int64, error) {
	return o.store.ListFailed(ctx, afterCursor, limit)
}

// Stats summarises the fleet against the latest version.
func (o *Orchestrator) Stats(ctx context.Context) (Stats, error) {
	return o.store.Stats(ctx, o.Target())
}

// Ping checks that the control plane answers.
func (o *Orchestrator) Ping(ctx context.Context) error {
	return o.pool.Ping(ctx)
}

// ValidateTenantID reports whether id is a valid tenant id: 1 to 63
// characters of [a-z0-9_-], starting with a letter or digit.
func ValidateTenantID(id string) error { return controlplane.ValidateTenantID(id) }

// RedactURL returns a database URL (a postgres:// URL or a keyword/value
// string) for display, with its passwords replaced by "xxxxx". It does not
// rely on the URL being well formed. The result is for messages and logs, not
// for connecting.
func RedactURL(u string) string { return redact.URL(u) }

// RedactError returns err with every secret (password) of the connection
// strings masked in its message, "xxxxx" as RedactURL does; errors.Is and
// errors.As still see err's chain. For showing an error that may quote a
// database URL.
func RedactError(err error, connStrings ...string) error { return redact.Error(err, connStrings...) }

// RedactString returns s with every secret of the connection strings
// masked, as RedactError does for an error's message.
func RedactString(s string, connStrings ...string) string { return redact.String(s, connStrings...) }
