package tenantmigrate

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
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
	// DefaultInlineTimeout bounds one inline migration (during a request,
	// MigrateTenant) when Config.Queue.JobTimeout is not set.
	DefaultInlineTimeout = 15 * time.Minute
	// DefaultWorkers is the default of Config.Queue.Workers.
	DefaultWorkers = queue.DefaultWorkers
	// DefaultMaxAttempts is the default of Config.Queue.MaxAttempts.
	DefaultMaxAttempts = queue.DefaultMaxAttempts
	// DefaultRetryBackoff is the default of Config.Queue.RetryBackoff.
	DefaultRetryBackoff = queue.DefaultRetryBackoff
	// DefaultJobTimeout is the default of Config.Queue.JobTimeout for queued runs.
	DefaultJobTimeout = queue.DefaultJobTimeout
	// DefaultRescueMargin is added to the job timeout for the default of
	// Config.Queue.RescueAfter.
	DefaultRescueMargin = queue.DefaultRescueMargin
	// DefaultFleetRescanInterval is the default of Config.Queue.FleetRescanInterval.
	DefaultFleetRescanInterval = queue.DefaultFleetRescanInterval
	// DefaultProgressiveInterval is the default of Config.Progressive.Interval.
	DefaultProgressiveInterval = strategy.DefaultCollectInterval
	// DefaultProgressiveBatchSize is the default of Config.Progressive.BatchSize.
	DefaultProgressiveBatchSize = strategy.DefaultCollectBatchSize
	// DefaultStaleRetryInterval is the default of Config.Progressive.StaleRetryInterval.
	DefaultStaleRetryInterval = strategy.DefaultStaleRetryInterval
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

	// JobTimeout bounds one migration attempt: a queued one, and one run
	// inline (during a request, MigrateTenant). Negative: no timeout, for
	// both. Defaults to DefaultJobTimeout (5m) for queued attempts and
	// DefaultInlineTimeout (15m) for inline ones.
	JobTimeout time.Duration

	// RescueAfter is how long a job may stay running before it is considered
	// held by a dead instance and retried. It may not be below a positive
	// JobTimeout; negative is an error. Defaults to JobTimeout plus
	// DefaultRescueMargin (6m), or 1h without a job timeout.
	RescueAfter time.Duration

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

// ErrInvalidConfig is wrapped by the error New returns for a Config field
// out of its range, naming the field.
var ErrInvalidConfig = errors.New("invalid config")

// validate checks the fields New does not parse itself. Counts may not be
// negative (0 means the default). Durations: a negative value means "off"
// (no timeout, no rescan) where off makes sense, the fields whose doc says
// so (TenantLockTimeout, StatementTimeout, JobTimeout,
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
		{"Progressive.Interval", c.Progressive.Interval},
		{"Progressive.StaleRetryInterval", c.Progressive.StaleRetryInterval},
	} {
		if f.d < 0 {
			return fmt.Errorf("%w: %s is %s: want 0 (the default) or more", ErrInvalidConfig, f.name, f.d)
		}
	}
	if len(c.PreviousEncryptionKeys) > 0 && c.EncryptionKey == "" {
		return fmt.Errorf("%w: PreviousEncryptionKeys without EncryptionKey: every write needs the current key", ErrInvalidConfig)
	}
	for i, k := range c.PreviousEncryptionKeys {
		if utf8.RuneCountInString(k) < controlplane.MinSecretLen {
			return fmt.Errorf("%w: PreviousEncryptionKeys[%d] has fewer than %d characters", ErrInvalidConfig, i, controlplane.MinSecretLen)
		}
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

// inlineTimeout bounds one inline migration: JobTimeout, DefaultInlineTimeout
// when it is 0, none when it is negative (as for queued runs).
func (o *Orchestrator) inlineTimeout() time.Duration {
	switch {
	case o.cfg.Queue.JobTimeout > 0:
		return o.cfg.Queue.JobTimeout
	case o.cfg.Queue.JobTimeout < 0:
		return 0
	}
	return DefaultInlineTimeout
}
