package tenantmigrate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// rolloutV1 is a release with one migration; the next releases build on it.
func rolloutV1() fstest.MapFS {
	return fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);")
}

// rolloutV2 adds version 2: up is its SQL.
func rolloutV2(up string) fstest.MapFS {
	return fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);", up)
}

const (
	brokenV2 = "ALTER TABLE no_such_table ADD COLUMN plan text;"
	fixedV2  = "ALTER TABLE accounts ADD COLUMN plan text;"
	// dataV2 fails in tenants holding an account named 'bad'.
	dataV2 = `DO $$ BEGIN IF EXISTS (SELECT 1 FROM accounts WHERE name = 'bad') THEN RAISE EXCEPTION 'bad data in accounts'; END IF; END $$;`
)

// rolloutFleet registers n schema tenants and migrates them to version 1.
func rolloutFleet(t *testing.T, cp, prefix string, n int) []fleettest.SchemaTenant {
	t.Helper()
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV1()})
	tenants := addSchemaTenants(t, o, prefix, 2, (n+1)/2)[:n]
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.NotNil(t, res.Rollout)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	return tenants
}

// versions returns each tenant's recorded version (0: never migrated) and
// status.
func rolloutVersions(t *testing.T, o *tenantmigrate.Orchestrator, tenants []fleettest.SchemaTenant) (map[string]int64, map[string]tenantmigrate.Status) {
	t.Helper()
	vs, sts := map[string]int64{}, map[string]tenantmigrate.Status{}
	for _, tn := range tenants {
		st, err := o.TenantState(t.Context(), tn.ID)
		require.NoError(t, err)
		if st.MigrationsVersion != nil {
			vs[tn.ID] = *st.MigrationsVersion
		}
		sts[tn.ID] = st.MigrationsStatus
	}
	return vs, sts
}

func waitRollout(t *testing.T, o *tenantmigrate.Orchestrator, state tenantmigrate.RolloutState) *tenantmigrate.Rollout {
	t.Helper()
	var r *tenantmigrate.Rollout
	deadline := time.Now().Add(90 * time.Second)
	for {
		var err error
		r, err = o.CurrentRollout(t.Context())
		require.NoError(t, err)
		if r != nil && r.TargetVersion == o.Latest() && r.State == state {
			return r
		}
		if time.Now().After(deadline) {
			// What it waits for, to tell a stall from a slow machine.
			got, _ := json.Marshal(r)
			t.Fatalf("timed out after 90s waiting for rollout %s; the rollout is %s", state, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRolloutCanaryHaltsThenResumes: a canary wave of 3 labelled tenants
// meets a broken release under full_fleet. The first failure halts the
// rollout; the other tenants are never attempted (their version stays 1).
// After the fix (the file that never applied anywhere, edited), resume
// finishes the fleet.
func TestRolloutCanaryHaltsThenResumes(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "can", 12)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV1()})
	for _, tn := range tenants[:3] {
		_, err := admin.PatchTenant(t.Context(), tn.ID, tenantmigrate.TenantPatch{Labels: map[string]*string{"canary": new("yes")}})
		require.NoError(t, err)
	}

	var runs atomic.Int64
	cfg := tenantmigrate.Config{
		DatabaseURL: cp, Migrations: rolloutV2(brokenV2),
		Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue:   tenantmigrate.QueueConfig{Workers: 1},
		Rollout: tenantmigrate.RolloutConfig{CanarySelector: "canary=yes"},
		Hooks:   tenantmigrate.Hooks{OnRun: func(context.Context, tenantmigrate.RunEvent) { runs.Add(1) }},
	}
	broken := startOrchestrator(t, cfg)
	r := waitRollout(t, broken, tenantmigrate.RolloutHalted)
	require.Equal(t, []int64{3, 12}, r.WaveEnds, "canaries, then the rest (the default first wave, 1 of 12, is within them)")
	require.Equal(t, int64(1), r.Failed)
	require.Contains(t, r.HaltReason, "wave 1 of 3 tenants: 1 failed")
	require.Len(t, r.FirstErrors, 1)
	require.Equal(t, int64(2), r.FirstErrors[0].FailedVersion)
	require.Contains(t, r.FirstErrors[0].Error, "no_such_table")
	require.NoError(t, broken.Stop(t.Context()))
	require.EqualValues(t, 1, runs.Load(), "one worker: one attempt, then the halt")

	vs, _ := rolloutVersions(t, admin, tenants)
	for _, tn := range tenants[3:] {
		require.Equal(t, int64(1), vs[tn.ID], "%s was never attempted", tn.ID)
	}

	// While halted, every path refuses to run version 2.
	_, err := broken.MigrateTenant(t.Context(), tenants[5].ID)
	var halted *tenantmigrate.RolloutHaltedError
	require.ErrorAs(t, err, &halted)
	require.Equal(t, r.ID, halted.RolloutID)

	// The fix, then resume: everything finishes.
	cfg.Migrations = rolloutV2(fixedV2)
	fixed := startOrchestrator(t, cfg)
	_, err = fixed.ResumeRollout(t.Context(), r.ID)
	require.NoError(t, err)
	done := waitRollout(t, fixed, tenantmigrate.RolloutCompleted)
	require.Equal(t, int64(12), done.Completed)
	require.Zero(t, done.Failed)
	waitAllLatest(t, fixed, tenants, 30*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)
}

// TestRolloutSingleWaveFailureRate: one wave of 40 with a 10% rate allows
// 4 failures: 5 data-dependent failures halt migrate --all; 2 let it
// complete (38 COMPLETED, 2 FAILED_STALE, a failed run, no halt).
func TestRolloutSingleWaveFailureRate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bad    int
		halted bool
	}{{5, true}, {2, false}} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			cp := pgtest.NewDatabase(t)
			tenants := rolloutFleet(t, cp, "rate", 40)
			for _, tn := range tenants[:tc.bad] {
				fleettest.ForEachTenant(t, []fleettest.SchemaTenant{tn}, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
					_, err := conn.Exec(t.Context(), `INSERT INTO `+tn.Schema+`.accounts (name) VALUES ('bad')`)
					require.NoError(t, err)
				})
			}
			o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(dataV2),
				Rollout: tenantmigrate.RolloutConfig{Waves: "100%", HaltFailureRate: 0.10}})
			res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: 4})
			require.NoError(t, err)
			require.False(t, res.OK())
			require.NotNil(t, res.Rollout)
			require.Equal(t, []int64{40}, res.Rollout.WaveEnds)
			_, sts := rolloutVersions(t, o, tenants)
			counts := map[tenantmigrate.Status]int{}
			for _, s := range sts {
				counts[s]++
			}
			if tc.halted {
				require.NotNil(t, res.Halted)
				require.Equal(t, tenantmigrate.RolloutHalted, res.Rollout.State)
				require.Equal(t, 5, counts[tenantmigrate.StatusFailedStale])
				require.Contains(t, res.Rollout.HaltReason, "5 failed, more than the 4 allowed")
				return
			}
			require.Nil(t, res.Halted)
			require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
			require.Equal(t, 38, counts[tenantmigrate.StatusCompleted])
			require.Equal(t, 2, counts[tenantmigrate.StatusFailedStale])
			require.Equal(t, int64(2), res.Failed)
			require.Equal(t, int64(38), res.Rollout.Completed)
			require.Equal(t, int64(2), res.Rollout.Failed)
		})
	}
}

// TestRolloutHaltSeenEverywhere: three full_fleet instances and a
// migrate --all work one rollout of a broken release; the first failure of
// the single wave (rate 0) halts it for all of them. Attempts after the
// halt are bounded by what was already running: at most one per worker.
func TestRolloutHaltSeenEverywhere(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "all", 60)
	var runs atomic.Int64
	cfg := tenantmigrate.Config{
		DatabaseURL: cp, Migrations: rolloutV2(brokenV2),
		Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue:   tenantmigrate.QueueConfig{Workers: 2, MaxAttempts: 1},
		Rollout: tenantmigrate.RolloutConfig{Waves: "100%", HaltFailureRate: -1, FeedBatchSize: 5},
		Hooks:   tenantmigrate.Hooks{OnRun: func(context.Context, tenantmigrate.RunEvent) { runs.Add(1) }},
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { startOrchestrator(t, cfg) })
	}
	batchCfg := cfg
	batchCfg.RunWorkers, batchCfg.Strategy = false, ""
	batch := newOrchestrator(t, batchCfg)
	var res tenantmigrate.MigrateResult
	wg.Go(func() {
		var err error
		res, err = batch.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{Concurrency: 2})
		require.NoError(t, err)
	})
	wg.Wait()
	require.NotNil(t, res.Halted, "migrate --all saw the halt")
	waitRollout(t, batch, tenantmigrate.RolloutHalted)
	// Running attempts finish; none starts after the halt. 3 instances of 2
	// workers and 2 batch workers: 8 attempts at once, each of which may
	// have begun before the first failure's halt committed.
	require.LessOrEqual(t, runs.Load(), int64(16))
	vs, _ := rolloutVersions(t, batch, tenants)
	untouched := 0
	for _, tn := range tenants {
		if vs[tn.ID] == 1 {
			untouched++
		}
	}
	require.GreaterOrEqual(t, untouched, 60-16)
}

// TestRolloutSupersededByNewerRelease: a halted rollout to version 2 is
// superseded by the rollout of the release that fixes it with version 3,
// which starts again from its first wave and completes.
func TestRolloutSupersededByNewerRelease(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "sup", 6)
	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(brokenV2)})
	res, err := o2.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.NotNil(t, res.Halted)
	old := res.Rollout

	v3 := fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"SELECT 1;", "ALTER TABLE accounts ADD COLUMN plan text;")
	o3 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: v3})
	res, err = o3.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true, IncludeStale: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.True(t, res.OK(), "%+v", res)
	require.Equal(t, int64(3), res.Rollout.TargetVersion)
	require.Equal(t, tenantmigrate.RolloutCompleted, res.Rollout.State)
	require.Equal(t, int64(6), res.Rollout.Total, "the new rollout has every tenant behind 3")
	prev, err := o3.GetRollout(t.Context(), old.ID)
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.RolloutSuperseded, prev.State)
	require.NotNil(t, prev.FinishedAt)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
}

// TestRolloutHaltedGate503: under on_request a request for a tenant behind
// a halted rollout gets 503 {"error", "rollout"} with Retry-After, and
// nothing runs.
func TestRolloutHaltedGate503(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "gate", 4)
	var runs atomic.Int64
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(brokenV2),
		Hooks: tenantmigrate.Hooks{OnRun: func(context.Context, tenantmigrate.RunEvent) { runs.Add(1) }}})
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.NotNil(t, res.Halted)
	before := runs.Load()

	h := o.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, tn := range tenants {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://"+tn.ID+".local.dev/", nil))
		st, err := o.TenantState(t.Context(), tn.ID)
		require.NoError(t, err)
		if *st.MigrationsVersion == 1 && st.MigrationsStatus == tenantmigrate.StatusCompleted {
			require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
			require.Equal(t, "60", rec.Header().Get("Retry-After"))
			require.JSONEq(t, `{"error": "tenant not migrated: rollout `+itoa(res.Rollout.ID)+` to version 2 is halted", "rollout": `+itoa(res.Rollout.ID)+`}`, rec.Body.String())
		}
	}
	require.Equal(t, before, runs.Load(), "no run during the halt")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestUndecryptableTenantCountsInRollout: a tenant of a rollout whose
// URL no configured key decrypts is recorded FAILED_STALE by its run; the
// rollout must learn of that result (RolloutHook.Done: "told the recorded
// result of each run") so that its wave ends, instead of staying RUNNING.
func TestUndecryptableTenantCountsInRollout(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	tenants := rolloutFleet(t, cp, "undec", 3)
	// One more tenant at version 1, written under another key.
	other := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV1(), EncryptionKey: "another-test-key-0123456789abcd"})
	lost := addTenantAt(t, other, "undec-lost", tenants[0].URL, "undec_lost")
	_, err := other.MigrateTenant(t.Context(), lost.ID)
	require.NoError(t, err)

	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: rolloutV2(fixedV2),
		Rollout: tenantmigrate.RolloutConfig{Waves: "100%", HaltFailureRate: 0.5}})
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	st, err := o.TenantState(t.Context(), lost.ID)
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailedStale, st.MigrationsStatus, "the run recorded the undecryptable tenant failed")
	require.NotNil(t, res.Rollout)
	r, err := o.CurrentRollout(t.Context())
	require.NoError(t, err)
	require.NotNil(t, r)
	require.Equal(t, tenantmigrate.RolloutCompleted, r.State, "rollout %+v; batch result %+v", r, res)
}
