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
	// DefaultLockTimeout is the default of Config.LockTimeout.
	DefaultLockTimeout = migrator.DefaultLockTimeout
	// DefaultTenantLockTimeout is the default of Config.TenantLockTimeout.
	DefaultTenantLockTimeout = migrator.DefaultTenantLockTimeout
	// DefaultInlineConcurrency is the default of Config.InlineConcurrency.
	DefaultInlineConcurrency = 4
	// DefaultInlineTimeout bounds one inline migration (during a request,
	// MigrateTenant) when Config.JobTimeout is not set.
	DefaultInlineTimeout = 15 * time.Minute
	// DefaultWorkers is the default of Config.Workers.
	DefaultWorkers = queue.DefaultWorkers
	// DefaultMaxAttempts is the default of Config.MaxAttempts.
	DefaultMaxAttempts = queue.DefaultMaxAttempts
	// DefaultRetryBackoff is the default of Config.RetryBackoff.
	DefaultRetryBackoff = queue.DefaultRetryBackoff
	// DefaultJobTimeout is the default of Config.JobTimeout for queued runs.
	DefaultJobTimeout = queue.DefaultJobTimeout
	// DefaultRescueMargin is added to the job timeout for the default of
	// Config.RescueAfter.
	DefaultRescueMargin = queue.DefaultRescueMargin
	// DefaultFleetRescanInterval is the default of Config.FleetRescanInterval.
	DefaultFleetRescanInterval = queue.DefaultFleetRescanInterval
	// DefaultProgressiveInterval is the default of Config.ProgressiveInterval.
	DefaultProgressiveInterval = strategy.DefaultCollectInterval
	// DefaultProgressiveBatchSize is the default of Config.ProgressiveBatchSize.
	DefaultProgressiveBatchSize = strategy.DefaultCollectBatchSize
	// DefaultStaleRetryInterval is the default of Config.StaleRetryInterval.
	DefaultStaleRetryInterval = strategy.DefaultStaleRetryInterval
)

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
		{"InlineConcurrency", c.InlineConcurrency},
		{"Workers", c.Workers},
		{"MaxAttempts", c.MaxAttempts},
		{"ProgressiveBatchSize", c.ProgressiveBatchSize},
	} {
		if f.n < 0 {
			return fmt.Errorf("%w: %s is %d: want 0 (the default) or more", ErrInvalidConfig, f.name, f.n)
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"LockTimeout", c.LockTimeout},
		{"RetryBackoff", c.RetryBackoff},
		{"RescueAfter", c.RescueAfter},
		{"ProgressiveInterval", c.ProgressiveInterval},
		{"StaleRetryInterval", c.StaleRetryInterval},
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
	if c.JobTimeout > 0 && c.RescueAfter > 0 && c.RescueAfter < c.JobTimeout {
		return fmt.Errorf("%w: RescueAfter (%s) is below JobTimeout (%s): a slow but healthy attempt would run twice",
			ErrInvalidConfig, c.RescueAfter, c.JobTimeout)
	}
	return nil
}

// inlineTimeout bounds one inline migration: JobTimeout, DefaultInlineTimeout
// when it is 0, none when it is negative (as for queued runs).
func (o *Orchestrator) inlineTimeout() time.Duration {
	switch {
	case o.cfg.JobTimeout > 0:
		return o.cfg.JobTimeout
	case o.cfg.JobTimeout < 0:
		return 0
	}
	return DefaultInlineTimeout
}
