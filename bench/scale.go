package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// scaleResult is the outcome of the control-plane scale benchmark at one
// size.
type scaleResult struct {
	Tenants int        `json:"tenants"`
	Rows    []scaleRow `json:"rows"`
	Load    string     `json:"load"`
}

// scaleRow is one measurement. Latency rows have P50 and Max; process rows
// have MS (wall time from process start), MaxRSSMB and TenantConns.
type scaleRow struct {
	What        string  `json:"what"`
	MS          float64 `json:"ms,omitempty"`
	P50MS       float64 `json:"p50_ms,omitempty"`
	MaxMS       float64 `json:"max_ms,omitempty"`
	MaxRSSMB    float64 `json:"max_rss_mb,omitempty"`
	TenantConns int64   `json:"tenant_conns"`
	Detail      string  `json:"detail,omitempty"`
}

// connCounter is a TCP listener that tenant URLs point at. It counts every
// connection, so "zero tenant connections" is checked exactly, and holds it
// open without answering, as a tenant busy migrating would keep a worker
// busy, until closeAll.
type connCounter struct {
	ln   net.Listener
	n    atomic.Int64
	mu   sync.Mutex
	held []net.Conn
}

func newConnCounter() (*connCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &connCounter{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.n.Add(1)
			c.mu.Lock()
			c.held = append(c.held, conn)
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// closeAll closes the connections held, which fails their clients.
func (c *connCounter) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.held {
		_ = conn.Close()
	}
	c.held = nil
}

func (c *connCounter) port() int { return c.ln.Addr().(*net.TCPAddr).Port }

// scaleEnv is one control plane of many tenants.
type scaleEnv struct {
	*bench
	n       int
	name    string
	url     string
	pool    *pgxpool.Pool
	counter *connCounter
	latest  int64
	cli     string
	migDir  string
	res     *scaleResult
}

// scale measures the control plane at each -scale size.
func (b *bench) scale(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	workDir, err := os.MkdirTemp("", "tenantmigrate-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(workDir)
	migDir, err := writeMigrationsDir(workDir)
	if err != nil {
		return err
	}
	var cli string
	if !b.o.inProcess {
		if cli, err = b.tenantmigrateBinary(ctx, workDir); err != nil {
			return err
		}
	}
	counter, err := newConnCounter()
	if err != nil {
		return err
	}
	defer counter.ln.Close()
	for _, n := range b.o.scaleSizes {
		e := &scaleEnv{bench: b, n: n, name: b.o.prefix + "_scale", counter: counter,
			latest: ms[len(ms)-1].version, cli: cli, migDir: migDir,
			res: &scaleResult{Tenants: n, Load: loadAvg()}}
		e.url = b.srv.dbURL(e.name)
		b.rep.Scale = append(b.rep.Scale, e.res)
		err := e.run(ctx)
		if e.pool != nil {
			e.pool.Close()
		}
		if derr := b.srv.dropDBs(context.WithoutCancel(ctx), []string{e.name}); derr != nil {
			b.logf("drop %s: %v", e.name, derr)
		}
		if err != nil {
			return fmt.Errorf("%d tenants: %w", n, err)
		}
	}
	return nil
}

func (e *scaleEnv) add(r scaleRow) {
	e.res.Rows = append(e.res.Rows, r)
	e.logf("scale %d: %-40s ms %8.1f  p50 %7.1f  max %7.1f  rss %5.1fMB  tenant conns %d  %s",
		e.n, r.What, r.MS, r.P50MS, r.MaxMS, r.MaxRSSMB, r.TenantConns, r.Detail)
}

func (e *scaleEnv) run(ctx context.Context) error {
	if err := e.populate(ctx); err != nil {
		return err
	}
	// 1. A release with one new migration: every tenant is behind; the
	// scan starts the release's rollout with all of them.
	// (The row keeps its name from before rollouts: bench_test.go looks
	// for it.)
	if err := e.scanChild(ctx, "full_fleet scan+enqueue (library, own process)", e.n); err != nil {
		return err
	}
	// The rollout halfway: half its tenants done (a job each, completed,
	// kept by River for a day), a feed's worth of live jobs.
	if err := e.halfway(ctx); err != nil {
		return err
	}
	// 2. Reads with every tenant in the active rollout.
	if err := e.reads(ctx); err != nil {
		return err
	}
	if e.cli != "" {
		if err := e.exec(ctx, "DELETE FROM tenantmigrate.river_job"); err != nil {
			return err
		}
		// The release's rollout holds every tenant: the scan adds none.
		if err := e.serveScan(ctx, "serve full_fleet, rollout active: start -> scan done", 0); err != nil {
			return err
		}
	}
	// 3. A no-op deploy: every tenant at the latest version, the release's
	// rollout completed.
	if err := e.exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'COMPLETED', finished_at = now()
		WHERE state IN ('RUNNING', 'HALTED')`); err != nil {
		return err
	}
	if err := e.exec(ctx, `UPDATE tenantmigrate.tenants
		SET migrations_version = $1, migrations_status = 'COMPLETED', last_error = NULL`, e.latest); err != nil {
		return err
	}
	if err := e.exec(ctx, "DELETE FROM tenantmigrate.river_job"); err != nil {
		return err
	}
	if err := e.exec(ctx, "VACUUM ANALYZE tenantmigrate.tenants"); err != nil {
		return err
	}
	if err := e.scanChild(ctx, "no-op deploy (library, own process)", 0); err != nil {
		return err
	}
	if e.cli != "" {
		if err := e.noopMigrateAll(ctx); err != nil {
			return err
		}
		if err := e.exec(ctx, "DELETE FROM tenantmigrate.river_job"); err != nil {
			return err
		}
		if err := e.serveScan(ctx, "no-op deploy: serve full_fleet start -> scan done", 0); err != nil {
			return err
		}
	}
	return nil
}

// liveJobs is how many live migrate_tenant jobs halfway leaves: what a
// rollout's feed keeps queued (2 × its batch of 100).
const liveJobs = 200

// halfway puts the active rollout halfway through: its first half of
// tenants COMPLETED with a duration, each with a completed migrate_tenant
// job as River keeps them (a day by default), and the next liveJobs
// tenants QUEUED with a live job each (scheduled an hour ahead, so no
// worker takes them).
func (e *scaleEnv) halfway(ctx context.Context) error {
	start := time.Now()
	half := int64(e.n / 2)
	for _, q := range []string{
		`UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED', duration_ms = 40 + position % 50, finished_at = now(), attempts = 1
			WHERE position < $1`,
		`UPDATE tenantmigrate.rollout_tenants SET state = 'QUEUED', claimed_at = now()
			WHERE position >= $1 AND position < $1 + ` + fmt.Sprint(liveJobs),
		`UPDATE tenantmigrate.rollouts SET current_wave = cardinality(wave_ends) - 1 WHERE state = 'RUNNING' AND $1::bigint >= 0`,
		`INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, attempt, attempted_at, finalized_at)
			SELECT jsonb_build_object('tenant_id', tenant_id), 'migrate_tenant', 25, 'completed', 1, now(), now()
			FROM tenantmigrate.rollout_tenants WHERE position < $1`,
		`INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, scheduled_at)
			SELECT jsonb_build_object('tenant_id', tenant_id), 'migrate_tenant', 25, 'available', now() + interval '1 hour'
			FROM tenantmigrate.rollout_tenants WHERE state = 'QUEUED' AND $1::bigint >= 0`,
		`ANALYZE`,
	} {
		args := []any{half}
		if q == `ANALYZE` {
			args = nil
		}
		if err := e.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("rollout halfway: %w", err)
		}
	}
	e.logf("scale %d: rollout halfway (%d done, %d live jobs) in %s", e.n, half, liveJobs, time.Since(start).Round(time.Millisecond))
	return nil
}

func (e *scaleEnv) exec(ctx context.Context, sql string, args ...any) error {
	_, err := e.pool.Exec(ctx, sql, args...)
	return err
}

// populate creates the control plane with n tenants at version latest-1,
// COMPLETED, except one in a thousand FAILED with an error, on 100 servers
// (label server=db00..db99). Their URLs point at the connection counter.
func (e *scaleEnv) populate(ctx context.Context) error {
	start := time.Now()
	conn, err := e.srv.connect(ctx, "")
	if err != nil {
		return err
	}
	err = e.srv.recreateDB(ctx, conn, e.name, "")
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	if e.pool, err = pgxpool.New(ctx, e.url); err != nil {
		return err
	}
	if err := controlplane.Migrate(ctx, e.pool); err != nil {
		return err
	}
	cipher, err := controlplane.NewCipher(encryptionKey)
	if err != nil {
		return err
	}
	prev := e.latest - 1
	rows := make([][]any, e.n)
	for i := range rows {
		id := fmt.Sprintf("tenant-%07d", i+1)
		enc, err := cipher.Encrypt(fmt.Sprintf("postgres://app:secret@127.0.0.1:%d/%s?sslmode=disable", e.counter.port(), strings.ReplaceAll(id, "-", "_")))
		if err != nil {
			return err
		}
		status, lastErr := "COMPLETED", any(nil)
		if i%1000 == 999 {
			status, lastErr = "FAILED", "apply migration 45 (00045_comments_doc.sql): ERROR: canceling statement due to lock timeout (SQLSTATE 55P03)"
		}
		// Spread over 100 database servers by their "server" label, with
		// the server column written as Create writes it (else the first
		// New fills it in: 51.5 s once at 1M, section 2).
		server := fmt.Sprintf("db%02d", i%100)
		rows[i] = []any{id, enc, prev, status, lastErr, map[string]string{"server": server}, server}
	}
	if _, err := e.pool.CopyFrom(ctx, pgx.Identifier{"tenantmigrate", "tenants"},
		[]string{"id", "database_url", "migrations_version", "migrations_status", "last_error", "labels", "server"},
		pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	if err := e.exec(ctx, "VACUUM ANALYZE tenantmigrate.tenants"); err != nil {
		return err
	}
	e.logf("scale %d: control plane populated in %s", e.n, time.Since(start).Round(time.Millisecond))
	return sleep(ctx, e.o.settle)
}

// scanChild runs the fleet scan in a child process (see childMain) and
// records its wall time from process start, its scan time and peak RSS.
func (e *scaleEnv) scanChild(ctx context.Context, what string, want int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	conns0 := e.counter.n.Load()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, self, childCommand, "scan", e.url)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if e.o.profileDir != "" && want > 0 {
		if err := os.MkdirAll(e.o.profileDir, 0o755); err != nil {
			return err
		}
		cmd.Env = append(os.Environ(), profileEnv+"="+e.o.profileDir)
	}
	start := time.Now()
	peak, err := runWatched(cmd)
	wall := time.Since(start)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", what, err, stderr.String())
	}
	var cr childResult
	if err := json.Unmarshal(stdout.Bytes(), &cr); err != nil {
		return fmt.Errorf("%s: %w: %q", what, err, stdout.String())
	}
	if cr.Scheduled != want {
		return fmt.Errorf("%s: scheduled %d jobs, want %d", what, cr.Scheduled, want)
	}
	e.add(scaleRow{What: what, MS: ms(wall), MaxRSSMB: max(cr.MaxRSSMB, mb(peak)), TenantConns: e.counter.n.Load() - conns0,
		Detail: fmt.Sprintf("New %.0fms + scan %.0fms, %d jobs (or tenants of the rollout it created)", cr.NewMS, cr.ScanMS, cr.Scheduled)})
	return nil
}

// adminKey opens the admin API of the in-process handler.
const adminKey = "bench-admin-key-0123456789"

// reads times the admin API's reads, the fleet page and the status command
// with every tenant in the active rollout.
func (e *scaleEnv) reads(ctx context.Context) error {
	orch, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   e.url,
		EncryptionKey: encryptionKey,
		Migrations:    migrationsFS(),
	})
	if err != nil {
		return err
	}
	defer orch.Close()
	h, err := httpapi.NewHandler(httpapi.Config{
		Service:             orch,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		AdminAPIKeys:        []string{adminKey},
	})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	conns0 := e.counter.n.Load()

	// Every admin read, and the fleet page, with the rollout the scan
	// started (every tenant in it) active.
	var rolloutID int64
	if err := e.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM tenantmigrate.rollouts`).Scan(&rolloutID); err != nil {
		return err
	}
	paths := []string{"/admin/migrations", "/admin/stats", "/admin/migrations/failed?limit=20",
		"/admin/servers", "/admin/tenants?limit=100", "/admin/tenants/tenant-0000001", "/admin/tenants/tenant-0000001/runs",
		"/admin/target", "/admin/rollouts"}
	if rolloutID != 0 {
		paths = append(paths, fmt.Sprintf("/admin/rollouts/%d", rolloutID))
	}
	paths = append(paths, "/admin/")
	for _, path := range paths {
		st, err := timeN(ctx, 20, func() error { return get(ctx, srv.URL+path) })
		if err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		what := "GET " + path
		if path == "/admin/" {
			what += " (fleet page)"
		}
		e.add(scaleRow{What: what, P50MS: st.P50, MaxMS: st.Max, TenantConns: e.counter.n.Load() - conns0, Detail: "20 requests"})
	}
	// What the status command reads, in this process: each read alone,
	// then all of them.
	statusReads := []struct {
		what string
		fn   func() error
	}{
		{"Stats", func() error { _, err := orch.Stats(ctx); return err }},
		{"ListFailed", func() error { _, _, err := orch.ListFailed(ctx, 0, 20); return err }},
		{"Remaining", func() error { _, err := orch.Remaining(ctx); return err }},
		{"ListServers", func() error { _, err := orch.ListServers(ctx); return err }},
		{"CurrentRollout", func() error { _, err := orch.CurrentRollout(ctx); return err }},
	}
	for _, r := range statusReads {
		st, err := timeN(ctx, 20, r.fn)
		if err != nil {
			return fmt.Errorf("%s: %w", r.what, err)
		}
		e.add(scaleRow{What: "status read: " + r.what, P50MS: st.P50, MaxMS: st.Max, Detail: "20 calls, in process"})
	}
	// The GROUP BYs the summaries of migration 00015 replaced, side by
	// side: what ListServers and a rollout's progress cost before.
	for _, q := range []struct{ what, sql string }{
		{"before 00015: GROUP BY server over tenants",
			`SELECT server, count(*) FROM tenantmigrate.tenants WHERE server IS NOT NULL GROUP BY server`},
		{"before 00015: GROUP BY wave, state over rollout_tenants",
			`SELECT wave, state, count(*), coalesce(sum(duration_ms) FILTER (WHERE state = 'COMPLETED'), 0)
				FROM tenantmigrate.rollout_tenants WHERE rollout_id = (SELECT max(id) FROM tenantmigrate.rollouts) GROUP BY wave, state`},
	} {
		st, err := timeN(ctx, 20, func() error { return e.exec(ctx, q.sql) })
		if err != nil {
			return fmt.Errorf("%s: %w", q.what, err)
		}
		e.add(scaleRow{What: q.what, P50MS: st.P50, MaxMS: st.Max, Detail: "20 queries, same run"})
	}
	st, err := timeN(ctx, 20, func() error {
		for _, r := range statusReads {
			if err := r.fn(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.add(scaleRow{What: "status reads, all (in process)", P50MS: st.P50, MaxMS: st.Max, Detail: "20 calls, in process"})

	if e.cli != "" {
		var rss int64
		st, err := timeN(ctx, 5, func() error {
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, e.cli, "status", "--database-url", e.url, "--migrations", e.migDir)
			cmd.Stdout, cmd.Stderr = &out, &out
			peak, err := runWatched(cmd)
			if err != nil {
				return fmt.Errorf("%w: %s", err, out.String())
			}
			rss = max(rss, peak)
			return nil
		})
		if err != nil {
			return fmt.Errorf("tenantmigrate status: %w", err)
		}
		e.add(scaleRow{What: "tenantmigrate status (process)", P50MS: st.P50, MaxMS: st.Max, MaxRSSMB: mb(rss),
			TenantConns: e.counter.n.Load() - conns0, Detail: "5 runs, wall time incl. process start"})
	}
	return nil
}

// timeN calls fn n times after two warm-up calls and summarizes the times.
func timeN(ctx context.Context, n int, fn func() error) (latencyStats, error) {
	var ds []time.Duration
	for i := -2; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return latencyStats{}, err
		}
		start := time.Now()
		if err := fn(); err != nil {
			return latencyStats{}, err
		}
		if i >= 0 {
			ds = append(ds, time.Since(start))
		}
	}
	return summarize("", ds), nil
}

func get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("apikey", adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return nil
}

// noopMigrateAll runs tenantmigrate migrate --all on a fleet at the latest
// version.
func (e *scaleEnv) noopMigrateAll(ctx context.Context) error {
	conns0 := e.counter.n.Load()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.cli, "migrate", "--all", "--progress", "none",
		"--database-url", e.url, "--encryption-key", encryptionKey, "--migrations", e.migDir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	peak, err := runWatched(cmd)
	wall := time.Since(start)
	if err != nil {
		return fmt.Errorf("migrate --all: %w: %s %s", err, stdout.String(), stderr.String())
	}
	e.add(scaleRow{What: "no-op deploy: tenantmigrate migrate --all", MS: ms(wall), MaxRSSMB: mb(peak),
		TenantConns: e.counter.n.Load() - conns0, Detail: strings.TrimSpace(stdout.String())})
	return nil
}

// serveScan starts tenantmigrate serve --strategy full_fleet and measures
// the time from process start to its "fleet scan finished" log line.
func (e *scaleEnv) serveScan(ctx context.Context, what string, want int) error {
	conns0 := e.counter.n.Load()
	cmd := exec.Command(e.cli, "serve", "--strategy", "full_fleet", "--listen", "127.0.0.1:0",
		"--database-url", e.url, "--encryption-key", encryptionKey, "--migrations", e.migDir)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	rss := watchRSS(cmd)
	type scanLine struct {
		Msg        string `json:"msg"`
		Scheduled  int    `json:"scheduled"`
		DurationMS int64  `json:"duration_ms"`
	}
	found := make(chan scanLine, 1)
	var logTail bytes.Buffer
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l scanLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "fleet scan finished" {
				select {
				case found <- l:
				default:
				}
			}
			if logTail.Len() < 1<<16 {
				logTail.Write(sc.Bytes())
				logTail.WriteByte('\n')
			}
		}
	}()
	var (
		line scanLine
		wall time.Duration
		err  error
	)
	select {
	case line = <-found:
		wall = time.Since(start)
	case <-time.After(2 * time.Minute):
		err = fmt.Errorf("%s: no fleet scan within 2 minutes", what)
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Stop the server. Its running jobs wait on held tenant connections:
	// fail them until it has exited.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(45 * time.Second)
wait:
	for {
		e.counter.closeAll()
		select {
		case <-waitErr:
			break wait
		case <-tick.C:
		case <-deadline:
			_ = cmd.Process.Kill()
			<-waitErr
			break wait
		}
	}
	_ = pw.Close()
	if err != nil {
		return fmt.Errorf("%w\nlog: %s", err, tail(logTail.String(), 20))
	}
	if line.Scheduled != want {
		return fmt.Errorf("%s: scan scheduled %d, want %d", what, line.Scheduled, want)
	}
	detail := fmt.Sprintf("scan itself %dms (its log), %d jobs", line.DurationMS, line.Scheduled)
	if want > 0 {
		detail += "; the 4 workers start on the jobs at once and wait on their tenants"
	}
	e.add(scaleRow{What: what, MS: ms(wall), MaxRSSMB: mb(rss.max()), TenantConns: e.counter.n.Load() - conns0, Detail: detail})
	return nil
}
