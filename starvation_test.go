package tenantmigrate_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestFullServerStarvesNoTenant: 16 tenants of one server with a cap of 1,
// two instances of 4 workers: 8 workers compete for one slot, so at every
// moment up to 15 jobs wait. Every tenant completes with one attempt (no
// job gives up waiting), and the slot goes to the tenants roughly in the
// order they were queued: a freed slot wakes the oldest waiting job, so the
// first-queued tenants do not finish last, however often a newer job's
// snooze ends at the right moment.
func TestFullServerStarvesNoTenant(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	migs := fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY); SELECT pg_sleep(0.05);")
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addSchemaTenants(t, admin, "fair", 1, 16)

	var mu sync.Mutex
	var finished []string
	hooks := tenantmigrate.Hooks{OnRun: func(_ context.Context, e tenantmigrate.RunEvent) {
		if e.Err == nil && len(e.Applied) > 0 {
			mu.Lock()
			finished = append(finished, e.TenantID)
			mu.Unlock()
		}
	}}
	for range 2 {
		startOrchestrator(t, tenantmigrate.Config{
			DatabaseURL: cp, Migrations: migs, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
			Queue: tenantmigrate.QueueConfig{Workers: 4}, Servers: tenantmigrate.ServersConfig{MaxPerServer: 1},
			Hooks: hooks,
		})
	}
	waitAllLatest(t, admin, tenants, 60*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1)

	// The order the jobs were queued in, and how often each waited.
	rows, err := admin.Pool().Query(t.Context(), `SELECT args->>'tenant_id', attempt, coalesce((metadata->>'snoozes')::int, 0)
		FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' ORDER BY id`)
	require.NoError(t, err)
	type job struct {
		Tenant           string
		Attempt, Snoozes int
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[job])
	require.NoError(t, err)
	require.Len(t, jobs, len(tenants))
	waited := 0
	for _, j := range jobs {
		require.Equal(t, 1, j.Attempt, "tenant %s: waiting for the server used no attempt", j.Tenant)
		waited += min(j.Snoozes, 1)
	}
	require.Greater(t, waited, len(jobs)/2, "most jobs found the server full")

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, finished, len(tenants))
	// Completion ranks in queue order: the first-queued half of the
	// tenants finishes earlier, on the whole, than the second half (runs
	// show rank sums of about 40 against 80; a random order gives 60 each;
	// a starving order, the oldest last, gives the reverse).
	firstHalf, secondHalf := 0, 0
	var ranks []int
	for i, j := range jobs {
		r := slices.Index(finished, j.Tenant)
		ranks = append(ranks, r)
		if i < len(jobs)/2 {
			firstHalf += r
		} else {
			secondHalf += r
		}
	}
	require.Less(t, firstHalf, secondHalf, "completion rank by queue order: %v", ranks)
}
