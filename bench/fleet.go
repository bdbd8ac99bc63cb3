package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the naive loop
	"github.com/pressly/goose/v3"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// encryptionKey encrypts the tenant URLs of the bench's control planes.
const encryptionKey = "bench-encryption-key-0123456789"

// fleetResult is the outcome of the fleet benchmark.
type fleetResult struct {
	Tenants    int         `json:"tenants"`
	Migrations int         `json:"migrations"`
	Latest     int64       `json:"latest"`
	Runs       []runResult `json:"runs"`
	// Summary has one entry per method (and concurrency): its best and
	// median time over the rounds.
	Summary []methodSummary `json:"summary"`
	// RawBest is the raw method's best concurrency: the raw limit (a).
	RawBest *methodSummary `json:"raw_best,omitempty"`
	// Ratios are of best times: b/a, c/a, d/b.
	Ratios map[string]float64 `json:"ratios"`
	// Commands are the tenantmigrate command lines of (b) and (c).
	Commands map[string]string `json:"commands,omitempty"`
}

// fleetEnv is the fleet under test.
type fleetEnv struct {
	*bench
	tenants    []string // database names, also the tenant ids
	control    string   // control-plane database name
	migrations []migrationFile
	latest     int64
	script     string // the whole set as a psql script
	psql       string
	cli        string // tenantmigrate binary; "" in process
	migDir     string // the migration set as a directory, for the binary
	workDir    string
}

func (b *bench) fleet(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	e := &fleetEnv{bench: b, migrations: ms, latest: ms[len(ms)-1].version, script: psqlScript(ms, 0)}
	e.control = b.o.prefix + "_control"
	for i := 1; i <= b.o.tenants; i++ {
		e.tenants = append(e.tenants, fmt.Sprintf("%s_t%04d", b.o.prefix, i))
	}
	if e.psql, err = exec.LookPath("psql"); err != nil {
		return fmt.Errorf("the raw limit needs psql on PATH: %w", err)
	}
	if e.workDir, err = os.MkdirTemp("", "tenantmigrate-bench-work-"); err != nil {
		return err
	}
	defer os.RemoveAll(e.workDir)
	if e.migDir, err = writeMigrationsDir(e.workDir); err != nil {
		return err
	}
	if !b.o.inProcess && (b.wants("migrate") || b.wants("migrate-tenant") || b.wants("serve")) {
		if e.cli, err = b.tenantmigrateBinary(ctx, e.workDir); err != nil {
			return err
		}
	}
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), append(e.tenants, e.control)); err != nil {
			b.logf("drop fleet databases: %v", err)
		}
	}()
	if err := e.primeRole(ctx); err != nil {
		return err
	}

	res := &fleetResult{Tenants: len(e.tenants), Migrations: len(ms), Latest: e.latest, Ratios: map[string]float64{}, Commands: map[string]string{}}
	b.rep.Fleet = res
	b.logf("fleet: %d tenants, %d migrations (latest %d)", len(e.tenants), len(ms), e.latest)

	var want fingerprint
	record := func(r runResult, verify func(context.Context) (fingerprint, error)) error {
		fp, err := verify(ctx)
		if err != nil {
			return fmt.Errorf("%s: verify: %w", r.Method, err)
		}
		if want == (fingerprint{}) {
			want = fp
		} else if fp != want {
			return fmt.Errorf("%s: tenant schema differs from the first run's: %+v, want %+v", r.Method, fp, want)
		}
		res.Runs = append(res.Runs, r)
		b.logf("fleet: %-36s %7.2fs  CPU client %6.2fs server %6.2fs  busy %3.0f%% other %3.0f%%  retries %d  load %s -> %s %s",
			r.Method+label(r.Concurrency), r.Seconds, r.ClientCPUSeconds, r.ServerCPUSeconds, r.CPUUtil, r.OtherLoad, r.Retries, r.LoadBefore, r.LoadAfter, r.Note)
		return nil
	}

	// The runs of one round, each on a freshly reset fleet. Rounds repeat
	// (-repeat) so that every method's best time comes from a quiet moment.
	type step struct {
		key     string
		control bool // reset the control plane too
		run     func(context.Context) (runResult, error)
		verify  func(context.Context) (fingerprint, error)
	}
	var steps []step
	if b.wants("raw") {
		for _, c := range b.o.rawConcurrency {
			steps = append(steps, step{"raw", false, func(ctx context.Context) (runResult, error) { return e.runRaw(ctx, c) }, e.verifyRaw})
		}
	}
	if b.wants("migrate") {
		steps = append(steps, step{"migrate", true, func(ctx context.Context) (runResult, error) {
			return e.runMigrate(ctx, res, tenantmigrate.TransactionModeFile)
		}, e.verifyControlled})
	}
	if b.wants("migrate-tenant") {
		steps = append(steps, step{"migrate-tenant", true, func(ctx context.Context) (runResult, error) {
			return e.runMigrate(ctx, res, tenantmigrate.TransactionModeTenant)
		}, e.verifyControlled})
	}
	if b.wants("serve") {
		steps = append(steps, step{"serve", true, func(ctx context.Context) (runResult, error) { return e.runServe(ctx, res) }, e.verifyControlled})
	}
	if b.wants("naive") {
		steps = append(steps, step{"naive", false, e.runNaive, e.verifyGoose})
	}
	// A warm-up run, not recorded: the first run on a fresh server is
	// slower (cold caches), and would penalize whichever method comes first.
	if b.o.warmup && len(steps) > 0 {
		if err := e.reset(ctx, steps[0].control); err != nil {
			return err
		}
		if _, err := steps[0].run(ctx); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		b.logf("fleet: warm-up run done")
	}
	for round := 1; round <= b.o.repeat; round++ {
		// Round 1 runs the steps in order, later rounds in a shuffled order
		// (seeded by the round, so reruns repeat it): a run leaves the server
		// warm or busy (autovacuum, checkpoints, shared-catalog bloat) for the
		// next one, and a fixed order, or a rotation of it, would always hand
		// that to the same method.
		order := slices.Clone(steps)
		if round > 1 {
			rand.New(rand.NewPCG(uint64(round), 0)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for _, st := range order {
			if err := e.reset(ctx, st.control); err != nil {
				return err
			}
			r, err := st.run(ctx)
			if err != nil {
				return err
			}
			r.Key, r.Round = st.key, round
			r.finish()
			if err := record(r, st.verify); err != nil {
				return err
			}
		}
	}
	res.summarize()
	return nil
}

// methodSummary is one method's times over the rounds.
type methodSummary struct {
	Key         string    `json:"key"` // raw, migrate, serve, naive
	Method      string    `json:"method"`
	Concurrency int       `json:"concurrency,omitempty"`
	Best        float64   `json:"best_seconds"`
	Median      float64   `json:"median_seconds"`
	Seconds     []float64 `json:"seconds"`
	// CPU is the median CPU time (client and server) of the runs: the work
	// a method costs, which the machine's other load hardly changes.
	CPU float64   `json:"median_cpu_seconds"`
	cpu []float64 // per run
}

// summarize fills Summary, RawBest and Ratios from Runs.
func (f *fleetResult) summarize() {
	f.Summary = nil
	index := map[string]int{}
	for _, r := range f.Runs {
		k := fmt.Sprintf("%s/%d", r.Key, r.Concurrency)
		i, ok := index[k]
		if !ok {
			i = len(f.Summary)
			index[k] = i
			f.Summary = append(f.Summary, methodSummary{Key: r.Key, Method: r.Method, Concurrency: r.Concurrency})
		}
		f.Summary[i].Seconds = append(f.Summary[i].Seconds, r.Seconds)
		f.Summary[i].cpu = append(f.Summary[i].cpu, r.ClientCPUSeconds+r.ServerCPUSeconds)
	}
	best := map[string]*methodSummary{}
	for i := range f.Summary {
		m := &f.Summary[i]
		sorted := slices.Clone(m.Seconds)
		slices.Sort(sorted)
		m.Best, m.Median = sorted[0], sorted[len(sorted)/2]
		slices.Sort(m.cpu)
		m.CPU = m.cpu[len(m.cpu)/2]
		if b, ok := best[m.Key]; !ok || m.Best < b.Best {
			best[m.Key] = m
		}
	}
	f.RawBest = best["raw"]
	ratio := func(name, a, b string) {
		if x, y := best[a], best[b]; x != nil && y != nil && y.Best > 0 {
			f.Ratios[name] = x.Best / y.Best
		}
	}
	ratio("b/a", "migrate", "raw")
	ratio("c/a", "serve", "raw")
	ratio("d/b", "naive", "migrate")
	ratio("e/a", "migrate-tenant", "raw")
	ratio("e/b", "migrate-tenant", "migrate")
	cpuRatio := func(name, a, b string) {
		if x, y := best[a], best[b]; x != nil && y != nil && y.CPU > 0 {
			f.Ratios[name] = x.CPU / y.CPU
		}
	}
	cpuRatio("b/a CPU", "migrate", "raw")
	cpuRatio("c/a CPU", "serve", "raw")

	// Paired: per round, against the fastest raw run of the same round;
	// the median over rounds. Drifts of the machine between rounds cancel.
	paired := func(name, key string) {
		var rs []float64
		for round := 1; ; round++ {
			var raw, x float64
			found := false
			for _, r := range f.Runs {
				if r.Round != round {
					continue
				}
				found = true
				switch r.Key {
				case "raw":
					if raw == 0 || r.Seconds < raw {
						raw = r.Seconds
					}
				case key:
					x = r.Seconds
				}
			}
			if !found {
				break
			}
			if raw > 0 && x > 0 {
				rs = append(rs, x/raw)
			}
		}
		if len(rs) > 0 {
			slices.Sort(rs)
			f.Ratios[name] = rs[len(rs)/2]
		}
	}
	paired("b/a paired median", "migrate")
	paired("c/a paired median", "serve")
	paired("e/a paired median", "migrate-tenant")

	// e/b paired: tenant mode against file mode of the same round.
	var rs []float64
	for round := 1; ; round++ {
		var file, tenant float64
		found := false
		for _, r := range f.Runs {
			if r.Round != round {
				continue
			}
			found = true
			switch r.Key {
			case "migrate":
				file = r.Seconds
			case "migrate-tenant":
				tenant = r.Seconds
			}
		}
		if !found {
			break
		}
		if file > 0 && tenant > 0 {
			rs = append(rs, tenant/file)
		}
	}
	if len(rs) > 0 {
		slices.Sort(rs)
		f.Ratios["e/b paired median"] = rs[len(rs)/2]
	}
}

func (b *bench) wants(method string) bool {
	for _, m := range b.o.methods {
		if m == method {
			return true
		}
	}
	return false
}

func label(c int) string {
	if c == 0 {
		return ""
	}
	return fmt.Sprintf(" c=%d", c)
}

// tenantmigrateBinary returns --cli, or builds ./cmd/tenantmigrate.
func (b *bench) tenantmigrateBinary(ctx context.Context, dir string) (string, error) {
	if b.o.cliBin != "" {
		return b.o.cliBin, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tenantmigrate")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tenantmigrate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/tenantmigrate: %w: %s", err, out)
	}
	b.logf("built tenantmigrate (%s)", time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// moduleRoot is the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run the bench from the module (or pass -cli)")
		}
		dir = parent
	}
}

// primeRole creates the cluster-wide role of migration 21 and its settings
// row, as the first tenant ever migrated did. Without it, the very first
// concurrent runs race to insert the pg_db_role_setting row and the loser
// fails with a unique violation (23505), which is not retryable; afterwards
// they race to update it ("tuple concurrently updated", retryable).
func (e *fleetEnv) primeRole(ctx context.Context) error {
	return e.srv.exec(ctx, `DO $$
BEGIN
    CREATE ROLE bench_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
ALTER ROLE bench_app SET statement_timeout = '30s';
ALTER ROLE bench_app SET idle_in_transaction_session_timeout = '60s';`)
}

// reset recreates every tenant database empty and, with control, the
// control plane with every tenant registered and never migrated. It ends
// with a checkpoint so that every run starts from clean buffers.
func (e *fleetEnv) reset(ctx context.Context, control bool) error {
	start := time.Now()
	if err := e.srv.recreateDBs(ctx, e.tenants, "", 4); err != nil {
		return err
	}
	if control {
		if err := e.resetControlPlane(ctx); err != nil {
			return err
		}
	}
	if err := e.srv.checkpoint(ctx); err != nil {
		return err
	}
	if e.o.verbose {
		e.logf("fleet: reset in %s", time.Since(start).Round(time.Millisecond))
	}
	// Let the autovacuum launcher and the checkpointer settle.
	return sleep(ctx, e.o.settle)
}

// resetControlPlane recreates the control-plane database, creates its schema
// and registers every tenant, never migrated.
func (e *fleetEnv) resetControlPlane(ctx context.Context) error {
	tenants := make([]tenantmigrate.Tenant, 0, len(e.tenants))
	for _, name := range e.tenants {
		tenants = append(tenants, tenantmigrate.Tenant{ID: tenantID(name), DatabaseURL: e.srv.dbURL(name)})
	}
	return e.registerFleet(ctx, control{db: e.control, migrations: migrationsFS()}, tenants)
}

// control is the control-plane database of a bench and the migration set
// its orchestrator is opened with.
type control struct {
	db         string
	migrations fs.FS
}

// registerFleet recreates the control-plane database c.db, creates its
// schema and registers tenants, never migrated, four at a time.
func (b *bench) registerFleet(ctx context.Context, c control, tenants []tenantmigrate.Tenant) error {
	conn, err := b.srv.connect(ctx, "")
	if err != nil {
		return err
	}
	err = b.srv.recreateDB(ctx, conn, c.db, "")
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	orch, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   b.srv.dbURL(c.db),
		EncryptionKey: encryptionKey,
		Migrations:    c.migrations,
	})
	if err != nil {
		return err
	}
	defer orch.Close()
	var eg errgroup.Group
	eg.SetLimit(4)
	for _, t := range tenants {
		eg.Go(func() error {
			_, err := orch.CreateTenant(ctx, t)
			return err
		})
	}
	return eg.Wait()
}

// tenantID is the tenant id of a tenant database: its name.
func tenantID(dbName string) string { return dbName }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runRaw applies the migration set to every tenant with psql, concurrency
// tenants at a time: (a), the raw limit.
func (e *fleetEnv) runRaw(ctx context.Context, concurrency int) (runResult, error) {
	var (
		retries atomic.Int64
		cpu     atomic.Int64
	)
	t := e.srv.startTimer()
	var eg errgroup.Group
	eg.SetLimit(concurrency)
	for _, name := range e.tenants {
		eg.Go(func() error {
			n, c, err := e.psqlTenant(ctx, e.srv.dbURL(name))
			retries.Add(int64(n))
			cpu.Add(int64(c))
			if err != nil {
				return fmt.Errorf("raw: tenant %s: %w", name, err)
			}
			return nil
		})
	}
	err := eg.Wait()
	r := t.stop("raw psql")
	r.Concurrency = concurrency
	r.Retries = int(retries.Load())
	r.ClientCPUSeconds = time.Duration(cpu.Load()).Seconds()
	return r, err
}

// maxRawAttempts bounds the psql runs of one tenant.
const maxRawAttempts = 5

// psqlTenant runs the psql script on one tenant database. When a transient
// error (see transientPSQLError) stops it, it resumes at once after the
// last migration that completed. It returns the number of resumes and the
// CPU time of the psql processes.
func (e *fleetEnv) psqlTenant(ctx context.Context, url string) (int, time.Duration, error) {
	from := 0
	var cpu time.Duration
	for attempt := 1; ; attempt++ {
		script := e.script
		if from > 0 {
			script = psqlScript(e.migrations, from)
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, e.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cpu += childCPU(cmd)
		if err == nil {
			return attempt - 1, cpu, nil
		}
		done := lastDone(stdout.String())
		for i, m := range e.migrations {
			if m.version == done {
				from = i + 1
			}
		}
		if attempt >= maxRawAttempts || !transientPSQLError(stderr.String()) {
			return attempt - 1, cpu, fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
	}
}

// lastDone is the version of the last "@@done" line in psql's output, or 0.
func lastDone(out string) int64 {
	var v int64
	for line := range strings.SplitSeq(out, "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), doneMarker); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				v = n
			}
		}
	}
	return v
}

// transientPSQLError reports whether psql's error output shows an error that
// migrator.IsRetryable would retry.
func transientPSQLError(stderr string) bool {
	for _, s := range []string{"tuple concurrently updated", "deadlock detected", "could not serialize", "lock timeout", "canceling statement due to lock timeout"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

// runMigrate is (b) in file mode, (e) in tenant mode: tenantmigrate migrate
// --all --transaction-mode MODE, or its in-process stand-in.
func (e *fleetEnv) runMigrate(ctx context.Context, res *fleetResult, mode tenantmigrate.TransactionMode) (runResult, error) {
	key, method := "migrate", "tenantmigrate migrate --all"
	if mode == tenantmigrate.TransactionModeTenant {
		key, method = "migrate-tenant", "tenantmigrate migrate --all --transaction-mode tenant"
	}
	if e.cli == "" {
		return e.runMigrateInProcess(ctx, mode)
	}
	args := []string{"migrate", "--all", "--progress", "none", "--transaction-mode", string(mode),
		"--database-url", e.srv.dbURL(e.control), "--encryption-key", encryptionKey, "--migrations", e.migDir}
	res.Commands[key] = "tenantmigrate migrate --all --progress none --transaction-mode " + string(mode) + " --database-url $CONTROL_URL --encryption-key $KEY --migrations bench/migrations"
	if c := e.o.concurrency; c > 0 {
		args = append(args, "--concurrency", strconv.Itoa(c))
		res.Commands[key] += " --concurrency " + strconv.Itoa(c)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.cli, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t := e.srv.startTimer()
	peak, err := runWatched(cmd)
	r := t.stop(method)
	r.Concurrency = e.o.concurrency
	r.ClientCPUSeconds = childCPU(cmd).Seconds()
	r.MaxRSSMB = mb(peak)
	r.Retries = strings.Count(stderr.String(), `"tenant migration failed"`)
	e.keepLog(key, stderr.Bytes())
	if err != nil {
		return r, fmt.Errorf("tenantmigrate migrate --all: %w\nstdout: %s\nstderr: %s", err, stdout.String(), tail(stderr.String(), 20))
	}
	if e.o.verbose {
		e.logf("migrate --all: %s", strings.TrimSpace(stdout.String()))
	}
	return r, nil
}

// runMigrateInProcess drives the root package as migrate --all does, with
// Orchestrator.MigrateTenants: the tenants behind, 4 at a time (the
// command's default) or -concurrency, each retried up to twice after a
// transient failure.
func (e *fleetEnv) runMigrateInProcess(ctx context.Context, mode tenantmigrate.TransactionMode) (runResult, error) {
	stopProfile := e.profile("migrate-" + string(mode))
	defer stopProfile()
	cpu0 := selfCPU()
	t := e.srv.startTimer()
	concurrency := 4 // migrate --all's default
	if e.o.concurrency > 0 {
		concurrency = e.o.concurrency
	}
	orch, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   e.srv.dbURL(e.control),
		EncryptionKey: encryptionKey,
		Migrations:    migrationsFS(), Queue: tenantmigrate.QueueConfig{Workers: concurrency},
		TransactionMode: mode,
	})
	if err != nil {
		return runResult{}, err
	}
	defer orch.Close()
	var retries atomic.Int64
	res, err := orch.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{
		Concurrency:  concurrency,
		Retries:      2, // migrate --all's default
		RetryBackoff: time.Second,
		OnProgress: func(_ context.Context, p tenantmigrate.MigrateProgress) {
			if p.Kind == tenantmigrate.ProgressRetry {
				retries.Add(1)
			}
		},
	})
	if err == nil && res.Failed > 0 {
		err = fmt.Errorf("%d tenants failed", res.Failed)
	}
	r := t.stop("migrate --all --transaction-mode " + string(mode) + " (in-process stand-in)")
	r.Concurrency = concurrency
	r.ClientCPUSeconds = (selfCPU() - cpu0).Seconds()
	r.Retries = int(retries.Load())
	return r, err
}

// runServe is (c): tenantmigrate serve --strategy full_fleet, from process
// start until every tenant is COMPLETED at the latest version.
func (e *fleetEnv) runServe(ctx context.Context, res *fleetResult) (runResult, error) {
	if e.cli == "" {
		return e.runServeInProcess(ctx)
	}
	args := []string{"serve", "--strategy", "full_fleet", "--listen", "127.0.0.1:0",
		"--database-url", e.srv.dbURL(e.control), "--encryption-key", encryptionKey, "--migrations", e.migDir}
	res.Commands["serve"] = "tenantmigrate serve --strategy full_fleet --listen 127.0.0.1:0 --database-url $CONTROL_URL --encryption-key $KEY --migrations bench/migrations"
	if c := e.o.concurrency; c > 0 {
		args = append(args, "--workers", strconv.Itoa(c))
		res.Commands["serve"] += " --workers " + strconv.Itoa(c)
	}
	poller, err := e.newPoller(ctx)
	if err != nil {
		return runResult{}, err
	}
	defer poller.close()

	var stderr bytes.Buffer
	cmd := exec.Command(e.cli, args...)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	t := e.srv.startTimer()
	if err := cmd.Start(); err != nil {
		return runResult{}, err
	}
	rss := watchRSS(cmd)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pollErr := poller.waitAll(ctx, exited)
	r := t.stop("tenantmigrate serve full_fleet")
	r.Concurrency = e.o.concurrency

	// Stop the server gracefully and read what it used.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(45 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	r.ClientCPUSeconds = childCPU(cmd).Seconds()
	r.MaxRSSMB = mb(rss.max())
	r.Retries = strings.Count(stderr.String(), `"tenant migration failed"`)
	e.keepLog("serve", stderr.Bytes())
	if pollErr != nil {
		return r, fmt.Errorf("serve: %w\nserver log: %s", pollErr, tail(stderr.String(), 30))
	}
	return r, nil
}

// runServeInProcess is runServe with the Orchestrator in this process,
// configured as serve configures it.
func (e *fleetEnv) runServeInProcess(ctx context.Context) (runResult, error) {
	poller, err := e.newPoller(ctx)
	if err != nil {
		return runResult{}, err
	}
	defer poller.close()
	stopProfile := e.profile("serve")
	defer stopProfile()
	var retries atomic.Int64
	cpu0 := selfCPU()
	t := e.srv.startTimer()
	orch, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   e.srv.dbURL(e.control),
		EncryptionKey: encryptionKey,
		Migrations:    migrationsFS(),
		Strategy:      tenantmigrate.StrategyFullFleet,
		RunWorkers:    true, Queue: tenantmigrate.QueueConfig{Workers: e.o.concurrency}, Hooks: tenantmigrate.Hooks{OnMigrationRun: func(_ tenantmigrate.Strategy, result string, _ time.Duration) {
			if result != "completed" {
				retries.Add(1)
			}
		}},
	})
	if err != nil {
		return runResult{}, err
	}
	defer orch.Close()
	if err := orch.Start(ctx); err != nil {
		return runResult{}, err
	}
	err = poller.waitAll(ctx, nil)
	r := t.stop("serve full_fleet (in-process stand-in)")
	r.ClientCPUSeconds = (selfCPU() - cpu0).Seconds()
	r.Retries = int(retries.Load())
	return r, err
}

// keepLog writes a run's log to -logs DIR as METHOD-UNIXNANO.log, when asked:
// the JSON lines of serve and migrate --all show each tenant's duration, from
// which workers' busy time (and the gaps between jobs) can be read.
func (e *fleetEnv) keepLog(method string, log []byte) {
	if e.o.logDir == "" {
		return
	}
	name := filepath.Join(e.o.logDir, fmt.Sprintf("%s-%d.log", method, time.Now().UnixNano()))
	err := os.MkdirAll(e.o.logDir, 0o755)
	if err == nil {
		err = os.WriteFile(name, log, 0o644)
	}
	if err != nil {
		e.logf("keep log: %v", err)
	}
}

// poller watches the control plane until every tenant is COMPLETED. It
// LISTENs to the control plane's tenant-change notifications and counts
// only when one arrives (or every second), so that watching adds no load to
// the run it times.
type poller struct {
	e    *fleetEnv
	conn *pgx.Conn
}

func (e *fleetEnv) newPoller(ctx context.Context) (*poller, error) {
	conn, err := e.srv.connect(ctx, e.control)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{controlplane.NotifyChannel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return &poller{e: e, conn: conn}, nil
}

func (p *poller) close() { _ = p.conn.Close(context.Background()) }

// pollInterval is how often the control plane is read without a
// notification.
const pollInterval = time.Second

// waitAll returns when every tenant is COMPLETED at the latest version, or
// with an error when one is FAILED_STALE, exited fires, or after an hour.
func (p *poller) waitAll(ctx context.Context, exited <-chan error) error {
	deadline := time.Now().Add(time.Hour)
	for {
		var done, stale int
		if err := p.conn.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE migrations_status = 'COMPLETED' AND migrations_version >= $1),
			       count(*) FILTER (WHERE migrations_status = 'FAILED_STALE')
			FROM tenantmigrate.tenants`, p.e.latest).Scan(&done, &stale); err != nil {
			return err
		}
		switch {
		case done == len(p.e.tenants):
			return nil
		case stale > 0:
			return fmt.Errorf("%d tenants FAILED_STALE", stale)
		case time.Now().After(deadline):
			return fmt.Errorf("timed out: %d of %d tenants COMPLETED", done, len(p.e.tenants))
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the server exited (%v) with %d of %d tenants COMPLETED", err, done, len(p.e.tenants))
		default:
		}
		// Wait for a change, then take the ones that arrived meanwhile.
		wctx, cancel := context.WithTimeout(ctx, pollInterval)
		_, err := p.conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		for err == nil {
			dctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			_, err = p.conn.WaitForNotification(dctx)
			cancel()
		}
	}
}

// runNaive is (d): goose's library, one provider per tenant, one tenant
// after the other.
func (e *fleetEnv) runNaive(ctx context.Context) (runResult, error) {
	stopProfile := e.profile("naive")
	defer stopProfile()
	cpu0 := selfCPU()
	t := e.srv.startTimer()
	for _, name := range e.tenants {
		if err := gooseUp(ctx, e.srv.dbURL(name)); err != nil {
			return runResult{}, fmt.Errorf("naive: tenant %s: %w", name, err)
		}
	}
	r := t.stop("naive goose loop")
	r.Concurrency = 1
	r.ClientCPUSeconds = (selfCPU() - cpu0).Seconds()
	return r, nil
}

// gooseUp migrates one database with a fresh goose provider, as a simple
// "for each tenant: goose up" script would.
func gooseUp(ctx context.Context, url string) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrationsFS())
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// profile starts a CPU profile of this process when -profile is set.
func (e *fleetEnv) profile(name string) (stop func()) {
	if e.o.profileDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(e.o.profileDir, 0o755); err != nil {
		e.logf("profile: %v", err)
		return func() {}
	}
	f, err := os.Create(filepath.Join(e.o.profileDir, name+".cpu.pprof"))
	if err != nil {
		e.logf("profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		e.logf("profile: %v", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// fingerprint summarizes a tenant's schema, to check that every method built
// the same one.
type fingerprint struct {
	Relations, Functions, Policies, Triggers, InvalidIndexes, Tasks int64
}

const fingerprintSQL = `
SELECT
    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('app', 'audit', 'reporting')),
    (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('app', 'audit', 'reporting')),
    (SELECT count(*) FROM pg_policy),
    (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
    (SELECT count(*) FROM pg_index WHERE NOT indisvalid),
    (SELECT count(*) FROM app.tasks)`

// verifyRaw checks every tenant's schema and returns the fingerprint they
// share.
func (e *fleetEnv) verifyRaw(ctx context.Context) (fingerprint, error) {
	return e.verifyTenants(ctx, false)
}

// verifyGoose also checks goose's version table.
func (e *fleetEnv) verifyGoose(ctx context.Context) (fingerprint, error) {
	return e.verifyTenants(ctx, true)
}

// verifyControlled checks the tenants and that the control plane records
// every one COMPLETED at the latest version.
func (e *fleetEnv) verifyControlled(ctx context.Context) (fingerprint, error) {
	conn, err := e.srv.connect(ctx, e.control)
	if err != nil {
		return fingerprint{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.tenants
		WHERE migrations_status = 'COMPLETED' AND migrations_version = $1`, e.latest).Scan(&n); err != nil {
		return fingerprint{}, err
	}
	if n != len(e.tenants) {
		return fingerprint{}, fmt.Errorf("%d of %d tenants COMPLETED at %d in the control plane", n, len(e.tenants), e.latest)
	}
	return e.verifyTenants(ctx, true)
}

func (e *fleetEnv) verifyTenants(ctx context.Context, goose bool) (fingerprint, error) {
	fps := make([]fingerprint, len(e.tenants))
	var eg errgroup.Group
	eg.SetLimit(4)
	for i, name := range e.tenants {
		eg.Go(func() error {
			conn, err := e.srv.connect(ctx, name)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			fp := &fps[i]
			if err := conn.QueryRow(ctx, fingerprintSQL).Scan(&fp.Relations, &fp.Functions, &fp.Policies,
				&fp.Triggers, &fp.InvalidIndexes, &fp.Tasks); err != nil {
				return fmt.Errorf("tenant %s: %w", name, err)
			}
			if fp.InvalidIndexes != 0 {
				return fmt.Errorf("tenant %s: %d invalid indexes", name, fp.InvalidIndexes)
			}
			if goose {
				var v int64
				if err := conn.QueryRow(ctx, "SELECT max(version_id) FROM goose_db_version").Scan(&v); err != nil {
					return fmt.Errorf("tenant %s: %w", name, err)
				}
				if v != e.latest {
					return fmt.Errorf("tenant %s at version %d, want %d", name, v, e.latest)
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return fingerprint{}, err
	}
	for i, fp := range fps {
		if fp != fps[0] {
			return fingerprint{}, fmt.Errorf("tenant %s differs from tenant %s: %+v vs %+v", e.tenants[i], e.tenants[0], fp, fps[0])
		}
	}
	return fps[0], nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
