// Package tenantmigrate keeps a fleet of tenant PostgreSQL databases (or
// schemas) on the latest version of one set of goose v3 migrations.
//
// A control-plane database lists the tenants and records each tenant's
// migrations_version and migrations_status, so deciding whether a tenant is up
// to date never touches the tenant database. An Orchestrator applies one of
// three strategies:
//
//   - StrategyOnRequest migrates a tenant during its first request, blocking it.
//   - StrategyFullFleet enqueues a job per tenant that is behind at start, and
//     every instance works the queue.
//   - StrategyProgressive collects tenants seen in requests and enqueues them
//     in batches, without blocking the request.
//
// Use New to build an Orchestrator, Start to run its background parts, and
// Middleware (or EnsureMigrated) to gate tenant traffic.
package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
	"golang.org/x/sync/singleflight"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// Strategy says when tenants are migrated.
type Strategy string

const (
	// StrategyOnRequest migrates a tenant during its first request, blocking
	// that request; a failure is returned to it.
	StrategyOnRequest Strategy = "on_request"
	// StrategyFullFleet enqueues one job per tenant that is behind when the
	// fleet starts (one instance scans), and all instances work the queue.
	StrategyFullFleet Strategy = "full_fleet"
	// StrategyProgressive collects tenants seen in requests that are behind
	// and enqueues them in batches on an interval, without blocking requests.
	StrategyProgressive Strategy = "progressive"
)

// ParseStrategy returns the Strategy named s, or an error listing the valid
// names.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case StrategyOnRequest, StrategyFullFleet, StrategyProgressive:
		return Strategy(s), nil
	case "":
		return StrategyOnRequest, nil
	}
	return "", fmt.Errorf("unknown strategy %q: want on_request, full_fleet or progressive", s)
}

// DefaultTenantHostRegexp matches the host names tenant traffic arrives on.
// The first group is the tenant id.
const DefaultTenantHostRegexp = `^([a-z0-9][a-z0-9_-]*)\.local\.dev(:[0-9]+)?$`

// Config configures an Orchestrator. The zero value of each field means its
// default.
type Config struct {
	// DatabaseURL is the control-plane database. Required unless Pool is set.
	DatabaseURL string

	// Pool is an existing pool to the control-plane database. It takes
	// precedence over DatabaseURL and is not closed by Close.
	Pool *pgxpool.Pool

	// EncryptionKey encrypts tenant database URLs at rest (AES-256-GCM, the
	// key stretched with HKDF-SHA256). Any secret of at least 16 characters.
	// Every write of a URL is under it. Without it, tenants can be read for
	// status but not stored or migrated.
	EncryptionKey string

	// PreviousEncryptionKeys are secrets that URLs may still be encrypted
	// under while the fleet moves to a new EncryptionKey: reads open a row
	// with the key it names (its key id), the current one or one of these;
	// writes never use them. Rekey re-encrypts every row under
	// EncryptionKey, after which they can be dropped. Each must have at least
	// 16 characters, and they need EncryptionKey. Defaults to none.
	PreviousEncryptionKeys []string

	// Migrations is a directory tree of goose v3 SQL files (at its root).
	// Migrations or GoMigrations must hold at least one migration: New
	// returns an error wrapping ErrNoMigrations otherwise (unless ReadOnly).
	// There is no default set: one forgotten setting must not create
	// example tables across a fleet.
	Migrations fs.FS

	// GoMigrations are goose Go migrations, applied alongside Migrations.
	// Defaults to none.
	GoMigrations []*goose.Migration

	// Strategy says when tenants are migrated. Defaults to StrategyOnRequest.
	Strategy Strategy

	// TenantHostRegexp extracts the tenant id (first group) from the request
	// host in Middleware. Defaults to DefaultTenantHostRegexp.
	TenantHostRegexp string

	// TenantFromRequest, when set, replaces the host-based lookup of the
	// tenant id in Middleware. It returns "" when the request names no tenant.
	TenantFromRequest func(r *http.Request) string

	// AllowChangedMigrations lets New start although migrations already
	// applied to some tenant were edited since (their file's SHA-256 differs
	// from the one the control plane recorded when the version was first
	// applied) or removed from the source (a version below the source's
	// latest). Without it, New returns a *MigrationsChangedError (wrapping
	// ErrMigrationsChanged) naming the files; with it, New logs them at warn
	// level and starts. Recorded versions above the source's latest (a newer
	// build applied them; this one may be a rollback) are logged, never
	// refused. Defaults to false.
	AllowChangedMigrations bool

	// MigrationsFormat is the format of Migrations: "goose" (goose v3's
	// NNN_name.sql files, versions in goose_db_version) or "golang-migrate"
	// ({version}_{title}.up.sql and .down.sql files, the version in
	// golang-migrate's schema_migrations, read and written as golang-migrate
	// does, so its migrate CLI keeps working on the tenants; see the README,
	// "Coming from golang-migrate"). A source with files of both formats is
	// refused. Any other value is an error wrapping ErrInvalidConfig.
	//
	// Defaults to "": recognised from the file names, golang-migrate when
	// every migration file is an .up.sql or .down.sql one, goose otherwise.
	MigrationsFormat string

	// VersionTable is the schema-qualified name ("schema.table") of the
	// version table in database-per-tenant tenants (goose_db_version, or
	// schema_migrations for golang-migrate sources), for fleets that keep it
	// somewhere else. Schema-per-tenant tenants keep the table in their own
	// schema, under VersionTable's table name.
	//
	// Defaults to "": the one goose_db_version table found in any schema of
	// the tenant's database (fleets already on goose keep theirs), else
	// public.goose_db_version, created by the first run. The location never
	// follows search_path, which can change between runs (a migration that
	// creates the schema search_path names first). A tenant whose database
	// has two version tables, or none at the configured place but one
	// elsewhere, is not migrated: its run fails with an error wrapping
	// ErrVersionTableConflict that names the tables. So is a
	// database-per-tenant tenant whose database holds the version table of a
	// schema-per-tenant tenant (each is marked as its tenant's by its comment),
	// configured or not: it would take that table for its own.
	VersionTable string

	// AllowEnvsub lets New accept SQL migrations that turn on goose's
	// environment substitution ("-- +goose ENVSUB ON"), logging their names at
	// warn level. goose replaces ${VAR} in them from the environment of each
	// process that applies them, and the checksums of drift detection cover
	// the files as written, so nothing can prove that every tenant got the
	// same SQL. Without it, New returns an *EnvsubMigrationsError (wrapping
	// ErrEnvsubMigrations) naming the files, before it connects. Defaults to
	// false.
	AllowEnvsub bool

	// AllowMissing applies out-of-order migrations: source versions below
	// versions already applied to tenants that no tenant ever got (a release
	// added version 5 to a fleet at 6, as merged branches do). Without it New
	// returns an *OutOfOrderMigrationsError (wrapping
	// ErrOutOfOrderMigrations) naming them. With it, New marks the tenants
	// COMPLETED above the lowest of them FAILED ("lacks out-of-order
	// migrations ..."), so that no tenant lacking them counts as up to date
	// and the scans and the gate run them again; goose applies the missing
	// versions before the pending ones. Defaults to false.
	AllowMissing bool

	// KeepInvalidIndexes turns off the repair of invalid indexes before a
	// tenant's pending migrations are applied. A CREATE INDEX CONCURRENTLY
	// (or REINDEX CONCURRENTLY) that failed or was interrupted leaves an
	// INVALID index, goose does not record the NO TRANSACTION migration, and
	// on the next run CREATE INDEX CONCURRENTLY IF NOT EXISTS skips the
	// invalid index: the tenant would keep an unusable index, silently.
	//
	// By default, while holding the tenant's migration lock and only when
	// migrations are pending, the migrator drops (DROP INDEX CONCURRENTLY)
	// each invalid index of the tenant's schema (or of its whole database) that no
	// session is building, logs it at warn level, and applies the
	// migrations, which build it again. An index that another session is
	// building is left alone. Partitioned indexes are never touched. With
	// KeepInvalidIndexes, the run drops nothing and fails with a
	// non-retryable error naming the indexes and the DROP statements to run.
	// Defaults to false: invalid indexes are repaired.
	KeepInvalidIndexes bool

	// TransactionMode is how many transactions a tenant's run applies its
	// goose migrations in. TransactionModeFile: one per migration, as goose
	// does. TransactionModeTenant: each run of consecutive pending
	// transactional SQL migrations in one transaction, with their version
	// rows, so a tenant ends at the version before the run or after it, never
	// in between, and pays one commit instead of one per file; a NO
	// TRANSACTION file or a Go migration ends the run and goes alone, and the
	// version table holds the rows goose writes. A migration that uses an
	// enum value added earlier in the same transaction (SQLSTATE 55P04)
	// splits the run before it, automatically. The transaction holds every
	// lock its migrations take until it commits. golang-migrate sources apply
	// file by file in both modes. See the README, "Transaction mode". Any
	// other value is an error wrapping ErrInvalidConfig. Defaults to
	// DefaultTransactionMode.
	TransactionMode TransactionMode

	// Limits bounds what one run may wait for and how many run at once.
	Limits LimitsConfig

	// Queue configures the job queue that runs full_fleet and progressive
	// migrations (and the workers of this instance).
	Queue QueueConfig

	// Progressive configures StrategyProgressive.
	Progressive ProgressiveConfig

	// Provision configures provisioning new tenants from a template
	// (ProvisionTenant, DeprovisionTenant). Defaults to off.
	Provision ProvisionConfig

	// Servers caps the migrations per database server and says how a
	// server outage is waited out.
	Servers ServersConfig

	// History configures the run history: a row per run of a tenant, kept
	// for HistoryConfig.Retention (see TenantRuns).
	History HistoryConfig

	// Rollout configures the rollouts that move the fleet to a new release
	// in waves and halt it on failures (see RolloutConfig).
	Rollout RolloutConfig

	// RunWorkers makes Start run queue workers (and, with full_fleet, the
	// fleet scan). CLI commands that only enqueue leave it false; serve sets
	// it. Ignored for on_request, which needs no workers.
	RunWorkers bool

	// ReadOnly makes an Orchestrator that looks at the fleet and edits its
	// tenant registry but never migrates, for tools such as status, tenants,
	// verify and dry runs:
	//   - it records no migration checksums: New does not backfill them
	//     (see drift.go), so the source it was given is never taken as what
	//     the fleet applied;
	//   - MigrateTenant, EnsureMigrated of a tenant that needs a run and
	//     queued jobs fail with ErrReadOnly, before touching the tenant;
	//   - RunWorkers must be false;
	//   - the control-plane schema is created if it does not exist (an empty
	//     control plane), but an existing one is never upgraded: New fails
	//     when it is older than this build;
	//   - Migrations and GoMigrations may be empty (Latest is then 0).
	// CreateTenant, UpsertTenant, PatchTenant, DeleteTenant and the enqueue
	// methods still write what they are asked to. Defaults to false.
	ReadOnly bool

	// Logger receives structured logs. Defaults to a logger that discards.
	Logger *slog.Logger

	// Hooks receive events for metrics. Optional.
	Hooks Hooks
}

// Hooks are callbacks for observability; each may be nil. They run on the
// calling goroutine and must be fast.
type Hooks struct {
	// OnGateDecision is called once per EnsureMigrated call with its outcome.
	OnGateDecision func(d GateDecision)
	// OnMigrationRun is called after every migration run of one tenant, with
	// its result ("completed" or "failed"). OnRun gets the same runs with
	// every detail.
	OnMigrationRun func(strategy Strategy, result string, d time.Duration)
	// OnRun is called after every migration run of one tenant, whatever
	// triggered it (see Trigger), before its result is recorded. A panic in
	// it, or in OnMigrationRun, is logged and recovered: the result is
	// recorded as usual.
	OnRun func(ctx context.Context, e RunEvent)
}

// GateDecision is what EnsureMigrated did for one request.
type GateDecision string

// Gate decisions reported to Hooks.OnGateDecision.
const (
	GateUpToDate       GateDecision = "up_to_date"
	GateMigratedInline GateDecision = "migrated_inline"
	GateEnqueued       GateDecision = "enqueued"
	GateStaleRetry     GateDecision = "stale_retry"
	GateBehind         GateDecision = "behind"
	GateFailed         GateDecision = "failed"
)

// The tenant registry's types, from the public package tenanttype.
type (
	// Tenant is a tenant as stored in the control plane.
	Tenant = tenanttype.Tenant
	// TenantPatch changes some fields of a tenant.
	TenantPatch = tenanttype.TenantPatch
	// TenantState is a tenant's migration state without its URL.
	TenantState = tenanttype.TenantState
	// Stats summarises the fleet.
	Stats = tenanttype.Stats
	// VersionCount is the number of tenants at one version, in Stats.
	VersionCount = tenanttype.VersionCount
	// Status is a tenant's migrations_status.
	Status = tenanttype.Status
)

// Migration statuses.
const (
	StatusCompleted   = tenanttype.StatusCompleted
	StatusFailed      = tenanttype.StatusFailed
	StatusFailedStale = tenanttype.StatusFailedStale
)

var (
	// ErrTenantNotFound is returned by EnsureMigrated and tenant lookups for
	// an id the control plane does not list.
	ErrTenantNotFound = controlplane.ErrTenantNotFound
	// ErrTenantExists is returned by CreateTenant for an id already listed.
	ErrTenantExists = controlplane.ErrTenantExists
	// ErrNoEncryptionKey is returned when storing or migrating a tenant
	// without Config.EncryptionKey.
	ErrNoEncryptionKey = controlplane.ErrNoEncryptionKey
	// ErrVersionTableConflict is wrapped by the error of a tenant's run (in
	// a *MigrationError) when its version table is ambiguous: more than one
	// exists, or Config.VersionTable names one that does not while another
	// does, or a database-per-tenant tenant's database holds a schema
	// tenant's. Nothing was applied, and it is not retried: an operator keeps
	// the right table and drops the other, or gives the tenant a database of
	// its own. See Config.VersionTable.
	ErrVersionTableConflict = migrator.ErrVersionTableConflict
	// ErrNoMigrations is wrapped by the error New returns when neither
	// Config.Migrations nor Config.GoMigrations holds a migration (and
	// Config.ReadOnly is not set), and by what PendingVersions,
	// AppliedVersions and VerifyTenant return on a ReadOnly Orchestrator
	// without migrations. It wraps goose.ErrNoMigrations.
	ErrNoMigrations = fmt.Errorf("%w", goose.ErrNoMigrations)
)

// errNoMigrationsConfigured is the error of New and of the methods that need
// migrations when there are none.
var errNoMigrationsConfigured = fmt.Errorf("%w: set Config.Migrations (a directory of goose SQL files, e.g. os.DirFS or an embed.FS) or Config.GoMigrations", ErrNoMigrations)

// Orchestrator keeps tenants migrated. It is safe for concurrent use.
type Orchestrator struct {
	cfg      Config
	logger   *slog.Logger
	pool     *pgxpool.Pool
	ownsPool bool
	store    *controlplane.Store
	migrator *migrator.Migrator
	exec     *run.Executor    // runs one tenant, for every trigger (run.go)
	servers  *servers.Manager // per-server slots and outages (servers.go)
	latest   int64
	hostRE   *regexp.Regexp

	cache  latestCache
	target targetState // the fleet target (target.go)
	flight singleflight.Group
	inline chan struct{} // a slot per inline migration allowed at once

	drift *driftState // see drift.go

	provisioner *provisioning.Provisioner // nil without Config.Provision.URL; see provision.go
	history     *history.Store            // the run history (history.go)
	pruner      *history.Pruner           // deletes old runs, between Start and Stop

	queue     *queue.Queue
	instances *instances.Service // heartbeats and rescue; nil when ReadOnly (instances.go)
	beats     heartbeatUsers
	rollouts  *rollouts.Store  // see rollout.go
	feeder    *rollouts.Feeder // feeds the queue from the active rollout
	fleet     *strategy.Fleet
	collector *strategy.Collector
	stale     *strategy.StaleLimiter

	// life serialises Start and Stop (see lifecycle.go); nothing the
	// background work does takes it, so Stop may hold it while it waits.
	life         sync.Mutex
	running      bool
	stopListener func()
	runs         runGroup // inline and background migrations, which Stop waits for
}

// New connects to the control plane, creates or upgrades its schema, reads the
// migrations and returns an Orchestrator. Call Start to run its background
// parts and Close when done.
func New(ctx context.Context, cfg Config) (*Orchestrator, error) {
	var err error
	if cfg.Strategy, err = ParseStrategy(string(cfg.Strategy)); err != nil {
		return nil, fmt.Errorf("%w: Strategy: %v", ErrInvalidConfig, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hostRE, err := regexp.Compile(cmpOr(cfg.TenantHostRegexp, DefaultTenantHostRegexp))
	if err != nil {
		return nil, fmt.Errorf("%w: TenantHostRegexp: tenant host regexp: %w", ErrInvalidConfig, err)
	}
	if hostRE.NumSubexp() < 1 {
		return nil, fmt.Errorf("%w: TenantHostRegexp: tenant host regexp needs a group for the tenant id", ErrInvalidConfig)
	}
	if cfg.ReadOnly && cfg.RunWorkers {
		return nil, fmt.Errorf("%w: a ReadOnly Orchestrator runs no workers: unset RunWorkers", ErrInvalidConfig)
	}

	// Before anything connects: without migrations nothing is written
	// anywhere.
	var versionTable *migrator.VersionTable
	if cfg.VersionTable != "" {
		vt, err := migrator.ParseVersionTable(cfg.VersionTable)
		if err != nil {
			return nil, fmt.Errorf("%w: VersionTable: %w", ErrInvalidConfig, err)
		}
		versionTable = &vt
	}
	format, err := migrator.ParseFormat(cfg.MigrationsFormat)
	if err != nil {
		return nil, fmt.Errorf("%w: MigrationsFormat: %v", ErrInvalidConfig, err)
	}
	var mig *migrator.Migrator // stays nil for a ReadOnly Orchestrator without migrations
	switch {
	case cfg.Migrations != nil || len(cfg.GoMigrations) > 0:
		mig, err = migrator.New(migrator.Config{
			FS:                 cfg.Migrations,
			Format:             format,
			GoMigrations:       cfg.GoMigrations,
			LockTimeout:        cfg.Limits.LockTimeout,
			TenantLockTimeout:  cfg.Limits.TenantLockTimeout,
			StatementTimeout:   cfg.Limits.StatementTimeout,
			KeepInvalidIndexes: cfg.KeepInvalidIndexes,
			VersionTable:       versionTable,
			AllowMissing:       cfg.AllowMissing,
			TransactionMode:    migrator.TransactionMode(cmpOr(cfg.TransactionMode, DefaultTransactionMode)),
			Logger:             logger,
		})
		if errors.Is(err, goose.ErrNoMigrations) {
			return nil, fmt.Errorf("%w: Config.Migrations has no versioned .sql file at its root and Config.GoMigrations is empty", ErrNoMigrations)
		}
		if err != nil {
			return nil, fmt.Errorf("read migrations: %w", err)
		}
		if err := checkEnvsub(mig.Migrations(), cfg.AllowEnvsub, logger); err != nil {
			return nil, err
		}
	case !cfg.ReadOnly:
		return nil, errNoMigrationsConfigured
	}
	var latest int64
	if mig != nil {
		latest = mig.Latest()
	}

	var cipher *controlplane.Cipher
	if cfg.EncryptionKey != "" {
		if cipher, err = controlplane.NewCipher(cfg.EncryptionKey, cfg.PreviousEncryptionKeys...); err != nil {
			return nil, fmt.Errorf("%w: EncryptionKey: %w", ErrInvalidConfig, err)
		}
	}

	o := &Orchestrator{
		cfg:      cfg,
		logger:   logger,
		pool:     cfg.Pool,
		migrator: mig,
		latest:   latest,
		hostRE:   hostRE,
	}
	o.cache.init()
	o.target.init()
	o.runs.init()
	o.inline = make(chan struct{}, cmpOr(cfg.Limits.InlineConcurrency, DefaultInlineConcurrency))
	if o.pool == nil {
		if cfg.DatabaseURL == "" {
			return nil, errors.New("no control-plane database: set Config.DatabaseURL or Config.Pool")
		}
		pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("%w: parse control-plane database URL: %w", ErrInvalidConfig, redact.Error(err, cfg.DatabaseURL))
		}
		if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
			// Workers, River's own work and request-gate reads share the pool.
			pcfg.MaxConns = max(pcfg.MaxConns, int32(cmpOr(cfg.Queue.Workers, DefaultWorkers))+8)
		}
		if o.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			return nil, fmt.Errorf("connect to control plane: %w", redact.Error(err, cfg.DatabaseURL))
		}
		o.ownsPool = true
	}
	if cfg.ReadOnly {
		err = o.openControlPlaneReadOnly(ctx)
	} else {
		err = controlplane.Migrate(ctx, o.pool) // already says "migrate control plane"
	}
	if err != nil {
		o.Close()
		// The pool connects here: scrub its connect error too.
		return nil, redact.Error(err, cfg.DatabaseURL) // already says "migrate control plane"
	}
	o.store = controlplane.NewStore(o.pool, cipher)
	o.servers = o.newServers()
	if !cfg.ReadOnly {
		if _, err := o.store.FillServers(ctx); err != nil {
			o.Close()
			return nil, err
		}
	}
	o.initHistory()
	o.rollouts = rollouts.NewStore(o.pool, logger)
	o.exec = o.newExecutor()
	if _, err := o.FleetTarget(ctx); err != nil {
		o.Close()
		return nil, err
	}
	if err := o.checkMigrations(ctx); err != nil {
		o.Close()
		return nil, err
	}

	// One id for the instance heartbeat and River's client: the rescuer
	// finds a dead instance's jobs by it in river_job.attempted_by.
	instanceID := instances.DefaultID()
	if o.queue, err = queue.New(queue.Config{
		ID:           instanceID,
		Pool:         o.pool,
		Runner:       (*jobRunner)(o),
		IsRetryable:  migrator.IsRetryable,
		Workers:      cfg.Queue.Workers,
		MaxAttempts:  cfg.Queue.MaxAttempts,
		RetryBackoff: cfg.Queue.RetryBackoff,
		JobTimeout:   cfg.Queue.JobTimeout,
		RescueAfter:  cfg.Queue.RescueAfter,
		Logger:       logger,
		RunWorkers:   cfg.RunWorkers && cfg.Strategy != StrategyOnRequest,
		// Every working instance can run a scan job; full_fleet ones schedule them.
		FleetScan: func(ctx context.Context, latest int64, includeStale bool) (int, error) {
			return o.scanFleet(ctx, min(cmpOr(latest, o.latest), o.Target()), includeStale)
		},
		ScheduleFleetScan:   cfg.Strategy == StrategyFullFleet,
		Latest:              o.latest,
		FleetRescanInterval: cfg.Queue.FleetRescanInterval,
	}); err != nil {
		o.Close()
		return nil, fmt.Errorf("set up job queue: %w", err)
	}
	if !cfg.ReadOnly {
		if o.instances, err = o.newInstances(instanceID); err != nil {
			o.Close()
			return nil, fmt.Errorf("set up instance heartbeat: %w", err)
		}
	}
	o.fleet = strategy.NewFleet(strategy.FleetConfig{
		Scanner: o.store,
		Enqueue: o.queue.Enqueue,
		Latest:  o.latest,
		Logger:  logger,
	})
	o.feeder = rollouts.NewFeeder(rollouts.FeederConfig{
		Store:     o.rollouts,
		Target:    o.latest,
		EnqueueTx: o.queue.EnqueueTx,
		BatchSize: cfg.Rollout.FeedBatchSize,
		Logger:    logger,
	})
	o.collector = strategy.NewCollector(strategy.CollectorConfig{
		Interval:  cfg.Progressive.Interval,
		BatchSize: cfg.Progressive.BatchSize,
		Enqueue:   o.queue.Enqueue,
		Logger:    logger,
	})
	o.stale = strategy.NewStaleLimiter(cfg.Progressive.StaleRetryInterval)
	if err := o.newProvisioner(); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// ValidateVersionTable reports whether s is a valid Config.VersionTable: a
// schema-qualified name, "schema.table".
func ValidateVersionTable(s string) error {
	_, err := migrator.ParseVersionTable(s)
	return err
}

// Latest is the highest migration version in the source.
func (o *Orchestrator) Latest() int64 { return o.latest }

// Strategy is the strategy this Orchestrator applies.
func (o *Orchestrator) Strategy() Strategy { return o.cfg.Strategy }

// Pool is the control-plane pool.
func (o *Orchestrator) Pool() *pgxpool.Pool { return o.pool }

// Close stops background work (as Stop does) and closes the control-plane
// pool if New opened it.
func (o *Orchestrator) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := o.Stop(ctx); err != nil {
		o.logger.Error("stop orchestrator", "err", err)
	}
	if o.provisioner != nil {
		o.provisioner.Close()
	}
	if o.servers != nil {
		o.servers.Close(ctx)
	}
	if o.ownsPool && o.pool != nil {
		o.pool.Close()
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
