package tenantmigrate_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestNewValidatesConfig: out-of-range fields are refused by New, naming the
// field, before anything connects; a negative InlineConcurrency used to panic.
func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		field string
		cfg   tenantmigrate.Config
	}{
		{"Limits.InlineConcurrency", tenantmigrate.Config{Limits: tenantmigrate.LimitsConfig{InlineConcurrency: -1}}},
		{"Queue.Workers", tenantmigrate.Config{Queue: tenantmigrate.QueueConfig{Workers: -2}}},
		{"Queue.MaxAttempts", tenantmigrate.Config{Queue: tenantmigrate.QueueConfig{MaxAttempts: -1}}},
		{"Progressive.BatchSize", tenantmigrate.Config{Progressive: tenantmigrate.ProgressiveConfig{BatchSize: -1}}},
		{"Limits.LockTimeout", tenantmigrate.Config{Limits: tenantmigrate.LimitsConfig{LockTimeout: -1}}},
		{"Queue.RetryBackoff", tenantmigrate.Config{Queue: tenantmigrate.QueueConfig{RetryBackoff: -1}}},
		{"Queue.RescueAfter", tenantmigrate.Config{Queue: tenantmigrate.QueueConfig{RescueAfter: -1}}},
		{"Progressive.Interval", tenantmigrate.Config{Progressive: tenantmigrate.ProgressiveConfig{Interval: -1}}},
		{"Progressive.StaleRetryInterval", tenantmigrate.Config{Progressive: tenantmigrate.ProgressiveConfig{StaleRetryInterval: -1}}},
		{"is below Queue.JobTimeout", tenantmigrate.Config{Queue: tenantmigrate.QueueConfig{JobTimeout: 10 * time.Minute, RescueAfter: time.Minute}}},
		{"PreviousEncryptionKeys without EncryptionKey", tenantmigrate.Config{PreviousEncryptionKeys: []string{rotationKeyA}}},
		{"PreviousEncryptionKeys[1] has fewer than 16 characters", tenantmigrate.Config{
			EncryptionKey: rotationKeyB, PreviousEncryptionKeys: []string{rotationKeyA, "too-short"}}},
	} {
		t.Run(tc.field, func(t *testing.T) {
			t.Parallel()
			// An unreachable control plane: validation must come first.
			cfg := tc.cfg
			cfg.DatabaseURL = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
			cfg.Migrations = fleetMigrations()
			_, err := tenantmigrate.New(t.Context(), cfg)
			require.ErrorIs(t, err, tenantmigrate.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.field)
		})
	}
}

// TestNegativeJobTimeoutMeansNoTimeoutInline: a negative JobTimeout is "no
// timeout" for inline runs too, as for queued ones (it used to expire at once).
func TestNegativeJobTimeoutMeansNoTimeoutInline(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations(), Queue: tenantmigrate.QueueConfig{JobTimeout: -1}})
	addTenantAt(t, o, "acme", pgtest.NewDatabase(t), "")
	v, err := o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, v)
}

// TestExportedErrors: callers branch on the root package's errors without
// importing internal packages; a schema the migrator would refuse is refused
// when the tenant is stored.
func TestExportedErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations()})
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: pgtest.NewDatabase(t), Schema: "public"})
	require.ErrorIs(t, err, tenantmigrate.ErrInvalid)
	require.ErrorContains(t, err, "public")
	require.ErrorIs(t, tenantmigrate.ValidateSchemaName("public"), tenantmigrate.ErrInvalid)
	require.NoError(t, tenantmigrate.ValidateSchemaName("acme"))

	lockErr := &tenantmigrate.MigrationError{TenantID: "acme", Err: fmt.Errorf("wait: %w", tenantmigrate.ErrLockTimeout)}
	require.ErrorIs(t, lockErr, tenantmigrate.ErrLockTimeout)
	require.True(t, tenantmigrate.IsRetryable(lockErr))
	require.False(t, tenantmigrate.IsRetryable(fmt.Errorf("x: %w", tenantmigrate.ErrInvalidIndexes)))
}
