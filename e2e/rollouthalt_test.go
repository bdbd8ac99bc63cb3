package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// haltV1 is the release the fleet is at; haltV2 adds a version 2 that fails
// in a tenant holding an account named 'bad' (a data-dependent failure,
// SQLSTATE P0001, not retryable) and adds a column elsewhere.
var (
	haltV1 = []string{"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);"}
	haltV2 = append(slices.Clone(haltV1),
		"DO $$ BEGIN IF EXISTS (SELECT 1 FROM accounts WHERE name = 'bad') THEN RAISE EXCEPTION 'bad data in accounts'; END IF; END $$;\n"+
			"ALTER TABLE accounts ADD COLUMN plan text;")
)

// rolloutJSON is a rollout as GET /admin/rollouts and `rollout list --json`
// show it, as far as the tests look at it.
type rolloutJSON struct {
	ID            int64  `json:"id"`
	TargetVersion int64  `json:"targetVersion"`
	State         string `json:"state"`
	HaltReason    string `json:"haltReason"`
	Total         int64  `json:"total"`
	Completed     int64  `json:"completed"`
	Failed        int64  `json:"failed"`
	Pending       int64  `json:"pending"`
	Waves         []struct {
		Size      int64  `json:"size"`
		Completed int64  `json:"completed"`
		Failed    int64  `json:"failed"`
		Pending   int64  `json:"pending"`
		State     string `json:"state"`
	} `json:"waves"`
	FirstErrors []struct {
		TenantID      string `json:"tenantId"`
		FailedVersion *int64 `json:"failedVersion"`
		Error         string `json:"error"`
	} `json:"firstErrors"`
}

// labelTenants sets label k=v on each of the tenants, through the library.
func labelTenants(t *testing.T, controlPlane string, tenants []fleettest.SchemaTenant, k, v string) {
	t.Helper()
	o, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: controlPlane, EncryptionKey: encryptionKey, ReadOnly: true})
	require.NoError(t, err)
	defer o.Close()
	for _, tn := range tenants {
		_, err := o.PatchTenant(t.Context(), tn.ID, tenantmigrate.TenantPatch{Labels: map[string]*string{k: &v}})
		require.NoError(t, err)
	}
}

// TestRolloutHaltSeenByAllProcesses: a fleet of 24 tenants at version 1
// gets a release whose version 2 fails on data that one of the 3 canaries
// (label canary=yes) and two later tenants hold. Three real serve
// processes (full_fleet) and a `migrate --all` process start on it at once
// with --canary-selector canary=yes --waves 100% --halt-failure-rate 5%:
// the canaries are wave 1, and its first failure halts the one rollout
// they share. migrate --all exits 1 naming the rollout, the version and the
// failing tenant; GET /admin/rollouts of every serve shows it HALTED; the
// halt is logged once, at ERROR, by whichever process halted it; the 21
// tenants of wave 2 were never attempted (no job, no history row since
// the release, version 1 in goose_db_version and in the control plane), and
// no job of the rollout is left live (RELIABILITY.md, guarantee 12).
func TestRolloutHaltSeenByAllProcesses(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "rh", 2, 12)
	cp := newPool(t, cpURL)
	canaries := []fleettest.SchemaTenant{tenants[0], tenants[7], tenants[13]}
	badCanary := tenants[7]
	labelTenants(t, cpURL, canaries, "canary", "yes")
	var later []fleettest.SchemaTenant
	for _, tn := range tenants {
		if !slices.Contains(canaries, tn) {
			later = append(later, tn)
		}
	}

	// The fleet at version 1, then the bad data.
	v1 := startCommand(t, "migrate v1", serveEnv(cpURL, writeMigrations(t, haltV1...), "full_fleet"),
		"migrate", "--all", "--progress", "none")
	require.Zero(t, v1.wait(t, 60*time.Second), "migrate --all to version 1:\n%s", v1.out.String())
	waitAllLatest(t, cp, tenants, 1, 10*time.Second)
	fleettest.ForEachTenant(t, []fleettest.SchemaTenant{badCanary, tenants[4], tenants[20]}, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
		_, err := conn.Exec(t.Context(), "INSERT INTO "+pgx.Identifier{tn.Schema, "accounts"}.Sanitize()+" (name) VALUES ('bad')")
		require.NoError(t, err)
	})
	var lastRun int64
	require.NoError(t, cp.QueryRow(t.Context(), "SELECT coalesce(max(id), 0) FROM tenantmigrate.runs").Scan(&lastRun))

	// The broken release: three serve processes and a migrate --all at once.
	env := serveEnv(cpURL, writeMigrations(t, haltV2...), "full_fleet",
		"CANARY_SELECTOR=canary=yes", "WAVES=100%", "HALT_FAILURE_RATE=5%", "WORKERS=2", "RETRY_BACKOFF=100ms")
	servers := make([]*server, 3)
	for i := range servers {
		servers[i] = startServer(t, fmt.Sprintf("serve-%d", i), env)
	}
	batch := startCommand(t, "migrate --all", env, "migrate", "--all", "--concurrency", "2", "--progress", "none")
	for _, s := range servers {
		s.waitListening(t)
	}
	require.Equal(t, 1, batch.wait(t, 60*time.Second), "exit code of migrate --all:\n%s", batch.out.String())

	// Every serve shows the rollout HALTED by the canary's failure, the
	// second wave untouched.
	var halted rolloutJSON
	for _, s := range servers {
		var list struct {
			Rollouts []rolloutJSON `json:"rollouts"`
		}
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/rollouts", "", &list))
		require.NotEmpty(t, list.Rollouts, "rollouts of %s", s.name)
		r := list.Rollouts[0]
		require.Equal(t, int64(2), r.TargetVersion, "newest rollout of %s", s.name)
		require.Equal(t, "HALTED", r.State, "rollout %d as %s shows it", r.ID, s.name)
		halted = r
	}
	require.Equal(t, int64(len(tenants)), halted.Total)
	require.Equal(t, int64(1), halted.Failed, "failed tenants of the halted rollout")
	require.Len(t, halted.Waves, 2, "the canaries, then the rest")
	require.Equal(t, int64(len(canaries)), halted.Waves[0].Size)
	require.Equal(t, int64(len(later)), halted.Waves[1].Size)
	require.Equal(t, int64(len(later)), halted.Waves[1].Pending, "tenants of wave 2 pending")
	require.Zero(t, halted.Waves[1].Completed+halted.Waves[1].Failed, "tenants of wave 2 run")
	require.Len(t, halted.FirstErrors, 1)
	require.Equal(t, badCanary.ID, halted.FirstErrors[0].TenantID)
	require.NotNil(t, halted.FirstErrors[0].FailedVersion)
	require.Equal(t, int64(2), *halted.FirstErrors[0].FailedVersion)
	require.Contains(t, halted.FirstErrors[0].Error, "bad data in accounts")

	// migrate --all named the rollout, the failing version and the error.
	out := batch.out.String()
	require.Contains(t, out, fmt.Sprintf("rollout %d to version 2 halted", halted.ID))
	require.Contains(t, out, badCanary.ID+" (version 2)")
	require.Contains(t, out, "bad data in accounts")

	// The halt logged once, at ERROR, by the process that halted it.
	processNames := []string{batch.name}
	for _, s := range servers {
		processNames = append(processNames, s.name)
	}
	var haltedBy string
	logs := func() []string {
		all := []string{batch.out.String()}
		for _, s := range servers {
			all = append(all, s.logs.String())
		}
		var lines []string
		for i, a := range all {
			for _, l := range strings.Split(a, "\n") {
				var rec struct {
					Level string `json:"level"`
					Msg   string `json:"msg"`
				}
				if json.Unmarshal([]byte(l), &rec) == nil && strings.HasPrefix(rec.Msg, "rollout halted") {
					lines = append(lines, rec.Level)
					haltedBy = processNames[i]
				}
			}
		}
		return lines
	}
	waitFor(t, 10*time.Second, "the halt logged", func() bool { return len(logs()) > 0 })

	// No job of the rollout left live: running ones finished, queued ones
	// cancelled or skipped. Only canaries ever had a job.
	waitFor(t, 30*time.Second, "no live migrate_tenant job", func() bool {
		var live int
		require.NoError(t, cp.QueryRow(t.Context(), `
			SELECT count(*) FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND state NOT IN ('completed', 'cancelled', 'discarded')`).Scan(&live))
		return live == 0
	})
	for id := range fleettest.JobsPerTenant(t, cp) {
		require.Contains(t, fleettest.IDs(canaries), id, "a job for %s, not a canary", id)
	}

	// The tenants of wave 2 were never attempted: no history row since the
	// release, version 1 in their database and in the control plane.
	runsSince := fleettest.Counts(t, cp, `
		SELECT tenant_id, count(*)::int FROM tenantmigrate.runs WHERE id > $1 GROUP BY 1`, lastRun)
	states := controlPlaneTenants(t, cp)
	contents := readTenants(t, tenants)
	for _, tn := range later {
		require.Zero(t, runsSince[tn.ID], "history rows of %s since the release", tn.ID)
		require.Equal(t, int64(1), contents[tn.ID].maxVersion, "goose_db_version of %s", tn.ID)
		require.Equal(t, "1/COMPLETED", states[tn.ID].String(), "control plane row of %s", tn.ID)
	}
	// The bad canary ran and failed for good; the others ran at most once
	// each, and are at version 1 or 2 as they ran.
	require.Equal(t, "1/FAILED_STALE", states[badCanary.ID].String(), "control plane row of %s", badCanary.ID)
	require.Equal(t, int64(1), contents[badCanary.ID].maxVersion)
	for _, tn := range canaries {
		require.LessOrEqual(t, runsSince[tn.ID], 1, "history rows of %s since the release", tn.ID)
	}
	requireControlPlaneTruthful(t, cp, tenants)

	// The CLI's history of a wave-2 tenant holding the bad data: only its
	// run to version 1.
	hist := startCommand(t, "history", env, "history", tenants[20].ID, "--json")
	require.Zero(t, hist.wait(t, 30*time.Second), "history:\n%s", hist.out.String())
	var runs []struct {
		ToVersion *int64 `json:"toVersion"`
		Result    string `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(hist.out.String()), &runs), "history --json:\n%s", hist.out.String())
	require.Len(t, runs, 1, "runs of %s", tenants[20].ID)
	require.Equal(t, "completed", runs[0].Result)
	require.NotNil(t, runs[0].ToVersion)
	require.Equal(t, int64(1), *runs[0].ToVersion)

	require.Equal(t, []string{"ERROR"}, logs(), "levels of the halt's log lines")
	t.Logf("rollout %d halted by %s (%s); canary runs %v; migrate --all said:\n%s", halted.ID, haltedBy, halted.HaltReason,
		map[string]int{canaries[0].ID: runsSince[canaries[0].ID], canaries[1].ID: runsSince[canaries[1].ID], canaries[2].ID: runsSince[canaries[2].ID]},
		strings.TrimSpace(out))
	for _, s := range servers {
		require.Zero(t, s.stop(t, 30*time.Second), "exit code of %s after SIGTERM", s.name)
	}
}
