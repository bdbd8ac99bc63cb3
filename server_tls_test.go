package tenantmigrate_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestOneTenantsTLSConfigTakesItsServerDown: one tenant whose URL asks
// for TLS from a server without it (a configuration error of that tenant
// alone: the server answers, and refuses TLS) must not make its server DOWN
// for the other tenants on it, which the server serves.
func TestOneTenantsTLSConfigTakesItsServerDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	good, bad := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	var badRuns atomic.Int32
	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: fleetMigrations(), Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue:   tenantmigrate.QueueConfig{MaxAttempts: 10, RetryBackoff: 50 * time.Millisecond},
		Servers: tenantmigrate.ServersConfig{ProbeInterval: 200 * time.Millisecond},
		Hooks: tenantmigrate.Hooks{OnRun: func(_ context.Context, e tenantmigrate.RunEvent) {
			if e.TenantID == "bad" && e.Err != nil {
				badRuns.Add(1)
			}
		}},
	})
	badURL := strings.Replace(bad, "sslmode=disable", "sslmode=require", 1)
	require.NotEqual(t, bad, badURL)
	require.Equal(t, tenantmigrate.ServerOf(good, nil), tenantmigrate.ServerOf(badURL, nil), "one server")
	addTenantAt(t, o, "bad", badURL, "")
	_, err := o.ScheduleFleet(ctx, true)
	require.NoError(t, err)
	waitFor(t, 60*time.Second, "the bad tenant's runs to fail 3 times (the threshold)", func() bool { return badRuns.Load() >= 3 })

	// The server answers the good tenant: its run must not be refused for long.
	addTenantAt(t, o, "good", good, "")
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := o.MigrateTenant(ctx, "good")
		if err == nil {
			break
		}
		require.ErrorIs(t, err, tenantmigrate.ErrServerDown)
		require.True(t, time.Now().Before(deadline),
			"tenant good refused for 15 s (75 probe intervals): %v", err)
		time.Sleep(100 * time.Millisecond) // retry like a client; bounded by the deadline
	}
}
