package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// loadResult is what one phase of load measured.
type loadResult struct {
	sent      int
	failed    map[string]int // by status or error
	latencies []time.Duration
	duration  time.Duration
}

func (r loadResult) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d requests in %s (%.0f/s), p50 %s, p99 %s, max %s, failed %v",
		r.sent, r.duration.Round(100*time.Millisecond), float64(r.sent)/r.duration.Seconds(),
		r.quantile(0.5).Round(10*time.Microsecond), r.quantile(0.99).Round(10*time.Microsecond),
		r.quantile(1).Round(10*time.Microsecond), r.failed)
}

// runLoad sends GET / for random tenants to the gateway at base, rate
// requests a second (open loop: a request is due every 1/rate whether or not
// earlier ones returned, at most inflight at once), until until returns true
// or maxDuration passes. Every answer other than 200 "upstream" counts as
// failed.
func runLoad(t *testing.T, base string, ids []string, rate, inflight int, maxDuration time.Duration, until func() bool) loadResult {
	t.Helper()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: inflight, MaxConnsPerHost: inflight},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()
	var (
		mu  sync.Mutex
		res = loadResult{failed: map[string]int{}}
		wg  sync.WaitGroup
	)
	sem := make(chan struct{}, inflight)
	tick := time.NewTicker(time.Second / time.Duration(rate)) // the load's pace
	defer tick.Stop()
	start := time.Now()
	for time.Since(start) < maxDuration && !until() {
		<-tick.C
		select {
		case sem <- struct{}{}:
		default:
			mu.Lock()
			res.failed["client saturated"]++ // the gateway is too slow to keep up
			mu.Unlock()
			continue
		}
		id := ids[rand.IntN(len(ids))]
		wg.Go(func() {
			defer func() { <-sem }()
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+"/", nil)
			if err != nil {
				panic(err)
			}
			req.Host = id + ".local.dev"
			sent := time.Now()
			resp, err := client.Do(req)
			var outcome string
			if err != nil {
				outcome = "error: " + err.Error()
			} else {
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "upstream "+id {
					outcome = fmt.Sprintf("%d %.80s", resp.StatusCode, body)
				}
			}
			d := time.Since(sent)
			mu.Lock()
			defer mu.Unlock()
			res.sent++
			if outcome != "" {
				res.failed[outcome]++
				return
			}
			res.latencies = append(res.latencies, d)
		})
	}
	wg.Wait()
	res.duration = time.Since(start)
	slices.Sort(res.latencies)
	return res
}

// TestGatewayUnderLoadDuringFleetRun: the gateway proxies a steady load of
// tenant requests while a full_fleet run migrates those same tenants. Under
// full_fleet a tenant that is behind (but was migrated once) is served
// while the queue gets to it, so no request may fail. It reports the
// latency of proxied requests with the fleet at the latest version (every
// tenant cached as up to date) and during the run (every request reads its
// tenant's row, as the tenant is behind).
//
// 60 tenants, 150 requests a second, a 2-second baseline; TestSoak runs 200
// tenants with 20,000 rows each at 200 requests a second, and a 10-second
// baseline.
func TestGatewayUnderLoadDuringFleetRun(t *testing.T) {
	t.Parallel()
	testGatewayLoad(t, 2, 30, 2*time.Second, 150, 1000)
}

// testGatewayLoad is TestGatewayUnderLoadDuringFleetRun with perDB tenants
// in each of dbs databases, each with rows accounts, under rate requests a
// second, after a baseline of that long.
func testGatewayLoad(t *testing.T, dbs, perDB int, baseline time.Duration, rate, rows int) {
	cpURL := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cpURL, "ld", dbs, perDB)
	cp := newPool(t, cpURL)
	ids := make([]string, len(tenants))
	for i, tn := range tenants {
		ids[i] = tn.ID
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream "+r.Header.Get("X-Tenant-Id"))
	}))
	t.Cleanup(upstream.Close)

	// The fleet at version 1: the release before.
	v1 := fmt.Sprintf("CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);\n"+
		"INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, %d) AS g;", rows)
	env := func(dir string) []string {
		return serveEnv(cpURL, dir, "full_fleet", "UPSTREAM_URL="+upstream.URL)
	}
	before := startServer(t, "serve-v1", env(writeMigrations(t, v1)))
	before.waitListening(t)
	waitAllLatest(t, cp, tenants, 1, 120*time.Second)
	base := runLoad(t, before.URL, ids, rate, 64, baseline, func() bool { return false })
	t.Logf("baseline, %d tenants at the latest version: %s", len(ids), base)
	require.Zero(t, before.stop(t, 30*time.Second))

	// The release: versions 2 and 3, migrated by full_fleet under load;
	// they rewrite and index every tenant's accounts.
	after := startServer(t, "serve-v3", env(writeMigrations(t, v1,
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';\nUPDATE accounts SET plan = 'pro' WHERE id % 10 = 0;",
		"CREATE INDEX accounts_plan_name_idx ON accounts (plan, name);\n"+
			"CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));")))
	after.waitListening(t)
	runStart := time.Now()
	var runTook time.Duration
	var lastCheck time.Time
	allDone := func() bool {
		if time.Since(lastCheck) < 100*time.Millisecond {
			return false
		}
		lastCheck = time.Now()
		var n int
		if err := cp.QueryRow(t.Context(), `
			SELECT count(*) FROM tenantmigrate.tenants WHERE migrations_status = 'COMPLETED' AND migrations_version = 3`).Scan(&n); err != nil {
			return false
		}
		if n == len(ids) && runTook == 0 {
			runTook = time.Since(runStart)
		}
		return n == len(ids)
	}
	during := runLoad(t, after.URL, ids, rate, 64, 60*time.Second, allDone)
	waitAllLatest(t, cp, tenants, 3, 60*time.Second)
	t.Logf("during the fleet run (%d tenants to version 3 in %s): %s", len(ids), runTook.Round(100*time.Millisecond), during)
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)

	for name, r := range map[string]loadResult{"baseline": base, "during the run": during} {
		require.Empty(t, r.failed, "failed requests, %s", name)
		require.NotEmpty(t, r.latencies, "requests %s", name)
	}
}
