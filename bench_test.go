package tenantmigrate_test

// Benchmarks of the request path. They need a PostgreSQL (see internal/pgtest)
// and are run with, from the module root:
//
//	go test -run '^$' -bench . -benchmem .
//	go test -run '^$' -bench ColdStart -benchtime 1x .   # one cold start, about a minute
//
// BENCHMARKS.md records their results.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

const benchKey = "bench-encryption-key-0123456789"

// benchSmallMigrations is a two-file set, for benchmarks where the migration
// itself does not matter.
var benchSmallMigrations = fstest.MapFS{
	"00001_items.sql":      {Data: []byte("-- +goose Up\nCREATE TABLE items (id bigint PRIMARY KEY, name text);\n")},
	"00002_items_note.sql": {Data: []byte("-- +goose Up\nALTER TABLE items ADD COLUMN note text;\n")},
}

// benchOrchestrator starts an Orchestrator on a fresh control plane and waits
// until its listener is connected, so that up-to-date tenants are cached.
func benchOrchestrator(b *testing.B, cfg tenantmigrate.Config) *tenantmigrate.Orchestrator {
	b.Helper()
	ctx := context.Background()
	cfg.DatabaseURL = pgtest.NewDatabase(b)
	cfg.EncryptionKey = benchKey
	if cfg.Migrations == nil {
		cfg.Migrations = benchSmallMigrations
	}
	o, err := tenantmigrate.New(ctx, cfg)
	require.NoError(b, err)
	b.Cleanup(o.Close)
	require.NoError(b, o.Start(ctx))
	deadline := time.Now().Add(10 * time.Second)
	for !o.Listening() {
		if time.Now().After(deadline) {
			b.Fatal("the control-plane listener did not connect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return o
}

// benchUpToDateTenant registers a tenant, migrates it, and waits until
// EnsureMigrated answers it from the cache: without allocating. (The
// tenant's own RecordSuccess notifies, and that notification may drop the
// entry once after the migration.)
func benchUpToDateTenant(b *testing.B, o *tenantmigrate.Orchestrator, id string) {
	b.Helper()
	ctx := context.Background()
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: pgtest.NewDatabase(b)})
	require.NoError(b, err)
	require.NoError(b, o.EnsureMigrated(ctx, id))
	deadline := time.Now().Add(10 * time.Second)
	for {
		allocs := testing.AllocsPerRun(20, func() {
			if err := o.EnsureMigrated(ctx, id); err != nil {
				b.Fatal(err)
			}
		})
		if allocs == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("EnsureMigrated of an up-to-date tenant still allocates (%.0f allocs): not cached", allocs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkEnsureMigratedUpToDate is the gate's cost for a tenant at the
// latest version: one map lookup under a read lock. Target: ≤ 200 ns/op,
// 0 allocs/op.
func BenchmarkEnsureMigratedUpToDate(b *testing.B) {
	o := benchOrchestrator(b, tenantmigrate.Config{})
	benchUpToDateTenant(b, o, "acme")
	ctx := context.Background()

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := o.EnsureMigrated(ctx, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := o.EnsureMigrated(ctx, "acme"); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the middleware rather than httptest.ResponseRecorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkMiddlewareUpToDate is Middleware for a tenant at the latest
// version: tenant id from the Host header, the gate, the context value.
func BenchmarkMiddlewareUpToDate(b *testing.B) {
	o := benchOrchestrator(b, tenantmigrate.Config{})
	benchUpToDateTenant(b, o, "acme")
	var served atomic.Int64
	h := o.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served.Add(1) }))
	req := httptest.NewRequest(http.MethodGet, "http://acme.local.dev/projects", nil)
	w := &discardWriter{h: http.Header{}}

	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
	if served.Load() == 0 {
		b.Fatal("the request never reached the handler")
	}
}

// BenchmarkGateway compares a request to an upstream made directly with the
// same request made through the gateway (httpapi with Upstream) for an
// up-to-date tenant, both over loopback HTTP/1.1 with keep-alive. The
// gateway's added latency is the difference of the two ns/op.
func BenchmarkGateway(b *testing.B) {
	o := benchOrchestrator(b, tenantmigrate.Config{})
	benchUpToDateTenant(b, o, "acme")

	body := []byte(`{"ok":true}`)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	b.Cleanup(upstream.Close)
	upstreamURL, err := url.Parse(upstream.URL)
	require.NoError(b, err)
	h, err := httpapi.NewHandler(httpapi.Config{
		Service:             o,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		Upstream:            upstreamURL,
	})
	require.NoError(b, err)
	gateway := httptest.NewServer(h)
	b.Cleanup(gateway.Close)

	run := func(b *testing.B, target string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.Cleanup(client.CloseIdleConnections)
		req, err := http.NewRequest(http.MethodGet, target+"/projects/42", nil)
		require.NoError(b, err)
		req.Host = "acme.local.dev"
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	// 16 clients at once: the proxy's connections to the upstream matter.
	runParallel := func(b *testing.B, target string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.Cleanup(client.CloseIdleConnections)
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, err := http.NewRequest(http.MethodGet, target+"/projects/42", nil)
				if err != nil {
					b.Fatal(err)
				}
				req.Host = "acme.local.dev"
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) { run(b, upstream.URL) })
	b.Run("gateway", func(b *testing.B) { run(b, gateway.URL) })
	b.Run("direct-16-clients", func(b *testing.B) { runParallel(b, upstream.URL) })
	b.Run("gateway-16-clients", func(b *testing.B) { runParallel(b, gateway.URL) })
}

// BenchmarkColdStart sends 1,000 concurrent requests for 100 tenants that
// were never migrated (10 each) through Middleware with the on_request
// strategy, using the benchmark's migration set (bench/migrations). Every
// tenant must be migrated exactly once. It reports the requests' p50 and p99
// latency and, for comparison, one tenant's migration alone. Run it with
// -benchtime 1x: one iteration takes about a minute.
func BenchmarkColdStart(b *testing.B) {
	const (
		tenants     = 100
		perTenant   = 10
		migrationFS = "bench/migrations"
	)
	if _, err := os.Stat(migrationFS); err != nil {
		b.Skipf("run from the module root: %v", err)
	}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var runs atomic.Int64
		o := benchOrchestrator(b, tenantmigrate.Config{
			Migrations: os.DirFS(migrationFS),
			// Every request is held until it is served: no 503 after the
			// server wait (go run ./bench -run coldstart measures those).
			Limits: tenantmigrate.LimitsConfig{InlineServerWait: -1},
			Hooks: tenantmigrate.Hooks{OnMigrationRun: func(tenantmigrate.Strategy, string, time.Duration) {
				runs.Add(1)
			}},
		})
		for t := range tenants + 1 {
			_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: fmt.Sprintf("cold-%03d", t), DatabaseURL: pgtest.NewDatabase(b)})
			require.NoError(b, err)
		}
		h := o.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))

		// One tenant alone, the baseline.
		soloStart := time.Now()
		require.NoError(b, o.EnsureMigrated(ctx, fmt.Sprintf("cold-%03d", tenants)))
		solo := time.Since(soloStart)
		runs.Store(0)

		// 1,000 requests at once, 10 per tenant.
		latencies := make([]time.Duration, tenants*perTenant)
		statuses := make([]int, len(latencies))
		bodies := make([]string, len(latencies))
		var ready, done sync.WaitGroup
		start := make(chan struct{})
		for r := range latencies {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://cold-%03d.local.dev/", r%tenants), nil)
				rec := httptest.NewRecorder()
				ready.Done()
				<-start
				t0 := time.Now()
				h.ServeHTTP(rec, req)
				latencies[r] = time.Since(t0)
				statuses[r] = rec.Code
				bodies[r] = rec.Body.String()
			}()
		}
		ready.Wait()
		b.StartTimer()
		close(start)
		done.Wait()
		b.StopTimer()

		failed := 0
		errs := map[string]int{}
		for r, s := range statuses {
			if s != http.StatusOK {
				failed++
				errs[fmt.Sprintf("%d %s", s, bodies[r])]++
			}
		}
		for e, n := range errs {
			b.Logf("%d requests: %s", n, e)
		}
		slices.Sort(latencies)
		pct := func(p float64) float64 {
			return latencies[int(p*float64(len(latencies)-1))].Seconds() * 1000
		}
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(latencies[len(latencies)-1].Seconds()*1000, "max-ms")
		b.ReportMetric(solo.Seconds()*1000, "solo-ms")
		b.ReportMetric(float64(runs.Load()), "runs")
		b.ReportMetric(float64(failed), "failed-requests")
		if runs.Load() != tenants || failed > 0 {
			b.Errorf("%d migration runs for %d tenants, %d of %d requests failed; want %d runs and no failure",
				runs.Load(), tenants, failed, len(statuses), tenants)
		}
	}
}
