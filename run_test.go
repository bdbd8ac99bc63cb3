package tenantmigrate_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// runEvents collects Hooks.OnRun events.
type runEvents struct {
	mu     sync.Mutex
	events []tenantmigrate.RunEvent
}

func (r *runEvents) hook(ctx context.Context, e tenantmigrate.RunEvent) {
	if ctx == nil {
		panic("OnRun without a ctx")
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// last returns the last event of the tenant, failing when there is none.
func (r *runEvents) last(t *testing.T, id string) tenantmigrate.RunEvent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].TenantID == id {
			return r.events[i]
		}
	}
	t.Fatalf("no run event for tenant %s", id)
	return tenantmigrate.RunEvent{}
}

// brokenV3 is fleetMigrations with version 3 failing in schema "broken".
func brokenV3() []string {
	return []string{
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
		"DO $$ BEGIN IF current_schema() = 'broken' THEN PERFORM no_such_function(); END IF; END $$;\nCREATE TABLE invoices (id bigserial PRIMARY KEY);",
	}
}

// TestRunEventFields: Hooks.OnRun gets every run of a tenant, whatever
// triggered it, with the versions before and after, what was applied, the
// duration and, for a failure, a *MigrationError naming the migration.
// OnMigrationRun keeps getting the same runs.
func TestRunEventFields(t *testing.T) {
	t.Parallel()
	var events runEvents
	var legacy []string
	var legacyMu sync.Mutex
	cfg := tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleettest.Migrations(brokenV3()...),
		Strategy:    tenantmigrate.StrategyProgressive,
		RunWorkers:  true,
		Hooks: tenantmigrate.Hooks{
			OnRun: events.hook,
			OnMigrationRun: func(s tenantmigrate.Strategy, result string, d time.Duration) {
				legacyMu.Lock()
				legacy = append(legacy, string(s)+" "+result)
				legacyMu.Unlock()
			},
		},
	}
	o := startOrchestrator(t, cfg)
	ctx := t.Context()
	good := addSchemaTenants(t, o, "ev", 1, 2)
	broken := addTenantAt(t, o, "broken", good[0].URL, "broken")

	// A request: never migrated, so migrated inline under every strategy.
	require.NoError(t, o.EnsureMigrated(ctx, good[0].ID))
	e := events.last(t, good[0].ID)
	require.Equal(t, tenantmigrate.TriggerRequest, e.Trigger)
	require.Equal(t, tenantmigrate.StrategyProgressive, e.Strategy)
	require.Nil(t, e.FromVersion)
	require.Equal(t, int64(3), e.ToVersion)
	require.Equal(t, []int64{1, 2, 3}, e.Applied)
	require.Positive(t, e.Duration)
	require.NoError(t, e.Err)
	require.Zero(t, e.Attempt)

	// The admin API's migrate now: a run that finds nothing to apply.
	v, err := o.MigrateTenant(ctx, good[0].ID)
	require.NoError(t, err)
	require.Equal(t, int64(3), v)
	e = events.last(t, good[0].ID)
	require.Equal(t, tenantmigrate.TriggerAdmin, e.Trigger)
	require.Equal(t, int64(3), *e.FromVersion)
	require.Equal(t, int64(3), e.ToVersion)
	require.Empty(t, e.Applied)

	// A queued job.
	n, err := o.EnqueueTenants(ctx, good[1].ID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	waitAllLatest(t, o, good[1:], 30*time.Second)
	e = events.last(t, good[1].ID)
	require.Equal(t, tenantmigrate.TriggerQueue, e.Trigger)
	require.Equal(t, 1, e.Attempt)
	require.Equal(t, []int64{1, 2, 3}, e.Applied)

	// A batch run that fails on version 3.
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{IDs: []string{broken.ID}}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Failed)
	e = events.last(t, broken.ID)
	require.Equal(t, tenantmigrate.TriggerBatch, e.Trigger)
	require.Equal(t, 1, e.Attempt)
	require.Nil(t, e.FromVersion)
	require.Equal(t, int64(2), e.ToVersion)
	require.Equal(t, []int64{1, 2}, e.Applied)
	var merr *tenantmigrate.MigrationError
	require.ErrorAs(t, e.Err, &merr)
	require.Equal(t, broken.ID, merr.TenantID)
	require.Equal(t, int64(3), merr.FailedVersion)
	require.Equal(t, "00003_v3.sql", merr.FailedFile)
	require.Equal(t, []int64{1, 2}, merr.Applied)
	require.ErrorContains(t, e.Err, "no_such_function")

	legacyMu.Lock()
	defer legacyMu.Unlock()
	require.Equal(t, []string{"progressive completed", "progressive completed", "progressive completed", "progressive failed"}, legacy)
}

// TestFailureLoggedOnce: a failed run is logged by whoever ends up with it,
// not by every layer: Middleware logs a request's failure once; an error
// MigrateTenant or MigrateTenants returns or reports is not logged at all.
func TestFailureLoggedOnce(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleettest.Migrations(brokenV3()...),
		Logger:      logs.logger(),
	})
	db := pgtest.NewDatabase(t)
	addTenantAt(t, o, "broken", db, "broken")
	// The rollout's halt is logged once for the fleet, with its first
	// error: not a log of this run's error by a layer that returned it.
	count := func() int {
		n := 0
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "no_such_function") && !strings.Contains(line, `"msg":"rollout halted`) {
				n++
			}
		}
		return n
	}

	srv := httptest.NewServer(o.Middleware(http.NotFoundHandler()))
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Host = "broken.local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Equal(t, 1, count(), "logs:\n%s", logs.String())
	require.Contains(t, logs.String(), `"msg":"tenant gate failed"`)

	_, err = o.MigrateTenant(t.Context(), "broken")
	require.ErrorContains(t, err, "no_such_function")
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Failed)
	require.Equal(t, 1, count(), "returned errors are not logged too:\n%s", logs.String())
}

// TestRunHookPanicRecovered: a panic in Hooks.OnRun during a request's
// inline run (whose goroutine nothing above recovers: a panic there ended
// the process) is logged, and the run's result is recorded as usual: the
// request is served and the tenant is COMPLETED.
func TestRunHookPanicRecovered(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: pgtest.NewDatabase(t),
		Migrations:  fleetMigrations(),
		Logger:      logs.logger(),
		Hooks: tenantmigrate.Hooks{OnRun: func(context.Context, tenantmigrate.RunEvent) {
			panic("hook bug")
		}},
	})
	addTenantAt(t, o, "acme", pgtest.NewDatabase(t), "")

	srv := httptest.NewServer(o.Middleware(http.NotFoundHandler()))
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Host = "acme.local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "served by the next handler")
	st, err := o.TenantState(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)
	require.Equal(t, o.Latest(), *st.MigrationsVersion)
	require.Contains(t, logs.String(), `"msg":"run hook panicked; the run's result is recorded as usual"`)
	require.Contains(t, logs.String(), `"panic":"hook bug"`)
}
