package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
)

// The defaults of Config's zero values. cmd/tenantmigrate uses them for its
// flags, so the CLI and the library agree.
const (
	// DefaultLockTimeout is the default of Config.Limits.LockTimeout.
	DefaultLockTimeout = migrator.DefaultLockTimeout
	// DefaultTenantLockTimeout is the default of Config.Limits.TenantLockTimeout.
	DefaultTenantLockTimeout = migrator.DefaultTenantLockTimeout
	// DefaultInlineConcurrency is the default of Config.Limits.InlineConcurrency.
	DefaultInlineConcurrency = 4
	// DefaultInlineServerWait is the default of Config.Limits.InlineServerWait.
	DefaultInlineServerWait = 30 * time.Second
	// DefaultWorkers is the default of Config.Queue.Workers.
	DefaultWorkers = queue.DefaultWorkers
	// DefaultMaxAttempts is the default of Config.Queue.MaxAttempts.
	DefaultMaxAttempts = queue.DefaultMaxAttempts
	// DefaultRetryBackoff is the default of Config.Queue.RetryBackoff.
	DefaultRetryBackoff = queue.DefaultRetryBackoff
	// DefaultRescueMargin is added to a job timeout for the default of
	// Config.Queue.RescueAfter.
	DefaultRescueMargin = queue.DefaultRescueMargin
	// DefaultRescueAfter is the default of Config.Queue.RescueAfter without a
	// job timeout.
	DefaultRescueAfter = queue.DefaultRescueAfter
	// DefaultInstanceTimeout is the default of Config.Queue.InstanceTimeout.
	DefaultInstanceTimeout = instances.DefaultTimeout
	// DefaultFleetRescanInterval is the default of Config.Queue.FleetRescanInterval.
	DefaultFleetRescanInterval = queue.DefaultFleetRescanInterval
	// DefaultProgressiveInterval is the default of Config.Progressive.Interval.
	DefaultProgressiveInterval = strategy.DefaultCollectInterval
	// DefaultProgressiveBatchSize is the default of Config.Progressive.BatchSize.
	DefaultProgressiveBatchSize = strategy.DefaultCollectBatchSize
	// DefaultStaleRetryInterval is the default of Config.Progressive.StaleRetryInterval.
	DefaultStaleRetryInterval = strategy.DefaultStaleRetryInterval
	// DefaultProvisionNameTemplate is the default of
	// Config.Provision.NameTemplate.
	DefaultProvisionNameTemplate = provisioning.DefaultNameTemplate
	// DefaultMaxPerServer is the default of Config.Servers.MaxPerServer.
	DefaultMaxPerServer = servers.DefaultMaxPerServer
	// DefaultServerProbeInterval is the default of Config.Servers.ProbeInterval.
	DefaultServerProbeInterval = servers.DefaultProbeInterval
	// DefaultServerDownTimeout is the default of Config.Servers.DownTimeout.
	DefaultServerDownTimeout = servers.DefaultDownTimeout
	// MaxServerConcurrency is the highest cap of one server
	// (Config.Servers.MaxPerServer, SetServerMaxConcurrent).
	MaxServerConcurrency = servers.MaxConcurrentLimit
)

// ServersConfig is Config.Servers: the database servers the tenants live on
// (a tenant's server is the lower-case host:port of its URL, or its
// "server" label). Every process on the control plane shares the caps and
// the UP/DOWN state of servers. The zero value of each field means its
// default.
type ServersConfig struct {
	// MaxPerServer bounds the migrations that run at once against one
	// database server, across every process on the control plane; a
	// server's override (SetServerMaxConcurrent) takes precedence. A queued
	// job that finds its server full goes back to the queue using no
	// attempt; an inline run waits for a slot. Negative or above
	// MaxServerConcurrency is an error. Defaults to DefaultMaxPerServer (2).
	MaxPerServer int

	// ProbeInterval is how often a DOWN server is probed (one process
	// probes for all) until it answers and is UP again. Negative is an
	// error. Defaults to DefaultServerProbeInterval (10s).
	ProbeInterval time.Duration

	// DownTimeout is how long MigrateTenants waits for the tenants of a
	// DOWN server before it gives them up with a *ServerDownError. Negative
	// is an error. Defaults to DefaultServerDownTimeout (1m).
	DownTimeout time.Duration
}

// TransactionMode is Config.TransactionMode: how many transactions a
// tenant's run applies its goose migrations in.
type TransactionMode string

// The transaction modes.
const (
	// TransactionModeFile applies each migration in its own transaction, as
	// goose does.
	TransactionModeFile TransactionMode = "file"
	// TransactionModeTenant applies a tenant's consecutive pending
	// transactional SQL migrations in one transaction, with their version
	// rows.
	TransactionModeTenant TransactionMode = "tenant"
	// DefaultTransactionMode is the default of Config.TransactionMode.
	DefaultTransactionMode = TransactionModeFile
)

// LimitsConfig is Config.Limits: how long a run waits for locks and
// statements, and how many inline runs one instance allows at once. The zero
// value of each field means its default.
type LimitsConfig struct {
	// LockTimeout bounds the wait for a tenant's migration lock (another run
	// of the same tenant holds it), after which the run fails with a
	// retryable error. Negative is an error. Defaults to DefaultLockTimeout
	// (1m).
	LockTimeout time.Duration

	// TenantLockTimeout is PostgreSQL's lock_timeout in the migration session,
	// so a migration waiting on a busy tenant table fails and is retried
	// rather than queueing the tenant's requests behind its lock. Defaults to
	// 5s; negative turns it off.
	TenantLockTimeout time.Duration

	// StatementTimeout is PostgreSQL's statement_timeout in the migration
	// session. Zero or negative: none. Defaults to none.
	StatementTimeout time.Duration

	// InlineConcurrency bounds the migrations one instance runs during
	// requests (on_request, never-migrated tenants, MigrateTenant): a cold
	// start of many tenants waits in line instead of opening a tenant
	// connection per tenant and sharing the database host's cores among all
	// of them. Negative is an error. Defaults to DefaultInlineConcurrency (4).
	InlineConcurrency int

	// InlineServerWait bounds how long an inline run (during a request,
	// MigrateTenant) waits for a slot of its tenant's database server while
	// that server is at its cap (Servers.MaxPerServer). The run then ends
	// with an error wrapping ErrServerFull, using no attempt and recording
	// nothing, and Middleware answers 503 with Retry-After: a request is
	// not held for as long as another process's migrations keep the server
	// full. The run waits for its slot before it takes an inline slot
	// (InlineConcurrency), so a full server never holds up the tenants of
	// other servers. Negative: no bound (the run waits as long as its
	// callers do). Defaults to DefaultInlineServerWait (30s): a cold
	// start of this instance's own requests is held rather than turned away
	// (BENCHMARKS.md section 3), and a request still gets its answer before
	// a typical proxy timeout of 60s.
	InlineServerWait time.Duration
}

// QueueConfig is Config.Queue: the job queue's workers, retries and
// timeouts. The zero value of each field means its default.
type QueueConfig struct {
	// Workers is how many migration jobs one instance runs at once.
	// Negative is an error. Defaults to DefaultWorkers (4).
	Workers int

	// MaxAttempts is how many times a queued tenant migration is tried before
	// the tenant is marked FAILED_STALE. Negative is an error. Defaults to
	// DefaultMaxAttempts (3).
	MaxAttempts int

	// RetryBackoff is the wait before the second attempt; it doubles for each
	// attempt after. Negative is an error. Defaults to DefaultRetryBackoff
	// (5s).
	RetryBackoff time.Duration

	// JobTimeout, when positive, bounds one migration attempt, queued or run
	// inline (during a request, MigrateTenant, MigrateTenants): an opt-in
	// limit. A dead instance is found by its heartbeats (InstanceTimeout),
	// not by its jobs running long, so no timeout is needed for that, and a
	// migration may run for hours. Zero or negative: none. Defaults to none.
	JobTimeout time.Duration

	// RescueAfter is how long a job may stay running on a process that does
	// not heartbeat (an older release, during a rolling deploy) before it is
	// taken as abandoned and run again; with a positive JobTimeout, River's
	// own rescuer also retries, after RescueAfter, an attempt that outlived
	// its cancellation. It may not be below a positive JobTimeout; negative
	// is an error. Defaults to JobTimeout plus DefaultRescueMargin (1m), or
	// DefaultRescueAfter (1h) without a job timeout.
	RescueAfter time.Duration

	// InstanceTimeout is how long a process that runs migrations may go
	// without a heartbeat (ten per InstanceTimeout, in the control plane)
	// before it is taken as dead: the jobs it was running go back to the
	// queue, using no attempt, and run on another instance once the tenant's
	// migration lock is free. Rescue pauses on an instance while its own
	// heartbeats fail. Negative is an error. Defaults to
	// DefaultInstanceTimeout (15s).
	InstanceTimeout time.Duration

	// FleetRescanInterval repeats the full_fleet scan, to catch tenants added
	// since. Negative turns it off. Defaults to DefaultFleetRescanInterval
	// (10m).
	FleetRescanInterval time.Duration
}

// ProgressiveConfig is Config.Progressive: how StrategyProgressive batches
// the tenants it collects. The zero value of each field means its default.
type ProgressiveConfig struct {
	// Interval is how often collected tenants are enqueued in
	// progressive mode. Negative is an error. Defaults to
	// DefaultProgressiveInterval (1m).
	Interval time.Duration

	// BatchSize enqueues collected tenants as soon as this many
	// are waiting. Negative is an error. Defaults to
	// DefaultProgressiveBatchSize (200).
	BatchSize int

	// StaleRetryInterval is the least time between two background attempts
	// for a FAILED_STALE tenant seen in requests (progressive). Negative is
	// an error. Defaults to DefaultStaleRetryInterval (5m).
	StaleRetryInterval time.Duration
}

// ProvisionConfig is Config.Provision: creating new tenants' databases by
// cloning a template kept at the latest version (ProvisionTenant), and
// dropping them (DeprovisionTenant). The zero value turns it off.
type ProvisionConfig struct {
	// URL is a postgres:// URL of a role that may CREATE DATABASE on the
	// server where new tenants go, to a database that always exists (such as
	// postgres). The template is built and kept there, and every instance
	// must use the same database: it holds the advisory lock of template
	// builds. Defaults to "": provisioning is off, and ProvisionTenant and
	// DeprovisionTenant return ErrProvisioningNotConfigured.
	URL string

	// NameTemplate names a provisioned tenant's database; "{id}" is
	// replaced by the tenant id. Only a-z, 0-9 and _ besides "{id}", and the
	// name must fit PostgreSQL's 63 bytes. Defaults to
	// DefaultProvisionNameTemplate ("tenant_{id}").
	NameTemplate string

	// TenantURLTemplate is the URL registered for a provisioned tenant:
	// "{database}" (required) is replaced by its database name and "{id}" by
	// its id, e.g. "postgres://app:secret@db1:5432/{database}". Defaults to
	// URL with its database replaced: the tenant connects as the provision
	// role, which owns the database and everything the migrations created.
	TenantURLTemplate string
}

// validate checks c, set or not.
func (c ProvisionConfig) validate() error {
	if c.URL == "" {
		if c.NameTemplate != "" || c.TenantURLTemplate != "" {
			return fmt.Errorf("%w: Provision.NameTemplate or Provision.TenantURLTemplate without Provision.URL", ErrInvalidConfig)
		}
		return nil
	}
	if err := controlplane.ValidateDatabaseURL(c.URL); err != nil {
		return fmt.Errorf("%w: Provision.URL: %v", ErrInvalidConfig, err)
	}
	pc := provisioning.Config{URL: c.URL, NameTemplate: c.NameTemplate, TenantURLTemplate: c.TenantURLTemplate}
	if err := provisioning.ValidateConfig(pc); err != nil {
		return fmt.Errorf("%w: Provision: %v", ErrInvalidConfig, err)
	}
	url, err := provisioning.TenantURL(pc, "x", "tenant_x")
	if err == nil {
		err = controlplane.ValidateDatabaseURL(url)
	}
	if err != nil {
		return fmt.Errorf("%w: Provision.TenantURLTemplate gives no valid tenant URL: %v", ErrInvalidConfig, err)
	}
	return nil
}

// DefaultHistoryRetention is the default of Config.History.Retention: 30
// days.
const DefaultHistoryRetention = history.DefaultRetention

// HistoryConfig is Config.History: how long the run history keeps a run.
type HistoryConfig struct {
	// Retention is how long a run stays in the history after it started.
	// Every running instance (between Start and Stop) deletes older runs in
	// the background, every 10 minutes, 1000 rows per DELETE; instances
	// prune side by side without waiting for each other. Negative keeps
	// runs forever. Defaults to DefaultHistoryRetention (30 days).
	Retention time.Duration
}

// ErrInvalidConfig is wrapped by the error New returns for a Config field
// out of its range, naming the field.
var ErrInvalidConfig = errors.New("invalid config")

// validate checks the fields New does not parse itself. Counts may not be
// negative (0 means the default). Durations: a negative value means "off"
// (no timeout, no rescan) where off makes sense, the fields whose doc says
// so (TenantLockTimeout, StatementTimeout, InlineServerWait, JobTimeout,
// FleetRescanInterval); for the others a wait or interval that cannot be
// off, it is an error.
func (c *Config) validate() error {
	for _, f := range []struct {
		name string
		n    int
	}{
		{"Limits.InlineConcurrency", c.Limits.InlineConcurrency},
		{"Queue.Workers", c.Queue.Workers},
		{"Queue.MaxAttempts", c.Queue.MaxAttempts},
		{"Progressive.BatchSize", c.Progressive.BatchSize},
		{"Servers.MaxPerServer", c.Servers.MaxPerServer},
	} {
		if f.n < 0 {
			return fmt.Errorf("%w: %s is %d: want 0 (the default) or more", ErrInvalidConfig, f.name, f.n)
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"Limits.LockTimeout", c.Limits.LockTimeout},
		{"Queue.RetryBackoff", c.Queue.RetryBackoff},
		{"Queue.RescueAfter", c.Queue.RescueAfter},
		{"Queue.InstanceTimeout", c.Queue.InstanceTimeout},
		{"Progressive.Interval", c.Progressive.Interval},
		{"Progressive.StaleRetryInterval", c.Progressive.StaleRetryInterval},
		{"Servers.ProbeInterval", c.Servers.ProbeInterval},
		{"Servers.DownTimeout", c.Servers.DownTimeout},
	} {
		if f.d < 0 {
			return fmt.Errorf("%w: %s is %s: want 0 (the default) or more", ErrInvalidConfig, f.name, f.d)
		}
	}
	if c.Servers.MaxPerServer > MaxServerConcurrency {
		return fmt.Errorf("%w: Servers.MaxPerServer is %d: want at most %d", ErrInvalidConfig, c.Servers.MaxPerServer, MaxServerConcurrency)
	}
	if _, err := migrator.ParseTransactionMode(string(c.TransactionMode)); err != nil {
		return fmt.Errorf("%w: TransactionMode: %v", ErrInvalidConfig, err)
	}
	if len(c.PreviousEncryptionKeys) > 0 && c.EncryptionKey == "" {
		return fmt.Errorf("%w: PreviousEncryptionKeys without EncryptionKey: every write needs the current key", ErrInvalidConfig)
	}
	for i, k := range c.PreviousEncryptionKeys {
		if utf8.RuneCountInString(k) < controlplane.MinSecretLen {
			return fmt.Errorf("%w: PreviousEncryptionKeys[%d] has fewer than %d characters", ErrInvalidConfig, i, controlplane.MinSecretLen)
		}
	}
	if err := c.Provision.validate(); err != nil {
		return err
	}
	if err := c.Rollout.validate(); err != nil {
		return err
	}
	if c.Queue.JobTimeout > 0 && c.Queue.RescueAfter > 0 && c.Queue.RescueAfter < c.Queue.JobTimeout {
		return fmt.Errorf("%w: Queue.RescueAfter (%s) is below Queue.JobTimeout (%s): a slow but healthy attempt would run twice",
			ErrInvalidConfig, c.Queue.RescueAfter, c.Queue.JobTimeout)
	}
	return nil
}

// withInlineTimeout bounds one inline migration by a positive JobTimeout, as
// queued runs are; without one, it is not bounded.
func (o *Orchestrator) withInlineTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if d := o.cfg.Queue.JobTimeout; d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}
