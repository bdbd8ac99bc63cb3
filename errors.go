package tenantmigrate

import (
	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// Errors callers branch on, beyond those next to the API that returns them.
var (
	// ErrLockTimeout is wrapped by a tenant's run error (in a
	// *MigrationError) when another run, in any process, held the tenant's
	// migration lock for longer than Config.Limits.LockTimeout. Nothing was
	// applied; IsRetryable reports true.
	ErrLockTimeout = migrator.ErrLockTimeout

	// ErrInvalidIndexes is wrapped by a tenant's run error when
	// Config.KeepInvalidIndexes is set and the tenant has INVALID indexes
	// left by an interrupted CREATE INDEX CONCURRENTLY while migrations are
	// pending. The message names the indexes and the DROP statements to run.
	// Nothing was applied; it is not retryable.
	ErrInvalidIndexes = migrator.ErrInvalidIndexes

	// ErrDirty is wrapped by the run error of a golang-migrate tenant whose
	// schema_migrations row is dirty: a migration failed or was interrupted
	// there (under golang-migrate or tenantmigrate) and nothing is applied
	// until someone repairs the database and clears the flag. The message
	// names the version. It is not retryable.
	ErrDirty = migrator.ErrDirty

	// ErrMixedFormats is wrapped by the error New returns for migrations that
	// mix goose files and golang-migrate files (see Config.MigrationsFormat).
	ErrMixedFormats = migrator.ErrMixedFormats

	// ErrInvalid is wrapped by the errors of tenant operations given bad
	// input: a tenant id, schema name or database URL out of its rules
	// (CreateTenant, UpsertTenant, PatchTenant).
	ErrInvalid = controlplane.ErrInvalid

	// ErrServerFull is wrapped by the error of an inline run (EnsureMigrated,
	// Middleware, MigrateTenant) whose tenant's database server stayed at its
	// cap of concurrent migrations (Config.Servers.MaxPerServer) for
	// Config.Limits.InlineServerWait: nothing ran or was recorded and no
	// attempt was used; a later call runs the tenant once a slot is free.
	// Middleware answers 503 with Retry-After (ServerFullRetryAfter). A DOWN
	// server's run ends with ErrServerDown instead, at once.
	ErrServerFull = servers.ErrFull
)

// IsRetryable reports whether a tenant's run error is likely transient, so
// the same run may succeed later without anyone changing the migrations or
// the tenant: a lock timeout (ErrLockTimeout), a lost or refused connection,
// and PostgreSQL's serialization failures, deadlocks, lock_timeout, too many
// connections and shutdowns. SQL errors in a migration, statement_timeout,
// invalid input and a cancelled context are not.
func IsRetryable(err error) bool { return migrator.IsRetryable(err) }

// ValidateSchemaName reports whether s may be a tenant's schema
// (schema-per-tenant): 1 to 63 characters of a-z, 0-9 and '_', not starting
// with a digit, and none of pg_*, information_schema, public and
// tenantmigrate. The error wraps ErrInvalid. The control plane and the
// migrator apply the same rule.
func ValidateSchemaName(s string) error { return controlplane.ValidateSchemaName(s) }

// ValidateDatabaseURL reports whether s is a postgres:// or postgresql://
// URL the PostgreSQL driver accepts, as CreateTenant requires. The error
// wraps ErrInvalid and never contains the URL's password.
func ValidateDatabaseURL(s string) error { return controlplane.ValidateDatabaseURL(s) }
