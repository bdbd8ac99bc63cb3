package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// fleetMigrations are three migrations none of which can run twice in one
// schema. slowV2 makes version 2 sleep, so that runs take long enough to be
// interrupted.
func fleetMigrations(t *testing.T, slowV2 bool) string {
	t.Helper()
	v2 := "ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';"
	if slowV2 {
		v2 = "SELECT pg_sleep(0.3);\n" + v2
	}
	return writeMigrations(t,
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		v2,
		"CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));",
	)
}

// startFleet starts n serve processes, each with its own environment (its
// own WORKERS), and waits until all listen.
func startFleet(t *testing.T, n int, env []string) []*server {
	t.Helper()
	servers := make([]*server, n)
	for i := range servers {
		own := append(append([]string{}, env...), fmt.Sprintf("WORKERS=%d", 3+i%2))
		servers[i] = startServer(t, fmt.Sprintf("serve-%d", i), own)
	}
	for _, s := range servers {
		s.waitListening(t)
	}
	return servers
}

// TestServeFullFleetThreeProcesses: three serve processes started together
// on one control plane with 102 tenants scan the fleet once and migrate
// every tenant once; the admin API of each reports nothing remaining, and
// each stops cleanly on SIGTERM.
func TestServeFullFleetThreeProcesses(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "ff", 3, 34)
	cp := newPool(t, cpURL)

	servers := startFleet(t, 3, serveEnv(cpURL, fleetMigrations(t, false), "full_fleet"))

	waitAllLatest(t, cp, tenants, 3, 90*time.Second)
	for _, s := range servers {
		waitNoneRemaining(t, s, 3)
	}

	// One scan per 10-minute window (the default rescan interval, the
	// scans' unique period): a run that straddles a window's start (CI once
	// started at 00:29:58) has one in each, the second finding nothing.
	var scans, windows int
	require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT floor(extract(epoch FROM created_at) / 600))
		FROM tenantmigrate.river_job WHERE kind = 'fleet_scan'`).Scan(&scans, &windows))
	require.Equal(t, windows, scans, "fleet_scan jobs: one per window")
	require.LessOrEqual(t, scans, 2, "fleet_scan jobs")
	perTenant := fleettest.JobsPerTenant(t, cp)
	require.Len(t, perTenant, len(tenants))
	for _, tn := range tenants {
		require.Equal(t, 1, perTenant[tn.ID], "migrate_tenant jobs of %s", tn.ID)
	}
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)

	for _, s := range servers {
		require.Zero(t, s.stop(t, 30*time.Second), "exit code of %s after SIGTERM", s.name)
	}
}

// TestServeKill9DuringMigration: one of three serve processes is killed
// with SIGKILL while it runs migrations. Its heartbeats stop, and after the
// instance timeout (the default, 15 s) a survivor gives its jobs back to the
// queue, using no attempt; the survivors run them once the tenants'
// migration locks are free (the killed process's sessions are gone), and
// every tenant ends at the latest version with each migration applied once,
// without anyone stepping in. The process killed is River's leader, so the
// rescue must not wait for River's leadership either. The test logs how long
// after the kill each interrupted tenant was running elsewhere
// (RELIABILITY.md, guarantee 1).
func TestServeKill9DuringMigration(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "k9", 2, 30)
	cp := newPool(t, cpURL)

	servers := startFleet(t, 3, serveEnv(cpURL, fleetMigrations(t, true), "full_fleet", "RETRY_BACKOFF=100ms"))

	// Find the leader among the processes.
	var leaderID string
	waitFor(t, 30*time.Second, "a River leader", func() bool {
		err := cp.QueryRow(t.Context(), "SELECT leader_id FROM tenantmigrate.river_leader").Scan(&leaderID)
		return err == nil
	})
	var victim *server
	var survivors []*server
	for _, s := range servers {
		if s.ownsRiverID(leaderID) {
			victim = s
		} else {
			survivors = append(survivors, s)
		}
	}
	require.NotNil(t, victim, "leader %s is none of the processes", leaderID)

	// Kill it while it runs migrations.
	const runningOnVictim = `
		SELECT args->>'tenant_id' FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND state = 'running' AND attempted_by[cardinality(attempted_by)] = $1
		ORDER BY 1`
	waitFor(t, 30*time.Second, "migrations running on the leader", func() bool {
		var id string
		return cp.QueryRow(t.Context(), runningOnVictim, leaderID).Scan(&id) == nil
	})
	victim.kill9(t)
	killedAt := time.Now()
	rows, err := cp.Query(t.Context(), runningOnVictim, leaderID)
	require.NoError(t, err)
	interrupted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, interrupted, "the kill interrupted no job")

	// Each interrupted tenant running (or done) on a survivor.
	var slowest time.Duration
	for _, id := range interrupted {
		waitFor(t, 60*time.Second, "tenant "+id+" running elsewhere", func() bool {
			var elsewhere bool
			require.NoError(t, cp.QueryRow(t.Context(), `
				SELECT attempted_by[cardinality(attempted_by)] <> $2 AND state IN ('running', 'completed')
				FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1`,
				id, leaderID).Scan(&elsewhere))
			return elsewhere
		})
		slowest = max(slowest, time.Since(killedAt))
	}
	t.Logf("%d jobs interrupted; all running elsewhere %s after the kill", len(interrupted), slowest.Round(100*time.Millisecond))

	waitAllLatest(t, cp, tenants, 3, 90*time.Second)
	t.Logf("all tenants at latest %s after the kill", time.Since(killedAt).Round(time.Second))
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	for _, s := range survivors {
		waitNoneRemaining(t, s, 3) // River records the jobs' ends after the tenants'
	}
	rescued := 0
	for _, id := range interrupted {
		var j struct {
			State    string
			Attempt  int
			Errors   int
			Rescues  *int
			Snoozes  int
			ByVictim bool
			LastBy   string
		}
		require.NoError(t, cp.QueryRow(t.Context(), `
			SELECT state::text, attempt, coalesce(cardinality(errors), 0), (metadata->>'tenantmigrate_rescues')::int,
			       coalesce((metadata->>'snoozes')::int, 0), $2 = ANY(attempted_by), attempted_by[cardinality(attempted_by)]
			FROM tenantmigrate.river_job
			WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1`, id, leaderID).Scan(&j.State, &j.Attempt, &j.Errors, &j.Rescues, &j.Snoozes, &j.ByVictim, &j.LastBy))
		require.Equal(t, "completed", j.State, "job of %s", id)
		require.Equal(t, 1, j.Attempt, "job of %s: the rescue used no attempt", id)
		require.Zero(t, j.Errors, "job of %s", id)
		if j.Rescues == nil {
			// The victim put it back itself (its server was full) in a
			// commit its backend finished after the kill, when the list
			// above was read: nothing was left to rescue.
			require.Positive(t, j.Snoozes, "job of %s: neither rescued nor put back", id)
			t.Logf("job of %s was put back by the victim as it died, not rescued", id)
			continue
		}
		rescued++
		require.Equal(t, 1, *j.Rescues, "job of %s", id)
		// Fetched by the victim, then finished by a survivor (a job that
		// found its server full was fetched more than once: each snooze
		// puts it back).
		require.True(t, j.ByVictim, "job of %s: run by the victim", id)
		require.NotEqual(t, leaderID, j.LastBy, "job of %s: finished by a survivor", id)
	}
	require.Positive(t, rescued, "no interrupted job was rescued")
}

// TestServeUnreachableTenantFixedThroughAdminAPI: a tenant whose database
// cannot be reached uses no attempt and is never FAILED_STALE: its server is
// DOWN in GET /admin/servers; after its URL is fixed with PATCH, it
// completes.
func TestServeUnreachableTenantFixedThroughAdminAPI(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "ok", 1, 2)
	cp := newPool(t, cpURL)

	s := startFleet(t, 1, serveEnv(cpURL, fleetMigrations(t, false), "full_fleet", "RETRY_BACKOFF=50ms"))[0]
	// Let the scan at start finish, so that it cannot queue the tenant
	// registered next a second time.
	waitFor(t, 30*time.Second, "the scan at start", func() bool {
		var done bool
		err := cp.QueryRow(t.Context(),
			"SELECT state = 'completed' FROM tenantmigrate.river_job WHERE kind = 'fleet_scan'").Scan(&done)
		return err == nil && done
	})

	// Register the unreachable tenant through the admin API of the process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "postgres://nobody@" + ln.Addr().String() + "/nowhere"
	require.NoError(t, ln.Close())
	require.Equal(t, http.StatusCreated, s.admin(t, http.MethodPost, "/admin/tenants/lost",
		fmt.Sprintf(`{"databaseUrl": %q, "schema": "lost"}`, deadURL), nil))
	var sched struct {
		Scheduled int `json:"scheduled"`
	}
	require.Equal(t, http.StatusAccepted, s.admin(t, http.MethodPost, "/admin/migrations/fleet", "", &sched))

	type state struct {
		IsLatest         bool    `json:"isLatest"`
		MigrationsStatus *string `json:"migrationsStatus"`
	}
	// Its server turns DOWN, shown by GET /admin/servers; the job waits
	// using no attempt, and the tenant is never FAILED_STALE.
	deadServer := strings.TrimPrefix(strings.SplitN(deadURL, "/", 4)[2], "nobody@")
	waitFor(t, 60*time.Second, "the dead server DOWN", func() bool {
		var list struct {
			Servers []struct {
				Server    string  `json:"server"`
				State     string  `json:"state"`
				Waiting   int     `json:"waiting"`
				Tenants   int     `json:"tenants"`
				LastError *string `json:"lastError"`
			} `json:"servers"`
		}
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/servers", "", &list))
		for _, sv := range list.Servers {
			if sv.Server == deadServer {
				return sv.State == "DOWN" && sv.Waiting == 1 && sv.Tenants == 1 && sv.LastError != nil
			}
		}
		return false
	})
	var attempts int
	require.NoError(t, cp.QueryRow(t.Context(), `
		SELECT attempt FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = 'lost'`).Scan(&attempts))
	require.Zero(t, attempts)
	var st state
	require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/tenants/lost/migrations", "", &st))
	require.Nil(t, st.MigrationsStatus, "nothing recorded for a tenant of a DOWN server")
	waitAllLatest(t, cp, tenants, 3, 30*time.Second)

	// Fix the URL: another target, whose state is unknown, so even a plain
	// scan queues it.
	require.Equal(t, http.StatusOK, s.admin(t, http.MethodPatch, "/admin/tenants/lost",
		fmt.Sprintf(`{"databaseUrl": %q}`, tenants[0].URL), nil))
	require.Equal(t, http.StatusAccepted, s.admin(t, http.MethodPost, "/admin/migrations/fleet", `{}`, &sched))

	lost := fleettest.SchemaTenant{ID: "lost", URL: tenants[0].URL, Schema: "lost"}
	waitAllLatest(t, cp, []fleettest.SchemaTenant{lost}, 3, 30*time.Second)
	fleettest.RequireAppliedOnce(t, append(tenants, lost), 1, 2, 3)
	waitNoneRemaining(t, s, 3)
	require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/tenants/lost/migrations", "", &st))
	require.True(t, st.IsLatest)
}
