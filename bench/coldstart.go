package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// The cold start after a deploy (issue 14 §5): coldTenants tenant
// databases never migrated, coldPerTenant requests for each, all sent at
// once through the gateway (httpapi with an upstream, as serve runs it)
// under on_request. A client that gets 503 with Retry-After waits that long
// and asks again, as a well-behaved client or load balancer does.
const (
	coldTenants   = 100
	coldPerTenant = 10
	// coldDeadline bounds one request's retries.
	coldDeadline = 3 * time.Minute
)

// coldScenario is one configuration the cold start is measured under.
type coldScenario struct {
	Name string `json:"name"`
	// Servers is how many database servers the tenants are spread over
	// (their "server" label; they all live on the bench's one PostgreSQL).
	Servers int `json:"servers"`
	// ServerWait is Limits.InlineServerWait (0: the default, negative: no
	// bound).
	ServerWait time.Duration `json:"server_wait_ns"`
}

// coldScenarios are measured in this order, each round.
var coldScenarios = []coldScenario{
	{Name: "1 server, default wait", Servers: 1},
	{Name: "4 servers, default wait", Servers: 4},
	{Name: "1 server, wait 5s", Servers: 1, ServerWait: 5 * time.Second},
	{Name: "1 server, no bound", Servers: 1, ServerWait: -1},
}

// coldResult is one scenario's run.
type coldResult struct {
	coldScenario
	Round int `json:"round"`
	// SoloMS is one tenant's migration alone, in the same Orchestrator,
	// before the burst.
	SoloMS float64 `json:"solo_ms"`
	// First is the latency of each request's first answer (200 or not);
	// Served the time from the burst until each request got its 200,
	// retries included.
	First  latencyStats `json:"first_answer"`
	Served latencyStats `json:"served"`
	// Answers503 counts the 503s (every try); Requests503 the requests
	// that got at least one.
	Answers503  int `json:"answers_503"`
	Requests503 int `json:"requests_503"`
	// Unserved counts requests without a 200 by coldDeadline; Other the
	// answers that were neither 200 nor 503.
	Unserved int `json:"unserved"`
	Other    int `json:"other"`
	// Runs counts the migrations run (one per tenant is the floor).
	Runs int64 `json:"runs"`
	// AllMS is the time from the burst until every tenant was served.
	AllMS float64 `json:"all_ms"`
	Load  string  `json:"load"`
}

// coldStart measures every scenario, b.o.repeat rounds.
func (b *bench) coldStart(ctx context.Context) error {
	for round := 1; round <= b.o.repeat; round++ {
		for _, sc := range coldScenarios {
			res, err := b.coldRun(ctx, sc, round)
			if err != nil {
				return fmt.Errorf("%s: %w", sc.Name, err)
			}
			b.rep.ColdStart = append(b.rep.ColdStart, res)
			b.logf("coldstart: %s: solo %.0fms; first answer p50 %.0fms p99 %.0fms; served p50 %.0fms p99 %.0fms max %.0fms; 503s %d (%d requests); runs %d",
				sc.Name, res.SoloMS, res.First.P50, res.First.P99, res.Served.P50, res.Served.P99, res.Served.Max, res.Answers503, res.Requests503, res.Runs)
		}
	}
	return nil
}

// coldRun runs one scenario on a fresh control plane and fresh tenant
// databases.
func (b *bench) coldRun(ctx context.Context, sc coldScenario, round int) (*coldResult, error) {
	cpName := b.o.prefix + "_cold_cp"
	names := []string{cpName}
	for i := range coldTenants + 1 {
		names = append(names, fmt.Sprintf("%s_cold_%03d", b.o.prefix, i))
	}
	if err := b.srv.recreateDBs(ctx, names, "", 4); err != nil {
		return nil, err
	}
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), names); err != nil {
			b.logf("drop cold-start databases: %v", err)
		}
	}()

	var runs atomic.Int64
	cfg := tenantmigrate.Config{
		DatabaseURL:   b.srv.dbURL(cpName),
		EncryptionKey: "bench-encryption-key-0123456789",
		Migrations:    migrationsFS(),
		Logger:        slog.New(slog.DiscardHandler),
		Hooks: tenantmigrate.Hooks{OnMigrationRun: func(tenantmigrate.Strategy, string, time.Duration) {
			runs.Add(1)
		}},
	}
	setInlineServerWait(&cfg, sc.ServerWait)
	o, err := tenantmigrate.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if err := o.Start(ctx); err != nil {
		return nil, err
	}
	for i := range coldTenants + 1 {
		t := tenantmigrate.Tenant{ID: coldID(i), DatabaseURL: b.srv.dbURL(names[i+1]),
			Labels: map[string]string{"server": fmt.Sprintf("s%d", i%sc.Servers)}}
		if _, err := o.CreateTenant(ctx, t); err != nil {
			return nil, err
		}
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()
	upstreamURL, _ := url.Parse(upstream.URL)
	h, err := httpapi.NewHandler(httpapi.Config{Service: o, TenantIDFromContext: tenantmigrate.TenantIDFromContext, Upstream: upstreamURL})
	if err != nil {
		return nil, err
	}
	gateway := httptest.NewServer(h)
	defer gateway.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: coldTenants * coldPerTenant}}
	defer client.CloseIdleConnections()

	// One tenant alone, the baseline, in the same process and server.
	if err := sleep(ctx, b.o.settle); err != nil {
		return nil, err
	}
	soloStart := time.Now()
	if code, _, err := coldGet(ctx, client, gateway.URL, coldID(coldTenants)); err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("solo request: %d %v", code, err)
	}
	solo := time.Since(soloStart)
	runs.Store(0)

	res := &coldResult{coldScenario: sc, Round: round, SoloMS: ms(solo), Load: loadAvg()}
	n := coldTenants * coldPerTenant
	first := make([]time.Duration, n)
	served := make([]time.Duration, n)
	var mu sync.Mutex
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	var t0 time.Time
	for r := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			deadline := t0.Add(coldDeadline)
			var got503 bool
			for try := 0; ; try++ {
				sent := time.Now()
				code, retryAfter, err := coldGet(ctx, client, gateway.URL, coldID(r%coldTenants))
				if try == 0 {
					first[r] = time.Since(sent)
				}
				mu.Lock()
				switch {
				case err == nil && code == http.StatusOK:
					served[r] = time.Since(t0)
				case err == nil && code == http.StatusServiceUnavailable:
					res.Answers503++
					if !got503 {
						got503 = true
						res.Requests503++
					}
				default:
					res.Other++
				}
				mu.Unlock()
				if served[r] > 0 {
					return
				}
				wait := max(retryAfter, 100*time.Millisecond)
				if time.Now().Add(wait).After(deadline) || sleep(ctx, wait) != nil {
					mu.Lock()
					res.Unserved++
					mu.Unlock()
					return
				}
			}
		}()
	}
	ready.Wait()
	t0 = time.Now()
	close(start)
	done.Wait()
	res.AllMS = ms(time.Since(t0))
	res.Runs = runs.Load()
	res.First = summarize("first answer", first)
	served = slices.DeleteFunc(served, func(d time.Duration) bool { return d == 0 })
	res.Served = summarize("served", served)
	return res, nil
}

func coldID(i int) string { return fmt.Sprintf("cold-%03d", i) }

// coldGet sends one tenant request through the gateway and returns its
// status and Retry-After.
func coldGet(ctx context.Context, client *http.Client, gateway, tenantID string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gateway+"/projects/42", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Host = tenantID + ".local.dev"
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, time.Duration(secs) * time.Second, nil
}

// writeColdStart prints the cold-start figures as Markdown.
func writeColdStart(w io.Writer, rs []*coldResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "## Cold start: %d requests over %d unmigrated tenants, on_request, through the gateway\n\n", coldTenants*coldPerTenant, coldTenants)
	fmt.Fprintln(w, "| round | scenario | solo ms | first answer p50 / p99 ms | served p50 / p99 / max ms | 503 answers (requests) | other | unserved | runs | load |")
	fmt.Fprintln(w, "| ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %.0f | %.0f / %.0f | %.0f / %.0f / %.0f | %d (%d) | %d | %d | %d | %s |\n",
			r.Round, r.Name, r.SoloMS, r.First.P50, r.First.P99, r.Served.P50, r.Served.P99, r.Served.Max,
			r.Answers503, r.Requests503, r.Other, r.Unserved, r.Runs, r.Load)
	}
	fmt.Fprintln(w)
}
