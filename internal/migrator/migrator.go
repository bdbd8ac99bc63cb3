// Package migrator applies a migration set, in goose's format or in golang-migrate's, to one
// tenant target: a whole database (database-per-tenant) or one schema inside a shared database
// (schema-per-tenant).
//
// A [Migrator] reads and validates its migrations once, in [New]. Each call to [Migrator.Migrate]
// then opens a short-lived connection to the tenant, takes a per-tenant session advisory lock,
// applies the pending migrations (a goose [goose.Provider] for goose sources; see golangmigrate.go
// for golang-migrate's) and closes the connection. The version table is the tool's own
// (goose_db_version, or schema_migrations), so databases already managed by either are adopted
// as they are. Where that table lives is pinned, never left to search_path: see
// Config.VersionTable.
package migrator

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pressly/goose/v3"
)

// Defaults for the zero values of [Config].
const (
	// DefaultLockTimeout is the default for Config.LockTimeout.
	DefaultLockTimeout = time.Minute
	// DefaultTenantLockTimeout is the default for Config.TenantLockTimeout.
	DefaultTenantLockTimeout = 5 * time.Second
)

// Config configures a [Migrator]. The zero value of each field means its default.
type Config struct {
	// FS holds goose SQL migration files (NNN_name.sql) at its root. Files in subdirectories,
	// non-SQL files and SQL files without a numeric version prefix are ignored, as goose does. The
	// files are copied into memory by New, so FS is not read afterwards. May be nil if
	// GoMigrations is not empty.
	FS fs.FS

	// Format is the source's format. Defaults to FormatAuto: golang-migrate when the
	// migration files at FS's root are {version}_{title}.up.sql / .down.sql files, goose
	// otherwise; a source with files of both is refused (ErrMixedFormats). See
	// golangmigrate.go for how a golang-migrate source is applied.
	Format Format

	// GoMigrations are goose Go migrations built with goose.NewGoMigration. Their versions must
	// not collide with the SQL files in FS. Go migrations registered globally with goose.AddMigration
	// are ignored. Defaults to none.
	GoMigrations []*goose.Migration

	// LockTimeout is the longest Migrate waits for another run on the same tenant (in any process)
	// to release the tenant's advisory lock before it returns an error wrapping ErrLockTimeout. It
	// is rounded up to whole seconds, because goose's session locker polls once per second.
	// Defaults to DefaultLockTimeout (1m).
	LockTimeout time.Duration

	// TenantLockTimeout is PostgreSQL's lock_timeout for the migration session: how long one
	// statement may wait for a table lock (for example one held by the application) before it
	// fails with SQLSTATE 55P03, which IsRetryable reports as retryable. A negative value turns
	// lock_timeout off (0). A lock_timeout given in the tenant's URL takes precedence.
	// Defaults to DefaultTenantLockTimeout (5s).
	TenantLockTimeout time.Duration

	// StatementTimeout is PostgreSQL's statement_timeout for the migration session. Zero or a
	// negative value means no timeout (statement_timeout 0, overriding a role or database
	// default). A statement_timeout given in the tenant's URL takes precedence. Defaults to 0.
	StatementTimeout time.Duration

	// VersionTable is the schema-qualified goose version table of database-per-tenant targets,
	// for fleets that keep it outside the default location (see ParseVersionTable). A target
	// whose database has a table of that name in another schema, and not this one, is refused
	// with a *VersionTableConflictError rather than given a second table. Schema-per-tenant
	// targets keep the table inside their schema, under VersionTable's table name.
	//
	// Defaults to nil: the one table named goose_db_version found in any schema of the
	// target's database, else public.goose_db_version, created by the first run. Never the
	// schema search_path resolves to at run time (see resolveVersionTable), and never a schema
	// tenant's table (marked as such, see schemaTenantMark): a database target whose database
	// holds one is refused, configured or not.
	VersionTable *VersionTable

	// AllowMissing applies migrations missing below a target's current version (out of
	// order: a release added version 5 to a target at 6, as merged branches do), before the
	// pending ones above it, as goose's WithAllowOutofOrder does. Without it Migrate refuses
	// such a target with an error naming the versions. Defaults to false.
	AllowMissing bool

	// KeepInvalidIndexes turns off the repair of invalid indexes; see [Migrator.Migrate].
	//
	// A CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY) that fails or is interrupted leaves
	// an INVALID index behind, which the planner never uses but writes keep maintaining. goose
	// did not record such a NO TRANSACTION migration, so it runs again, and a CREATE INDEX
	// CONCURRENTLY IF NOT EXISTS then skips the existing invalid index: the tenant would stay
	// without a usable index, silently, for good (and without IF NOT EXISTS the migration fails
	// on every run with "relation already exists").
	//
	// By default, when migrations are pending, Migrate drops (DROP INDEX CONCURRENTLY) every
	// invalid index of the target (its schema, or every schema of its database for a
	// database-per-tenant target) that no session is building, logs each one at
	// warn level, and then applies the migrations, which build them again. With
	// KeepInvalidIndexes, it drops nothing and fails instead with an *InvalidIndexesError
	// (wrapping ErrInvalidIndexes, not retryable) that names the indexes and the fix.
	// Defaults to false: invalid indexes are repaired.
	KeepInvalidIndexes bool

	// TransactionMode says how many transactions a run applies a tenant's goose migrations in:
	// TransactionModeFile, one per migration as goose does, or TransactionModeTenant, one for
	// each run of consecutive transactional SQL migrations, with their version rows (see
	// txmode.go). golang-migrate sources apply file by file in both. Defaults to
	// TransactionModeFile.
	TransactionMode TransactionMode

	// Logger receives a debug record per applied migration and per tenant that had migrations
	// applied, and a warn record per invalid index dropped. Errors are returned,
	// not logged. Database URLs are never logged. Defaults to discarding all records.
	Logger *slog.Logger
}

// Migrator applies one migration set to tenant targets. It is safe for concurrent use; every
// call to Migrate or Pending uses its own connection.
type Migrator struct {
	format       Format        // FormatGoose or FormatGolangMigrate, never auto
	gm           []gmMigration // golang-migrate sources only
	fsys         fs.FS         // in-memory copy of the SQL files; nil if there are none
	goMigrations []*goose.Migration
	versions     []int64 // sorted ascending, never empty
	migrations   []SourceMigration

	maxConns         int           // database/sql pool cap per run: 1, or 2 for Go no-tx migrations
	lockWait         time.Duration // LockTimeout rounded up to whole seconds
	lockTimeoutParam string        // value of the lock_timeout runtime parameter
	stmtTimeoutParam string        // value of the statement_timeout runtime parameter
	dbLockKey        int64         // advisory lock key for database-per-tenant targets
	repairIndexes    bool          // drop invalid indexes before applying (!KeepInvalidIndexes)
	versionTable     *VersionTable // Config.VersionTable; nil: found or the default
	allowMissing     bool          // Config.AllowMissing

	txMode TransactionMode      // Config.TransactionMode, never ""
	parsed map[string]parsedSQL // by file name; TransactionModeTenant goose sources only
	// sharedCatalog holds the versions (int64) of transactional SQL files that collided with
	// another tenant on a shared catalog row inside a group; TransactionModeTenant runs them
	// alone from then on (see txmode.go).
	sharedCatalog sync.Map
	// stepwise holds the versions (int64) of transactional SQL files whose statements
	// TransactionModeTenant sends one at a time, waiting for each, as goose does, instead of in
	// a pipeline: one was refused there with a syntax error (see pipeline.go).
	stepwise sync.Map
	// unmarkable holds the database, role and schema (string key, see markVersionTable) of
	// schema tenants whose version table this process could not mark as theirs for lack of
	// privilege: not tried again.
	unmarkable sync.Map

	logger *slog.Logger
}

// New returns a Migrator for the migrations in cfg. It reads the SQL files once, copies them
// into memory and parses each with goose's parser, so that an invalid file fails here, with an
// error naming it, rather than on the first tenant. It returns an error if there are no
// migrations at all.
func New(cfg Config) (*Migrator, error) {
	format, err := ParseFormat(string(cfg.Format))
	if err != nil {
		return nil, err
	}
	src, err := loadSource(cfg.FS, cfg.GoMigrations, format)
	if err != nil {
		return nil, err
	}

	if vt := cfg.VersionTable; vt != nil {
		if _, err := ParseVersionTable(vt.Schema + "." + vt.Name); err != nil {
			return nil, err
		}
	}

	txMode, err := ParseTransactionMode(string(cfg.TransactionMode))
	if err != nil {
		return nil, err
	}
	var parsed map[string]parsedSQL
	if txMode == TransactionModeTenant && src.format == FormatGoose && src.fsys != nil {
		if parsed, err = parseStatements(src.fsys); err != nil {
			return nil, err
		}
	}

	lockWait := cfg.LockTimeout
	if lockWait <= 0 {
		lockWait = DefaultLockTimeout
	}
	// goose's session locker polls once per second: round up to whole seconds.
	lockWait = (lockWait + time.Second - 1).Truncate(time.Second)

	tenantLockTimeout := cfg.TenantLockTimeout
	switch {
	case tenantLockTimeout == 0:
		tenantLockTimeout = DefaultTenantLockTimeout
	case tenantLockTimeout < 0:
		tenantLockTimeout = 0
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	return &Migrator{
		format:           src.format,
		gm:               src.gm,
		fsys:             src.fsys,
		goMigrations:     slices.Clone(cfg.GoMigrations),
		versions:         src.versions,
		migrations:       src.migrations,
		maxConns:         src.maxConns,
		lockWait:         lockWait,
		lockTimeoutParam: durationParam(tenantLockTimeout),
		stmtTimeoutParam: durationParam(cfg.StatementTimeout),
		dbLockKey:        lockKey(""),
		repairIndexes:    !cfg.KeepInvalidIndexes,
		versionTable:     cfg.VersionTable,
		allowMissing:     cfg.AllowMissing,
		txMode:           txMode,
		parsed:           parsed,
		logger:           logger,
	}, nil
}

// Format returns the source's format, as forced by Config.Format or recognised by New:
// FormatGoose or FormatGolangMigrate.
func (m *Migrator) Format() Format { return m.format }

// Latest returns the highest migration version in the source.
func (m *Migrator) Latest() int64 {
	return m.versions[len(m.versions)-1]
}

// Versions returns all migration versions in the source, sorted ascending. The caller may modify
// the returned slice.
func (m *Migrator) Versions() []int64 {
	return slices.Clone(m.versions)
}

// Migrations returns the migrations of the source in version order, with their checksums. The
// caller may modify the returned slice.
func (m *Migrator) Migrations() []SourceMigration {
	return slices.Clone(m.migrations)
}

// Target is one tenant's migration target.
type Target struct {
	// DatabaseURL is the tenant database's connection string, in any form pgx.ParseConfig
	// accepts. Parameters pgx does not know (search_path, application_name, lock_timeout, ...)
	// are sent to PostgreSQL as session parameters.
	DatabaseURL string

	// Schema is the tenant's schema for schema-per-tenant layouts; see ValidateSchemaName for the
	// names allowed. Migrate creates it if needed and runs the migrations with search_path set to
	// it alone (overriding a search_path in DatabaseURL), so unqualified names and goose's
	// goose_db_version table land in it. Empty means database-per-tenant: the migrations use the
	// session's own search_path, and the version table is the one Config.VersionTable pins.
	Schema string

	// UpTo, when positive, is the highest version Migrate applies: the fleet's pinned target
	// (see down.go). Defaults to 0: every pending version.
	UpTo int64

	// CheckUpTo, when set, runs under the tenant's lock before Migrate applies anything: its
	// error ends the run with nothing applied (the caller's cap, UpTo, read before the lock,
	// may no longer hold: the fleet target was lowered meanwhile).
	CheckUpTo func(ctx context.Context) error
}

// Result describes one Migrate run.
type Result struct {
	// Version is the highest migration version recorded in the target after the run. On failure
	// it is the last version that was applied successfully, or -1 if the target could not be
	// read (for example if it was unreachable).
	Version int64
	// Applied are the versions this run applied, in order. On failure, the ones that succeeded
	// before the failing one.
	Applied []int64
	// Duration is the wall time of the whole run, including connecting and waiting for the lock.
	Duration time.Duration
}

// durationParam formats d as a PostgreSQL duration setting in milliseconds ("0" turns the
// setting off). Positive durations below a millisecond round up to 1ms, not to "off".
func durationParam(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	ms := d.Milliseconds()
	if time.Duration(ms)*time.Millisecond < d {
		ms++
	}
	return fmt.Sprintf("%dms", ms)
}
