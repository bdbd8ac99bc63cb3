package tenantmigrate_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// progressLog collects MigrateTenants' progress events.
type progressLog struct {
	mu     sync.Mutex
	events []tenantmigrate.MigrateProgress
}

func (l *progressLog) add(_ context.Context, p tenantmigrate.MigrateProgress) {
	l.mu.Lock()
	l.events = append(l.events, p)
	l.mu.Unlock()
}

// of returns the events of kind, in order.
func (l *progressLog) of(kind tenantmigrate.ProgressKind) []tenantmigrate.MigrateProgress {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []tenantmigrate.MigrateProgress
	for _, p := range l.events {
		if p.Kind == kind {
			out = append(out, p)
		}
	}
	return out
}

// doneIDs returns the ids of the ProgressDone events, sorted.
func (l *progressLog) doneIDs() []string {
	var ids []string
	for _, p := range l.of(tenantmigrate.ProgressDone) {
		ids = append(ids, p.TenantID)
	}
	slices.Sort(ids)
	return ids
}

// setState writes a tenant's state in the control plane directly.
func setState(t *testing.T, o *tenantmigrate.Orchestrator, id string, version *int64, status string) {
	t.Helper()
	_, err := o.Pool().Exec(t.Context(),
		`UPDATE tenantmigrate.tenants SET migrations_version = $2, migrations_status = NULLIF($3, '') WHERE id = $1`,
		id, version, status)
	require.NoError(t, err)
}

func collectSelection(t *testing.T, o *tenantmigrate.Orchestrator, sel tenantmigrate.Selection) []string {
	t.Helper()
	var ids []string
	for id, err := range o.SelectTenants(t.Context(), sel) {
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// TestMigrateTenantsSelection: AllBehind selects the tenants never migrated,
// below the latest version or FAILED (at the latest too), not FAILED_STALE
// ones unless IncludeStale, and never the COMPLETED ones at the latest;
// named IDs come first, once each, whatever their state. The run migrates
// exactly those, and progress reports each.
func TestMigrateTenantsSelection(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations()})
	tenants := addSchemaTenants(t, o, "sel", 1, 6)
	v1, v3 := int64(1), int64(3)
	// sel-000 never migrated.
	setState(t, o, "sel-001", &v1, "COMPLETED")
	setState(t, o, "sel-002", &v3, "FAILED")
	setState(t, o, "sel-003", &v1, "FAILED_STALE")
	setState(t, o, "sel-004", &v3, "COMPLETED")
	setState(t, o, "sel-005", &v3, "COMPLETED")
	// The databases hold nothing yet: every selected run applies all three.

	behind := tenantmigrate.Selection{AllBehind: true}
	require.Equal(t, []string{"sel-000", "sel-001", "sel-002"}, collectSelection(t, o, behind))
	require.Equal(t, []string{"sel-000", "sel-001", "sel-002", "sel-003"},
		collectSelection(t, o, tenantmigrate.Selection{AllBehind: true, IncludeStale: true}))
	named := tenantmigrate.Selection{IDs: []string{"sel-004", "sel-001", "sel-004"}, AllBehind: true}
	require.Equal(t, []string{"sel-004", "sel-001", "sel-000", "sel-002"}, collectSelection(t, o, named))
	require.Equal(t, []string{"sel-005"}, collectSelection(t, o, tenantmigrate.Selection{IDs: []string{"sel-005"}}))

	var log progressLog
	res, err := o.MigrateTenants(t.Context(), named, tenantmigrate.MigrateOptions{Concurrency: 2, OnProgress: log.add})
	require.NoError(t, err)
	require.NotNil(t, res.Rollout, "AllBehind ran the rollout to the latest version")
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	require.Equal(t, tenantmigrate.MigrateResult{Selected: 4, Completed: 4, Duration: res.Duration, Rollout: res.Rollout}, res)
	require.True(t, res.OK())

	// The selected tenants hold every version once; the others nothing.
	byID := map[string]fleettest.SchemaTenant{}
	for _, tn := range tenants {
		byID[tn.ID] = tn
	}
	var ran []fleettest.SchemaTenant
	for _, id := range []string{"sel-000", "sel-001", "sel-002", "sel-004"} {
		ran = append(ran, byID[id])
	}
	fleettest.RequireAppliedOnce(t, ran, 1, 2, 3)
	conn, err := pgx.Connect(t.Context(), byID["sel-003"].URL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var runOnStale bool
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", byID["sel-003"].Schema+".goose_db_version").Scan(&runOnStale))
	require.False(t, runOnStale, "the FAILED_STALE tenant was run")
	require.Equal(t, 4, fleettest.CountCompleted(t, o.Pool(), fleettest.IDs(ran), 3))
	st, err := o.TenantState(t.Context(), "sel-003")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailedStale, st.MigrationsStatus, "not selected: left as it was")

	// Progress: one ProgressSelected per tenant, counting up, and one
	// ProgressDone per tenant, each COMPLETED at 3 on its first attempt.
	sels := log.of(tenantmigrate.ProgressSelected)
	require.Len(t, sels, 4)
	for i, p := range sels {
		require.Equal(t, int64(i+1), p.Selected)
	}
	require.Equal(t, []string{"sel-000", "sel-001", "sel-002", "sel-004"}, log.doneIDs())
	for _, p := range log.of(tenantmigrate.ProgressDone) {
		require.NoError(t, p.Err, p.TenantID)
		require.Equal(t, int64(3), p.Version, p.TenantID)
		require.Equal(t, 1, p.Attempt, p.TenantID)
	}
	require.Empty(t, log.of(tenantmigrate.ProgressRetry))

	// Again: nothing behind.
	res, err = o.MigrateTenants(t.Context(), behind, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Zero(t, res.Selected)
}

// TestMigrateTenantsConcurrencyBound: with Concurrency 3, three tenants run
// at once and never more. Each run's migration (a goose Go migration, in
// the tenant's transaction) waits until three are running, so a run that
// did not overlap would time out the test.
func TestMigrateTenantsConcurrencyBound(t *testing.T) {
	t.Parallel()
	const limit = 3
	var (
		mu            sync.Mutex
		running, peak int
		allIn         = make(chan struct{})
	)
	wait := goose.NewGoMigration(1, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
		mu.Lock()
		running++
		peak = max(peak, running)
		if running == limit {
			select {
			case <-allIn:
			default:
				close(allIn)
			}
		}
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		select {
		case <-allIn:
		case <-time.After(30 * time.Second):
			return errors.New("the runs did not overlap")
		}
		_, err := tx.ExecContext(ctx, "CREATE TABLE marker (id int)")
		return err
	}}, nil)
	// All tenants share the test's one server: its cap must not be the
	// bound. One wave: the default first wave of one tenant would run alone.
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), GoMigrations: []*goose.Migration{wait},
		Servers: tenantmigrate.ServersConfig{MaxPerServer: 2 * limit}, Rollout: oneWaveNoHalt})
	tenants := addSchemaTenants(t, o, "conc", 2, 5)

	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: limit})
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Completed, "%+v", res)
	require.Equal(t, limit, peak)
	fleettest.RequireAppliedOnce(t, tenants, 1)
}

// TestMigrateTenantsRetriesTransientFailure: a tenant whose version 2 fails
// with serialization_failure on its first run is retried and completes; a
// tenant whose version 2 fails for good is not retried, ends FAILED_STALE
// (failed in the rollout), and its MigrationError names the failed
// migration and what was applied before.
func TestMigrateTenantsRetriesTransientFailure(t *testing.T) {
	t.Parallel()
	migrations := fleettest.Migrations(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY);\nCREATE SEQUENCE attempts;",
		`SELECT nextval('attempts');
DO $$ BEGIN IF current_schema() = 'flaky' AND currval('attempts') = 1 THEN RAISE EXCEPTION 'first run fails' USING ERRCODE = 'serialization_failure'; END IF; END $$;
DO $$ BEGIN IF current_schema() = 'broken' THEN PERFORM no_such_function(); END IF; END $$;
CREATE TABLE invoices (id bigserial PRIMARY KEY);`,
	)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: migrations, Rollout: oneWaveNoHalt})
	logStatuses(t, o.Pool())
	good := addSchemaTenants(t, o, "ok", 1, 2)
	flaky := addTenantAt(t, o, "flaky", good[0].URL, "flaky")
	broken := addTenantAt(t, o, "broken", good[0].URL, "broken")

	var log progressLog
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true},
		tenantmigrate.MigrateOptions{Retries: 2, RetryBackoff: time.Millisecond, OnProgress: log.add})
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Selected)
	require.Equal(t, int64(3), res.Completed)
	require.Equal(t, int64(1), res.Failed)
	require.Equal(t, int64(1), res.Retried)
	require.False(t, res.OK())

	// The transient failure: one retry event, then COMPLETED.
	retries := log.of(tenantmigrate.ProgressRetry)
	require.Len(t, retries, 1)
	require.Equal(t, "flaky", retries[0].TenantID)
	require.Equal(t, 1, retries[0].Attempt)
	require.Equal(t, time.Millisecond, retries[0].Wait)
	require.ErrorContains(t, retries[0].Err, "first run fails")
	require.Equal(t, []string{"FAILED", "COMPLETED"}, statusHistory(t, o.Pool(), "flaky"))
	fleettest.RequireAppliedOnce(t, append(good, flaky), 1, 2)

	// The permanent one: one attempt, FAILED_STALE, its error with fields.
	var done tenantmigrate.MigrateProgress
	for _, p := range log.of(tenantmigrate.ProgressDone) {
		if p.TenantID == broken.ID {
			done = p
		}
	}
	require.Equal(t, 1, done.Attempt)
	require.Equal(t, int64(1), done.Version)
	var merr *tenantmigrate.MigrationError
	require.ErrorAs(t, done.Err, &merr)
	require.Equal(t, "broken", merr.TenantID)
	require.Equal(t, int64(2), merr.FailedVersion)
	require.Equal(t, "00002_v2.sql", merr.FailedFile)
	require.Equal(t, []int64{1}, merr.Applied)
	require.Equal(t, int64(1), merr.Version)
	require.ErrorContains(t, merr, "no_such_function")
	require.Equal(t, []string{"FAILED_STALE"}, statusHistory(t, o.Pool(), "broken"))
	fleettest.RequireAppliedOnce(t, []fleettest.SchemaTenant{broken}, 1)
}

// TestMigrateTenantsCancelled: once ctx ends no tenant is started, the
// running one finishes and is recorded, and the result says interrupted.
func TestMigrateTenantsCancelled(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), Migrations: fleetMigrations()})
	addSchemaTenants(t, o, "cancel", 1, 5)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := o.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{
		Concurrency: 1,
		OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressDone {
				cancel() // after the first tenant
			}
		},
	})
	require.NoError(t, err)
	require.True(t, res.Interrupted)
	require.False(t, res.OK())
	require.LessOrEqual(t, res.Selected, int64(2), "at most the next one was handed over")
	require.Equal(t, res.Selected, res.Completed, "the tenants started finished")
	st, err := o.Stats(t.Context())
	require.NoError(t, err)
	require.Equal(t, 5-res.Completed, st.Behind)
}

// TestMigrateTenantsReadOnly: a ReadOnly Orchestrator runs nothing.
func TestMigrateTenantsReadOnly(t *testing.T) {
	t.Parallel()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), ReadOnly: true})
	_, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.ErrorIs(t, err, tenantmigrate.ErrReadOnly)
}

// oneWaveNoHalt makes the rollout of a test about something else one wave
// that never halts, so a failing tenant neither halts nor waits for others.
var oneWaveNoHalt = tenantmigrate.RolloutConfig{Waves: "100%", HaltFailureRate: 1}
