package tenantmigrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestProgressiveRequestDuringStopIsQueued: serve stops the HTTP server
// and the Orchestrator side by side, so a request still in the gate when
// Stop has flushed the progressive set adds its tenant to a set nobody
// flushes again: the tenant is lost from the queue when the process exits.
// The request's read of the tenant is held (a lock on the tenants table)
// until Stop has returned.
func TestProgressiveRequestDuringStopIsQueued(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	old := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: gatedMigrations(false)})
	tenants := addSchemaTenants(t, old, "pq", 1, 1)
	migrateAll(t, old, tenants)
	id := tenants[0].ID

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: gatedMigrations(true),
		Strategy:    tenantmigrate.StrategyProgressive,
		Progressive: tenantmigrate.ProgressiveConfig{Interval: time.Hour},
	})

	holder, err := o.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `LOCK TABLE tenantmigrate.tenants IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- o.EnsureMigrated(context.WithoutCancel(ctx), id) }()
	waitFor(t, 30*time.Second, "the request's read to wait", func() bool {
		var n int
		require.NoError(t, o.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM tenantmigrate.tenants WHERE id%'`).Scan(&n))
		return n > 0
	})

	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, o.Stop(stopCtx))
	require.NoError(t, holder.Commit(ctx))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not end")
	}
	require.Equal(t, 1, fleettest.JobsPerTenant(t, o.Pool())[id],
		"the tenant of a request served while Stop ran was not queued")
}
