package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// tenantClusters starts n PostgreSQL clusters of the test's own, at once,
// each with one database "fleet", and returns them.
func tenantClusters(t *testing.T, n int) []*pgserver.Server {
	t.Helper()
	out := make([]*pgserver.Server, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = pgtest.NewServer(t, nil) })
	}
	wg.Wait()
	for _, s := range out {
		require.NotNil(t, s, "a tenant cluster did not start")
		conn, err := pgx.Connect(t.Context(), s.URL("postgres"))
		require.NoError(t, err)
		_, err = conn.Exec(t.Context(), "CREATE DATABASE fleet")
		require.NoError(t, err)
		require.NoError(t, conn.Close(t.Context()))
	}
	return out
}

// registerClusterTenants registers perServer schema tenants in the "fleet"
// database of each cluster, named prefix-S-NN with schema sS_NN, through
// the library (which also creates the control plane's schema).
func registerClusterTenants(t *testing.T, controlPlane, prefix string, clusters []*pgserver.Server, perServer int) []fleettest.SchemaTenant {
	t.Helper()
	o, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: controlPlane, EncryptionKey: encryptionKey, ReadOnly: true})
	require.NoError(t, err)
	defer o.Close()
	var out []fleettest.SchemaTenant
	for si, s := range clusters {
		for i := range perServer {
			tn := fleettest.SchemaTenant{ID: fmt.Sprintf("%s-%d-%02d", prefix, si, i), URL: s.URL("fleet"), Schema: fmt.Sprintf("s%d_%02d", si, i)}
			_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: tn.ID, DatabaseURL: tn.URL, Schema: tn.Schema})
			require.NoError(t, err)
			out = append(out, tn)
		}
	}
	return out
}

// migrationPeaks samples, every 5 ms on each cluster, how many migration
// sessions (application_name "tenantmigrate", the migrator's) run the
// pg_sleep statement of a migration at once, and keeps the peak per
// cluster. A sample that fails is an error of the test: no cluster is
// stopped here.
type migrationPeaks struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	peaks   []int
	samples []int
	err     error
}

func sampleMigrationPeaks(t *testing.T, clusters []*pgserver.Server) *migrationPeaks {
	t.Helper()
	p := &migrationPeaks{stop: make(chan struct{}), peaks: make([]int, len(clusters)), samples: make([]int, len(clusters))}
	for i, s := range clusters {
		pool := newPool(t, s.URL("postgres"))
		p.wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				var n int
				err := pool.QueryRow(context.Background(), `
					SELECT count(*) FROM pg_stat_activity
					WHERE datname = 'fleet' AND application_name = 'tenantmigrate' AND state = 'active'
					  AND query LIKE '%pg_sleep(%' AND pid <> pg_backend_pid()`).Scan(&n)
				p.mu.Lock()
				if err != nil {
					p.err = fmt.Errorf("sample cluster %d: %w", i, err)
					p.mu.Unlock()
					return
				}
				p.peaks[i] = max(p.peaks[i], n)
				p.samples[i]++
				p.mu.Unlock()
				select {
				case <-p.stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(p.end)
	return p
}

func (p *migrationPeaks) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// result stops sampling and returns the peaks and sample counts per cluster.
func (p *migrationPeaks) result(t *testing.T) (peaks, samples []int) {
	t.Helper()
	p.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NoError(t, p.err)
	return p.peaks, p.samples
}

// TestServeMaxPerServerThreeProcesses: three real serve processes
// (--workers 4 --max-per-server 2, full_fleet: 12 workers) migrate 3
// PostgreSQL clusters × 8 tenants whose migration sleeps 0.5 s. Sampled
// from each cluster's pg_stat_activity, no server ever runs more than 2
// migrations at once, and each reaches 2: the cap holds across the
// processes, not per process (without it up to 8 would run on one server).
// No tenant starves: all 24 end COMPLETED with their table, every job used
// one attempt (waiting for a full server is no attempt), some jobs did
// wait, every process ran tenants, and GET /admin/servers lists the three
// servers idle with their cap (RELIABILITY.md, guarantee 3).
func TestServeMaxPerServerThreeProcesses(t *testing.T) {
	t.Parallel()
	clusters := tenantClusters(t, 3)
	cpURL := pgtest.NewDatabase(t)
	// The control plane's schema, and no tenant yet: the processes start
	// with nothing to do, so that all three work the fleet from its first
	// job.
	registerClusterTenants(t, cpURL, "none", nil, 0)
	cp := newPool(t, cpURL)
	migrations := writeMigrations(t, "CREATE TABLE accounts (id bigserial PRIMARY KEY);\nSELECT pg_sleep(0.5);")

	env := serveEnv(cpURL, migrations, "full_fleet")
	servers := make([]*server, 3)
	for i := range servers {
		servers[i] = startServer(t, fmt.Sprintf("serve-%d", i), env, "--workers", "4", "--max-per-server", "2")
	}
	for _, s := range servers {
		s.waitListening(t)
	}

	tenants := registerClusterTenants(t, cpURL, "cap", clusters, 8)
	peaks := sampleMigrationPeaks(t, clusters)
	started := time.Now()
	var sched struct {
		Scheduled int `json:"scheduled"`
	}
	require.Equal(t, http.StatusAccepted, servers[0].admin(t, http.MethodPost, "/admin/migrations/fleet", "", &sched))
	waitAllLatest(t, cp, tenants, 1, 60*time.Second)
	took := time.Since(started)
	got, samples := peaks.result(t)
	t.Logf("24 tenants COMPLETED in %s; peak migrations at once per server %v (%v samples)", took.Round(100*time.Millisecond), got, samples)
	require.Equal(t, []int{2, 2, 2}, got, "peak migrations at once per server (cap 2)")

	// Every tenant holds its table, applied once.
	fleettest.RequireAppliedOnce(t, tenants, 1)
	for id, c := range readTenants(t, tenants, "accounts") {
		require.True(t, c.tables["accounts"], "table accounts of tenant %s", id)
	}

	// One job per tenant, one attempt each, some of which waited for their
	// server; each process finished some.
	rows, err := cp.Query(t.Context(), `
		SELECT args->>'tenant_id', state::text, attempt, coalesce((metadata->>'snoozes')::int, 0),
		       attempted_by[cardinality(attempted_by)]
		FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant'`)
	require.NoError(t, err)
	type job struct {
		Tenant, State    string
		Attempt, Snoozes int
		LastBy           string
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[job])
	require.NoError(t, err)
	require.Len(t, jobs, len(tenants), "migrate_tenant jobs")
	waited := 0
	perProcess := map[string]int{}
	for _, j := range jobs {
		require.Equal(t, 1, j.Attempt, "job of %s: waiting for a slot used no attempt", j.Tenant)
		waited += min(j.Snoozes, 1)
		for _, s := range servers {
			if s.ownsRiverID(j.LastBy) {
				perProcess[s.name]++
			}
		}
	}
	t.Logf("%d of %d jobs waited for their server; tenants run per process %v", waited, len(jobs), perProcess)
	require.Positive(t, waited, "no job found its server full")
	for _, s := range servers {
		require.Positive(t, perProcess[s.name], "%s ran no tenant", s.name)
	}

	// The servers as the admin API shows them: each UP, 8 tenants, cap 2,
	// nothing running or waiting once the jobs have ended.
	waitFor(t, 30*time.Second, "three idle servers in GET /admin/servers", func() bool {
		var list struct {
			Servers []struct {
				Server        string `json:"server"`
				State         string `json:"state"`
				Running       int    `json:"running"`
				Waiting       int    `json:"waiting"`
				Tenants       int    `json:"tenants"`
				MaxConcurrent int    `json:"maxConcurrent"`
			} `json:"servers"`
		}
		require.Equal(t, http.StatusOK, servers[1].admin(t, http.MethodGet, "/admin/servers", "", &list))
		require.Len(t, list.Servers, 3)
		for _, sv := range list.Servers {
			require.Equal(t, "UP", sv.State, "server %s", sv.Server)
			require.Equal(t, 8, sv.Tenants, "server %s", sv.Server)
			require.Equal(t, 2, sv.MaxConcurrent, "server %s", sv.Server)
			if sv.Running != 0 || sv.Waiting != 0 {
				return false
			}
		}
		return true
	})
	for _, s := range servers {
		waitNoneRemaining(t, s, 1)
	}
}
