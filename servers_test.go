package tenantmigrate_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// tenantClusters starts n PostgreSQL clusters of the test's own, each with
// one database "fleet", and returns them.
func tenantClusters(t *testing.T, n int) []*pgserver.Server {
	t.Helper()
	out := make([]*pgserver.Server, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = pgtest.NewServer(t, nil) })
	}
	wg.Wait()
	for _, s := range out {
		conn, err := pgx.Connect(t.Context(), s.URL("postgres"))
		require.NoError(t, err)
		_, err = conn.Exec(t.Context(), "CREATE DATABASE fleet")
		require.NoError(t, err)
		require.NoError(t, conn.Close(t.Context()))
	}
	return out
}

// addClusterTenants registers perServer schema tenants on each cluster,
// named prefix-S-NN.
func addClusterTenants(t *testing.T, o *tenantmigrate.Orchestrator, prefix string, clusters []*pgserver.Server, perServer int) []fleettest.SchemaTenant {
	t.Helper()
	var out []fleettest.SchemaTenant
	for si, s := range clusters {
		for i := range perServer {
			out = append(out, addTenantAt(t, o, fmt.Sprintf("%s-%d-%02d", prefix, si, i), s.URL("fleet"), fmt.Sprintf("s%d_%02d", si, i)))
		}
	}
	return out
}

// peakSampler samples, on each cluster, how many sessions run a migration
// (a pg_sleep of the slow migration) at once, and keeps the peak.
type peakSampler struct {
	mu    sync.Mutex
	peaks map[int]int
	stop  chan struct{}
	done  sync.WaitGroup
}

func samplePeaks(t *testing.T, clusters []*pgserver.Server) *peakSampler {
	t.Helper()
	p := &peakSampler{peaks: map[int]int{}, stop: make(chan struct{})}
	for i, s := range clusters {
		pool, err := pgxpool.New(t.Context(), s.URL("postgres"))
		require.NoError(t, err)
		p.done.Go(func() {
			defer pool.Close()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-tick.C:
				}
				var n int
				if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
					WHERE datname = 'fleet' AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
					continue // the cluster is stopped in the outage test
				}
				p.mu.Lock()
				p.peaks[i] = max(p.peaks[i], n)
				p.mu.Unlock()
			}
		})
	}
	t.Cleanup(p.end)
	return p
}

func (p *peakSampler) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.done.Wait()
}

func (p *peakSampler) result() map[int]int {
	p.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peaks
}

// TestMaxPerServerAcrossInstances: three instances of 4 workers each (12
// workers) migrate 3 servers × 8 tenants with a cap of 2: no server ever
// runs more than 2 migrations at once (sampled from pg_stat_activity), each
// reaches 2, every tenant completes with one attempt used, and a server
// override of 1 holds for one of them.
func TestMaxPerServerAcrossInstances(t *testing.T) {
	t.Parallel()
	clusters := tenantClusters(t, 3)
	cp := pgtest.NewDatabase(t)
	migs := fleettest.Migrations(
		"CREATE TABLE accounts (id bigserial PRIMARY KEY); SELECT pg_sleep(0.3);",
		"ALTER TABLE accounts ADD COLUMN plan text; SELECT pg_sleep(0.1);",
	)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: migs})
	tenants := addClusterTenants(t, admin, "cap", clusters, 8)
	one := 1
	override := tenantmigrate.ServerOf(clusters[2].URL("fleet"), nil)
	require.NoError(t, admin.SetServerMaxConcurrent(t.Context(), override, &one))

	peaks := samplePeaks(t, clusters)
	for range 3 {
		startOrchestrator(t, tenantmigrate.Config{
			DatabaseURL: cp, Migrations: migs, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
			Queue:   tenantmigrate.QueueConfig{Workers: 4},
			Servers: tenantmigrate.ServersConfig{MaxPerServer: 2},
		})
	}
	waitAllLatest(t, admin, tenants, 90*time.Second)
	got := peaks.result()
	require.Equal(t, map[int]int{0: 2, 1: 2, 2: 1}, got, "peak migrations at once per server")
	fleettest.RequireAppliedOnce(t, tenants, 1, 2)

	// No job used more than one attempt: waiting for a slot is a snooze.
	rows, err := admin.Pool().Query(t.Context(), `SELECT max(attempt), count(*) FILTER (WHERE (metadata->>'snoozes')::int > 0)
		FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant'`)
	require.NoError(t, err)
	var maxAttempt, snoozed int
	for rows.Next() {
		require.NoError(t, rows.Scan(&maxAttempt, &snoozed))
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 1, maxAttempt)
	require.Positive(t, snoozed, "some jobs found their server full")

	list, err := admin.ListServers(t.Context())
	require.NoError(t, err)
	require.Len(t, list, 3)
	for _, s := range list {
		require.Equal(t, tenantmigrate.ServerUp, s.State)
		require.Equal(t, 8, s.Tenants)
		require.Zero(t, s.Running)
		require.Zero(t, s.Waiting)
		require.Equal(t, map[bool]int{true: 1, false: 2}[s.Server == override], s.MaxConcurrent)
	}
}

// TestServerOutageFailsNoTenant: a server stopped before the fleet run
// turns DOWN; its tenants wait (no attempt used, never FAILED_STALE) while
// the other servers' tenants complete; once it is started again, with no
// command, the probe finds it UP and its tenants complete.
func TestServerOutageFailsNoTenant(t *testing.T) {
	t.Parallel()
	clusters := tenantClusters(t, 2)
	cp := pgtest.NewDatabase(t)
	admin := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	logStatuses(t, admin.Pool())
	tenants := addClusterTenants(t, admin, "out", clusters, 4)
	down := tenantmigrate.ServerOf(clusters[1].URL("fleet"), nil)
	require.NoError(t, clusters[1].Stop(t.Context()))

	o := startOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cp, Migrations: fleetMigrations(), Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
		Queue:   tenantmigrate.QueueConfig{MaxAttempts: 2, RetryBackoff: 50 * time.Millisecond},
		Servers: tenantmigrate.ServersConfig{ProbeInterval: 500 * time.Millisecond},
	})
	waitAllLatest(t, o, tenants[:4], 60*time.Second)
	waitFor(t, 60*time.Second, "server DOWN", func() bool {
		list, err := o.ListServers(t.Context())
		require.NoError(t, err)
		for _, s := range list {
			if s.Server == down {
				return s.State == tenantmigrate.ServerDown && s.LastError != "" && s.Waiting == 4
			}
		}
		return false
	})
	// Well past MaxAttempts' worth of retries: still no failure recorded.
	waitFor(t, 30*time.Second, "several probes", func() bool {
		var snoozes int
		require.NoError(t, o.Pool().QueryRow(t.Context(), `SELECT coalesce(max((metadata->>'snoozes')::int), 0)
			FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant'`).Scan(&snoozes))
		return snoozes >= 4
	})
	for _, tn := range tenants[4:] {
		require.Empty(t, statusHistory(t, admin.Pool(), tn.ID), "tenant %s of the DOWN server", tn.ID)
	}

	require.NoError(t, clusters[1].Restart(t.Context()))
	waitAllLatest(t, o, tenants, 60*time.Second)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	var maxAttempt int
	require.NoError(t, o.Pool().QueryRow(t.Context(),
		`SELECT max(attempt) FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant'`).Scan(&maxAttempt))
	require.Equal(t, 1, maxAttempt)
	for _, tn := range tenants {
		require.Equal(t, []string{"COMPLETED"}, statusHistory(t, admin.Pool(), tn.ID), tn.ID)
	}
	list, err := o.ListServers(t.Context())
	require.NoError(t, err)
	for _, s := range list {
		require.Equal(t, tenantmigrate.ServerUp, s.State, s.Server)
	}
}

// TestMigrateTenantsGivesUpDownServer: MigrateTenants (migrate --all) waits
// Servers.DownTimeout for a DOWN server's tenants, then reports them with a
// *ServerDownError naming the server, recording nothing for them.
func TestMigrateTenantsGivesUpDownServer(t *testing.T) {
	t.Parallel()
	cp := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations(),
		Servers: tenantmigrate.ServersConfig{ProbeInterval: 200 * time.Millisecond, DownTimeout: 3 * time.Second}})
	good := addSchemaTenants(t, o, "ok", 1, 2)
	dead := closedPortURL(t)
	lost := []fleettest.SchemaTenant{addTenantAt(t, o, "lost-a", dead, "a"), addTenantAt(t, o, "lost-b", dead, "b")}

	var mu sync.Mutex
	errs := map[string]error{}
	res, err := o.MigrateTenants(t.Context(), tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{
		OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressDone {
				mu.Lock()
				errs[p.TenantID] = p.Err
				mu.Unlock()
			}
		},
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Completed)
	require.Equal(t, int64(2), res.Failed)
	server := tenantmigrate.ServerOf(dead, nil)
	for _, tn := range lost {
		var de *tenantmigrate.ServerDownError
		require.ErrorAs(t, errs[tn.ID], &de, tn.ID)
		require.Equal(t, server, de.Server)
		require.ErrorIs(t, errs[tn.ID], tenantmigrate.ErrServerDown)
		require.Contains(t, errs[tn.ID].Error(), server)
		st, err := o.TenantState(t.Context(), tn.ID)
		require.NoError(t, err)
		require.Empty(t, st.MigrationsStatus, "nothing recorded for a tenant of a DOWN server")
	}
	waitAllLatest(t, o, good, time.Second)
}

// BenchmarkServerCapUtilization measures how busy a per-server cap keeps
// the servers: 3 servers × 12 schema tenants, a cap of 2, three instances
// of 4 workers (12 workers), one migration per tenant that sleeps 0.5 s
// (or 2 s: the same fleet with migrations whose fixed cost weighs less).
// It reports utilization = ideal / wall, the ideal being the sum of the
// per-tenant times / (servers × cap): 1 means every server ran 2
// migrations at every moment of the wall time, from the start of the
// instances to the last tenant recorded COMPLETED.
//
// A tenant's time is counted two ways:
//   - utilization: the run's whole time on its server, connect to close
//     (RunEvent.Duration), the time its slot admits it for;
//   - utilization_statements: the migration's statements only, from its
//     transaction's start to its last statement, as the migration itself
//     records them in the tenant (now() and clock_timestamp()).
//
// utilization_from_first_run leaves out the start of the instances
// (connecting, River's start, the fleet scan) before the first run.
//
// The rollout the fleet scan starts runs in one wave ("100%"): the
// default's first wave is a canary of 1 tenant that must pass before any
// other tenant starts, the rollout's own wait, not the cap's. The variant
// "default_waves" keeps it, to show what it costs such a short fleet run.
//
//	go test -run '^$' -bench BenchmarkServerCapUtilization -benchtime 1x .
func BenchmarkServerCapUtilization(b *testing.B) {
	for _, c := range []struct {
		name  string
		sleep string
		waves string
	}{
		{"migration=0.5s", "0.5", "100%"},
		{"migration=2s", "2", "100%"},
		{"migration=0.5s,default_waves", "0.5", ""},
	} {
		b.Run(c.name, func(b *testing.B) { benchServerCap(b, c.sleep, c.waves) })
	}
}

func benchServerCap(b *testing.B, sleep, waves string) {
	const servers, perServer, maxPerServer = 3, 12, 2
	for range b.N {
		b.StopTimer()
		clusters := benchClusters(b, servers)
		cp := pgtest.NewDatabase(b)
		migs := fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY); SELECT pg_sleep(" + sleep + ");" +
			" CREATE TABLE bench_timing AS SELECT now() AS began, clock_timestamp() AS ended;")
		admin, err := tenantmigrate.New(b.Context(), tenantmigrate.Config{DatabaseURL: cp, Migrations: migs, EncryptionKey: bgKey})
		require.NoError(b, err)
		var ids []string
		for si, s := range clusters {
			for i := range perServer {
				id := fmt.Sprintf("bench-%d-%02d", si, i)
				_, err := admin.CreateTenant(b.Context(), tenantmigrate.Tenant{ID: id, DatabaseURL: s.URL("fleet"), Schema: fmt.Sprintf("s%d_%02d", si, i)})
				require.NoError(b, err)
				ids = append(ids, id)
			}
		}
		var mu sync.Mutex
		var sum time.Duration
		var first time.Time
		hooks := tenantmigrate.Hooks{OnRun: func(_ context.Context, e tenantmigrate.RunEvent) {
			mu.Lock()
			sum += e.Duration
			if began := time.Now().Add(-e.Duration); first.IsZero() || began.Before(first) {
				first = began
			}
			mu.Unlock()
		}}
		b.StartTimer()
		start := time.Now()
		var orchs []*tenantmigrate.Orchestrator
		for range 3 {
			o, err := tenantmigrate.New(b.Context(), tenantmigrate.Config{
				DatabaseURL: cp, Migrations: migs, EncryptionKey: bgKey, Strategy: tenantmigrate.StrategyFullFleet, RunWorkers: true,
				Queue: tenantmigrate.QueueConfig{Workers: 4}, Servers: tenantmigrate.ServersConfig{MaxPerServer: maxPerServer}, Hooks: hooks,
				Rollout: tenantmigrate.RolloutConfig{Waves: waves},
			})
			require.NoError(b, err)
			require.NoError(b, o.Start(b.Context()))
			orchs = append(orchs, o)
		}
		fleettest.WaitAllCompleted(b, admin.Pool(), ids, admin.Latest(), 10*time.Millisecond, 5*time.Minute)
		wall, fromFirst := time.Since(start), time.Since(first)
		b.StopTimer()
		for _, o := range orchs {
			o.Close()
		}
		admin.Close()
		slots := time.Duration(servers * maxPerServer)
		ideal := sum / slots
		statements := benchStatementTime(b, clusters, perServer) / slots
		b.ReportMetric(ideal.Seconds()/wall.Seconds(), "utilization")
		b.ReportMetric(ideal.Seconds()/fromFirst.Seconds(), "utilization_from_first_run")
		b.ReportMetric(statements.Seconds()/wall.Seconds(), "utilization_statements")
		b.ReportMetric(wall.Seconds(), "wall_s")
		b.ReportMetric(ideal.Seconds(), "ideal_s")
		b.ReportMetric(statements.Seconds(), "ideal_statements_s")
	}
}

// benchStatementTime sums the time the benchmark's migration took in each
// tenant schema sNN_MM, from its transaction's start to its last statement,
// as it recorded it in bench_timing.
func benchStatementTime(b *testing.B, clusters []*pgserver.Server, perServer int) time.Duration {
	b.Helper()
	var sum time.Duration
	for si, s := range clusters {
		conn, err := pgx.Connect(b.Context(), s.URL("fleet"))
		require.NoError(b, err)
		for i := range perServer {
			var d time.Duration
			require.NoError(b, conn.QueryRow(b.Context(),
				fmt.Sprintf(`SELECT ended - began FROM s%d_%02d.bench_timing`, si, i)).Scan(&d))
			sum += d
		}
		require.NoError(b, conn.Close(b.Context()))
	}
	return sum
}

func benchClusters(b *testing.B, n int) []*pgserver.Server {
	b.Helper()
	out := make([]*pgserver.Server, n)
	for i := range n {
		out[i] = pgtest.NewServer(b, nil)
		conn, err := pgx.Connect(b.Context(), out[i].URL("postgres"))
		require.NoError(b, err)
		_, err = conn.Exec(b.Context(), "CREATE DATABASE fleet")
		require.NoError(b, err)
		require.NoError(b, conn.Close(b.Context()))
	}
	return out
}
