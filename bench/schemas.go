package main

// The schemas benchmark: schema-per-tenant at N schemas in one database
// (BENCHMARKS.md section 11). It measures, in one run:
//
//   - (a) raw psql applying bench/schemamigrations to every schema, at each of
//     -schemas-raw-concurrency, one psql per schema as the fleet bench's raw
//     limit does (each transactional file in its own transaction), with the
//     session's search_path set to the schema and the schema created first;
//   - (b) tenantmigrate migrate --all (the binary) at each of
//     -schemas-concurrency, on a control plane where every schema is a tenant
//     (Tenant.Schema);
//   - a no-op deploy: migrate --all again, everything at the latest version;
//   - tenantmigrate verify over every schema;
//   - the catalog: pg_class and pg_attribute rows and the size of pg_catalog
//     after each run, and the time each tenth of the schemas took to
//     complete, first against last, since each schema adds to the catalog
//     every later one works in.

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
)

// schemaEmbedded is the schema-per-tenant migration set (see
// bench/schemamigrations/00001_accounts.sql for how it derives from
// bench/migrations).
//
//go:embed schemamigrations/*.sql
var schemaEmbedded embed.FS

func schemaMigrationsFS() fs.FS {
	sub, err := fs.Sub(schemaEmbedded, "schemamigrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// schemasResult is the outcome of the schemas benchmark.
type schemasResult struct {
	Schemas    int   `json:"schemas"`
	Migrations int   `json:"migrations"`
	Latest     int64 `json:"latest"`
	// Runs are the timed migrations of every schema, raw and migrate --all.
	Runs []schemaRun `json:"runs"`
	// RawBest and MigrateBest are the fastest run of each.
	RawBest     *schemaRun `json:"raw_best,omitempty"`
	MigrateBest *schemaRun `json:"migrate_best,omitempty"`
	// Ratio is MigrateBest / RawBest (seconds); CPURatio the same of client+server CPU.
	Ratio    float64 `json:"ratio"`
	CPURatio float64 `json:"cpu_ratio"`
	// Commands are the command lines of the tenantmigrate runs.
	Commands map[string]string `json:"commands"`
	// Fleet-wide commands on the migrated fleet: no-op deploys and verify.
	FleetCommands []commandRun `json:"fleet_commands"`
	// Catalog is the catalog's size in the empty database and after each run.
	Catalog   []catalogSize `json:"catalog"`
	relations int64         // per schema, the version table aside: every run's must match
	// Register is how long registering every schema as a tenant took (once per
	// migrate --all run; not timed in it).
	RegisterSeconds float64 `json:"register_seconds"`
}

// schemaRun is one timed migration of every schema.
type schemaRun struct {
	runResult
	// ChunkSize is a tenth of the schemas; ChunkSeconds the time from the
	// completion of the previous tenth to that of this one, by completion
	// order.
	ChunkSize    int       `json:"chunk_size"`
	ChunkSeconds []float64 `json:"chunk_seconds"`
}

// commandRun is one tenantmigrate command over the whole fleet.
type commandRun struct {
	What        string  `json:"what"`
	Concurrency int     `json:"concurrency,omitempty"`
	Seconds     float64 `json:"seconds"`
	CPUSeconds  float64 `json:"client_cpu_seconds"`
	MaxRSSMB    float64 `json:"max_rss_mb"`
	// Sessions is the number of sessions the command opened to the tenant
	// database (pg_stat_database.sessions).
	Sessions int64  `json:"tenant_sessions"`
	Output   string `json:"output,omitempty"`
}

// catalogSize is what N schemas do to the database's catalog.
type catalogSize struct {
	After       string  `json:"after"`
	Schemas     int64   `json:"schemas"`
	PGClass     int64   `json:"pg_class_rows"`
	PGAttribute int64   `json:"pg_attribute_rows"`
	PGDepend    int64   `json:"pg_depend_rows"`
	CatalogMB   float64 `json:"catalog_mb"`
	DatabaseMB  float64 `json:"database_mb"`
}

// schemasEnv is the schemas benchmark's state.
type schemasEnv struct {
	*bench
	fleet   *fleetEnv // psqlTenant, with the schema set
	schemas []string  // schema names, also the tenant ids
	db      string    // the tenant database
	control string
	res     *schemasResult
	cli     string
	migDir  string
	// retired are the tenant databases of earlier runs, renamed and kept
	// until the end (see resetDB).
	retired []string
}

// schemaNameRE is what the bench's schemas look like, for catalog queries.
const schemaNameRE = `^s[0-9]{5,}$`

func (b *bench) schemas(ctx context.Context) error {
	if b.o.inProcess {
		return errors.New("it runs the tenantmigrate binary only: drop -in-process")
	}
	ms, err := loadMigrationsFrom(schemaMigrationsFS())
	if err != nil {
		return err
	}
	// psql creates the schema first, as the migrator does (ensureSchema);
	// the session's search_path names it already (see schemaURL).
	create := migrationFile{version: 0, name: "create schema", noTx: true,
		up: "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', current_setting('search_path')) \\gexec\n"}
	all := append([]migrationFile{create}, ms...)
	fe := &fleetEnv{bench: b, migrations: all, latest: ms[len(ms)-1].version, script: psqlScript(all, 0)}
	if fe.psql, err = exec.LookPath("psql"); err != nil {
		return fmt.Errorf("the raw limit needs psql on PATH: %w", err)
	}
	e := &schemasEnv{bench: b, fleet: fe, db: b.o.prefix + "_schemas", control: b.o.prefix + "_schemas_control"}
	for i := 1; i <= b.o.schemas; i++ {
		e.schemas = append(e.schemas, fmt.Sprintf("s%05d", i))
	}
	work, err := os.MkdirTemp("", "tenantmigrate-bench-schemas-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if e.migDir, err = writeMigrationsDirFrom(work, "schemamigrations", schemaMigrationsFS()); err != nil {
		return err
	}
	if e.cli, err = b.tenantmigrateBinary(ctx, work); err != nil {
		return err
	}
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), append(e.retired, e.db, e.control)); err != nil {
			b.logf("drop schema databases: %v", err)
		}
	}()
	e.res = &schemasResult{Schemas: len(e.schemas), Migrations: len(ms), Latest: fe.latest, Commands: map[string]string{}}
	b.rep.Schemas = e.res
	b.logf("schemas: %d schemas in one database, %d migrations (latest %d)", len(e.schemas), len(ms), fe.latest)

	if err := e.resetDB(ctx); err != nil {
		return err
	}
	if err := e.catalog(ctx, "empty database"); err != nil {
		return err
	}
	if b.o.warmup {
		// Unrecorded: the first run on a fresh server is slower.
		if _, err := e.runRawOn(ctx, e.schemas[:min(len(e.schemas), 200)], 2); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		b.logf("schemas: warm-up run done")
	}

	// Raw and migrate --all alternate, so that a drift of the machine's
	// other load does not fall on one side only.
	type step struct {
		raw bool
		c   int
	}
	var steps []step
	for i := range max(len(b.o.schemasRawConc), len(b.o.schemasConc)) {
		if i < len(b.o.schemasRawConc) {
			steps = append(steps, step{true, b.o.schemasRawConc[i]})
		}
		if i < len(b.o.schemasConc) {
			steps = append(steps, step{false, b.o.schemasConc[i]})
		}
	}
	lastMigrate := -1
	for i, st := range steps {
		if !st.raw {
			lastMigrate = i
		}
	}
	for round := 1; round <= b.o.repeat; round++ {
		for i, st := range steps {
			if err := e.resetDB(ctx); err != nil {
				return err
			}
			var r schemaRun
			if st.raw {
				r, err = e.runRaw(ctx, st.c)
			} else {
				if err := e.resetControlPlane(ctx); err != nil {
					return err
				}
				if err := e.settle(ctx); err != nil {
					return err
				}
				r, err = e.runMigrate(ctx, st.c)
			}
			if err != nil {
				return err
			}
			r.Round = round
			r.finish()
			if err := e.check(ctx, !st.raw); err != nil {
				return fmt.Errorf("%s%s: %w", r.Method, label(r.Concurrency), err)
			}
			e.res.Runs = append(e.res.Runs, r)
			first, last := r.ChunkSeconds[0], r.ChunkSeconds[len(r.ChunkSeconds)-1]
			b.logf("schemas: %-30s %8.2fs  CPU client %6.2fs server %7.2fs  other %3.0f%%  first/last tenth %.2fs/%.2fs  load %s -> %s",
				r.Method+label(r.Concurrency), r.Seconds, r.ClientCPUSeconds, r.ServerCPUSeconds, r.OtherLoad, first, last, r.LoadBefore, r.LoadAfter)
			if err := e.catalog(ctx, r.Method+label(r.Concurrency)); err != nil {
				return err
			}
			if round == b.o.repeat && i == lastMigrate {
				// The fleet is migrated and recorded: the commands that run on
				// such a fleet.
				if err := e.fleetCommands(ctx); err != nil {
					return err
				}
			}
		}
	}
	e.res.summarize()
	return nil
}

// resetDB creates the tenant database empty, checkpoints and settles. The
// database of the run before is renamed, not dropped, until the end: its
// about 40 files per schema (over 400,000 at 10,000 schemas), deleted, would slow the
// file creations of the next run for minutes, and in the order raw,
// migrate --all only the second run (see server.checkpoint).
func (e *schemasEnv) resetDB(ctx context.Context) error {
	conn, err := e.srv.connect(ctx, "")
	if err != nil {
		return err
	}
	retired, err := e.srv.retireDB(ctx, conn, e.db, len(e.retired)+1)
	if retired != "" {
		e.retired = append(e.retired, retired)
	}
	if err == nil {
		err = e.srv.recreateDB(ctx, conn, e.db, "")
	}
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	return e.settle(ctx)
}

func (e *schemasEnv) settle(ctx context.Context) error {
	if err := e.srv.checkpoint(ctx); err != nil {
		return err
	}
	return sleep(ctx, e.o.settle)
}

// schemaURL is the tenant database's URL with the session's search_path set
// to schema, as the migrator sets it for a schema tenant.
func (e *schemasEnv) schemaURL(schema string) string {
	u, err := url.Parse(e.srv.dbURL(e.db))
	if err != nil {
		panic(err) // dbURL parsed it
	}
	q := u.Query()
	q.Set("options", "-csearch_path="+schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// resetControlPlane recreates the control plane with every schema registered
// as a tenant of the one database, never migrated.
func (e *schemasEnv) resetControlPlane(ctx context.Context) error {
	start := time.Now()
	dbURL := e.srv.dbURL(e.db)
	tenants := make([]tenantmigrate.Tenant, 0, len(e.schemas))
	for _, s := range e.schemas {
		tenants = append(tenants, tenantmigrate.Tenant{ID: s, DatabaseURL: dbURL, Schema: s})
	}
	if err := e.registerFleet(ctx, control{db: e.control, migrations: schemaMigrationsFS()}, tenants); err != nil {
		return err
	}
	e.res.RegisterSeconds = time.Since(start).Seconds()
	if e.o.verbose {
		e.logf("schemas: %d tenants registered in %s", len(e.schemas), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// runRaw is (a) on every schema.
func (e *schemasEnv) runRaw(ctx context.Context, concurrency int) (schemaRun, error) {
	return e.runRawOn(ctx, e.schemas, concurrency)
}

// runRawOn applies the set with psql to schemas, concurrency at a time.
func (e *schemasEnv) runRawOn(ctx context.Context, schemas []string, concurrency int) (schemaRun, error) {
	var (
		retries atomic.Int64
		cpu     atomic.Int64
	)
	done := make([]time.Duration, len(schemas))
	t := e.srv.startTimer()
	var eg errgroup.Group
	eg.SetLimit(concurrency)
	for i, s := range schemas {
		if ctx.Err() != nil {
			break // interrupted: launch no more psql
		}
		eg.Go(func() error {
			n, c, err := e.fleet.psqlTenant(ctx, e.schemaURL(s))
			done[i] = time.Since(t.start)
			retries.Add(int64(n))
			cpu.Add(int64(c))
			if err != nil {
				return fmt.Errorf("raw: schema %s: %w", s, err)
			}
			return nil
		})
	}
	err := eg.Wait()
	r := schemaRun{runResult: t.stop("raw psql")}
	r.Key, r.Concurrency = "raw", concurrency
	r.Retries = int(retries.Load())
	r.ClientCPUSeconds = time.Duration(cpu.Load()).Seconds()
	r.chunks(done)
	return r, err
}

// migrateArgs are the arguments of migrate --all on the schema fleet, and
// the command line shown for them.
func (e *schemasEnv) migrateArgs(concurrency int) ([]string, string) {
	args := []string{"migrate", "--all", "--progress", "none",
		"--database-url", e.srv.dbURL(e.control), "--encryption-key", encryptionKey, "--migrations", e.migDir,
		"--concurrency", strconv.Itoa(concurrency)}
	return args, "tenantmigrate migrate --all --progress none --database-url $CONTROL_URL --encryption-key $KEY --migrations bench/schemamigrations --concurrency " + strconv.Itoa(concurrency)
}

// runMigrate is (b): tenantmigrate migrate --all --concurrency C.
func (e *schemasEnv) runMigrate(ctx context.Context, concurrency int) (schemaRun, error) {
	args, shown := e.migrateArgs(concurrency)
	e.res.Commands["migrate"] = strings.TrimSuffix(shown, strconv.Itoa(concurrency)) + "C"
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.cli, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t := e.srv.startTimer()
	peak, err := runWatched(cmd)
	r := schemaRun{runResult: t.stop("tenantmigrate migrate --all")}
	r.Key, r.Concurrency = "migrate", concurrency
	r.ClientCPUSeconds = childCPU(cmd).Seconds()
	r.MaxRSSMB = mb(peak)
	r.Retries = strings.Count(stderr.String(), `"tenant migration failed"`)
	if err != nil {
		return r, fmt.Errorf("tenantmigrate migrate --all: %w\nstdout: %s\nstderr: %s", err, stdout.String(), tail(stderr.String(), 20))
	}
	// Each tenant's completion: when its COMPLETED state was recorded.
	conn, err := e.srv.connect(ctx, e.control)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT updated_at FROM tenantmigrate.tenants ORDER BY updated_at`)
	if err != nil {
		return r, err
	}
	ts, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return r, err
	}
	done := make([]time.Duration, len(ts))
	for i, at := range ts {
		done[i] = at.Sub(t.start)
	}
	r.chunks(done)
	return r, nil
}

// chunks fills ChunkSize and ChunkSeconds from the completion times of the
// schemas, since the start of the run.
func (r *schemaRun) chunks(done []time.Duration) {
	sorted := append([]time.Duration(nil), done...)
	for i := 1; i < len(sorted); i++ { // insertion sort: nearly sorted already
		for j := i; j > 0 && sorted[j] < sorted[j-1]; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	r.ChunkSize = max(1, len(sorted)/10)
	var prev time.Duration
	for end := r.ChunkSize; end <= len(sorted); end += r.ChunkSize {
		r.ChunkSeconds = append(r.ChunkSeconds, (sorted[end-1] - prev).Seconds())
		prev = sorted[end-1]
	}
}

// fleetCommands times the commands that run on the migrated fleet: a no-op
// deploy (twice: the first after the run, the second warm) and verify at
// each -schemas-verify-concurrency.
func (e *schemasEnv) fleetCommands(ctx context.Context) error {
	best := e.o.schemasConc[0]
	for range 2 {
		args, shown := e.migrateArgs(best)
		e.res.Commands["no-op"] = shown
		r, err := e.command(ctx, "no-op deploy: migrate --all", best, args)
		if err != nil {
			return err
		}
		e.res.FleetCommands = append(e.res.FleetCommands, r)
	}
	for _, c := range e.o.schemasVerifyConc {
		args := []string{"verify", "--database-url", e.srv.dbURL(e.control), "--encryption-key", encryptionKey,
			"--migrations", e.migDir, "--concurrency", strconv.Itoa(c)}
		e.res.Commands["verify"] = "tenantmigrate verify --database-url $CONTROL_URL --encryption-key $KEY --migrations bench/schemamigrations --concurrency C"
		r, err := e.command(ctx, "verify", c, args)
		if err != nil {
			return err
		}
		e.res.FleetCommands = append(e.res.FleetCommands, r)
	}
	return nil
}

// command runs the binary with args and times it, with the sessions it
// opened to the tenant database.
func (e *schemasEnv) command(ctx context.Context, what string, concurrency int, args []string) (commandRun, error) {
	s0, err := e.sessions(ctx)
	if err != nil {
		return commandRun{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, e.cli, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	peak, err := runWatched(cmd)
	r := commandRun{What: what, Concurrency: concurrency, Seconds: time.Since(start).Seconds(),
		CPUSeconds: childCPU(cmd).Seconds(), MaxRSSMB: mb(peak), Output: lastLine(stdout.String())}
	if err != nil {
		return r, fmt.Errorf("%s: %w\nstdout: %s\nstderr: %s", what, err, tail(stdout.String(), 10), tail(stderr.String(), 10))
	}
	// A backend counts its session in pg_stat_database when it exits, a
	// moment after the client closed: read until two reads agree.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return r, err
		}
		s1, err := e.sessions(ctx)
		if err != nil {
			return r, err
		}
		if s1-s0 == r.Sessions && (s1 > s0 || time.Now().After(deadline.Add(-4*time.Second))) || time.Now().After(deadline) {
			r.Sessions = s1 - s0
			break
		}
		r.Sessions = s1 - s0
	}
	e.logf("schemas: %-30s %7.3fs  CPU %5.2fs  RSS %3.0f MB  tenant sessions %d  %s", what+label(concurrency), r.Seconds, r.CPUSeconds, r.MaxRSSMB, r.Sessions, r.Output)
	return r, nil
}

// sessions is pg_stat_database.sessions of the tenant database, from a
// session on the postgres database (which it does not count).
func (e *schemasEnv) sessions(ctx context.Context) (int64, error) {
	conn, err := e.srv.connect(ctx, "")
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, `SELECT sessions FROM pg_stat_database WHERE datname = $1`, e.db).Scan(&n)
	return n, err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// check verifies a run: every schema holds the same relations (the version
// table aside), as many as the first run's, and, after migrate --all, a
// goose version table at the latest version and every tenant COMPLETED.
func (e *schemasEnv) check(ctx context.Context, controlled bool) error {
	conn, err := e.srv.connect(ctx, e.db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var schemas, minRel, maxRel, versionTables, tasks int64
	if err := conn.QueryRow(ctx, `
		WITH per AS (
			SELECT n.nspname,
				count(c.oid) FILTER (WHERE c.relname NOT LIKE 'goose\_db\_version%') AS rels,
				count(c.oid) FILTER (WHERE c.relname = 'goose_db_version') AS vt
			FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
			WHERE n.nspname ~ $1
			GROUP BY n.nspname)
		SELECT count(*), coalesce(min(rels), 0), coalesce(max(rels), 0), coalesce(sum(vt), 0) FROM per`,
		schemaNameRE).Scan(&schemas, &minRel, &maxRel, &versionTables); err != nil {
		return err
	}
	if schemas != int64(len(e.schemas)) || minRel != maxRel || minRel == 0 {
		return fmt.Errorf("%d schemas with %d to %d relations, want %d with the same number", schemas, minRel, maxRel, len(e.schemas))
	}
	if want := e.res.relations; want != 0 && want != minRel {
		return fmt.Errorf("%d relations per schema, the first run made %d", minRel, want)
	}
	e.res.relations = minRel
	last := pgx.Identifier{e.schemas[len(e.schemas)-1], "tasks"}.Sanitize()
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+last).Scan(&tasks); err != nil {
		return err
	}
	if tasks != 3 {
		return fmt.Errorf("%s has %d rows, want 3", last, tasks)
	}
	if !controlled {
		return nil
	}
	if versionTables != int64(len(e.schemas)) {
		return fmt.Errorf("%d schemas have a version table, want %d", versionTables, len(e.schemas))
	}
	var behind int64
	cp, err := e.srv.connect(ctx, e.control)
	if err != nil {
		return err
	}
	defer cp.Close(context.WithoutCancel(ctx))
	if err := cp.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.tenants
		WHERE migrations_status IS DISTINCT FROM 'COMPLETED' OR migrations_version IS DISTINCT FROM $1`, e.fleet.latest).Scan(&behind); err != nil {
		return err
	}
	if behind != 0 {
		return fmt.Errorf("%d tenants not COMPLETED at %d in the control plane", behind, e.fleet.latest)
	}
	var v int64
	if err := conn.QueryRow(ctx, "SELECT max(version_id) FROM "+pgx.Identifier{e.schemas[len(e.schemas)-1], "goose_db_version"}.Sanitize()).Scan(&v); err != nil {
		return err
	}
	if v != e.fleet.latest {
		return fmt.Errorf("schema %s at version %d, want %d", e.schemas[len(e.schemas)-1], v, e.fleet.latest)
	}
	return nil
}

// catalog records the catalog's size now.
func (e *schemasEnv) catalog(ctx context.Context, after string) error {
	conn, err := e.srv.connect(ctx, e.db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c := catalogSize{After: after}
	var catalogBytes, dbBytes int64
	if err := conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_namespace WHERE nspname ~ $1),
			(SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_attribute), (SELECT count(*) FROM pg_depend),
			(SELECT sum(pg_total_relation_size(oid))::bigint FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace AND relkind = 'r'),
			pg_database_size(current_database())`, schemaNameRE).Scan(
		&c.Schemas, &c.PGClass, &c.PGAttribute, &c.PGDepend, &catalogBytes, &dbBytes); err != nil {
		return err
	}
	c.CatalogMB, c.DatabaseMB = mb(catalogBytes), mb(dbBytes)
	e.res.Catalog = append(e.res.Catalog, c)
	return nil
}

// summarize picks the best run of each side and their ratio.
func (r *schemasResult) summarize() {
	for i := range r.Runs {
		run := &r.Runs[i]
		best := &r.RawBest
		if run.Key == "migrate" {
			best = &r.MigrateBest
		}
		if *best == nil || run.Seconds < (*best).Seconds {
			*best = run
		}
	}
	if r.RawBest != nil && r.MigrateBest != nil {
		r.Ratio = r.MigrateBest.Seconds / r.RawBest.Seconds
		if raw := r.RawBest.ClientCPUSeconds + r.RawBest.ServerCPUSeconds; raw > 0 {
			r.CPURatio = (r.MigrateBest.ClientCPUSeconds + r.MigrateBest.ServerCPUSeconds) / raw
		}
	}
}

// write prints the section of the report.
func (r *schemasResult) write(w io.Writer) {
	fmt.Fprintf(w, "## Schemas: %d tenant schemas in one database, %d migrations\n\n", r.Schemas, r.Migrations)
	fmt.Fprintln(w, "| round | run | concurrency | seconds | ms/schema | client CPU s | server CPU s | other load | retries | peak RSS | first → last tenth s | load before → after |")
	fmt.Fprintln(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
	for _, run := range r.Runs {
		fmt.Fprintf(w, "| %d | %s | %d | %.2f | %.2f | %.2f | %.2f | %.0f%% | %d | %s | %.2f → %.2f | %s → %s |\n",
			run.Round, run.Method, run.Concurrency, run.Seconds, 1000*run.Seconds/float64(r.Schemas), run.ClientCPUSeconds, run.ServerCPUSeconds,
			run.OtherLoad, run.Retries, unit(run.MaxRSSMB, " MB"), run.ChunkSeconds[0], run.ChunkSeconds[len(run.ChunkSeconds)-1], run.LoadBefore, run.LoadAfter)
	}
	fmt.Fprintln(w)
	if r.RawBest != nil && r.MigrateBest != nil {
		fmt.Fprintf(w, "Raw limit (a): %.2fs (psql, concurrency %d); migrate --all (b): %.2fs (--concurrency %d).\n",
			r.RawBest.Seconds, r.RawBest.Concurrency, r.MigrateBest.Seconds, r.MigrateBest.Concurrency)
		fmt.Fprintf(w, "- schemas b/a = %.3f\n- schemas b/a CPU = %.3f\n\n", r.Ratio, r.CPURatio)
	}
	fmt.Fprintln(w, "Tenths of the schemas, seconds each, by completion order:")
	fmt.Fprintln(w)
	for _, run := range r.Runs {
		parts := make([]string, len(run.ChunkSeconds))
		for i, s := range run.ChunkSeconds {
			parts[i] = fmt.Sprintf("%.2f", s)
		}
		fmt.Fprintf(w, "- %s%s (%d each): %s\n", run.Method, label(run.Concurrency), run.ChunkSize, strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| on the migrated fleet | concurrency | seconds | client CPU s | peak RSS | tenant sessions | output |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, c := range r.FleetCommands {
		fmt.Fprintf(w, "| %s | %d | %.3f | %.2f | %.0f MB | %d | %s |\n", c.What, c.Concurrency, c.Seconds, c.CPUSeconds, c.MaxRSSMB, c.Sessions, c.Output)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| catalog after | schemas | pg_class rows | pg_attribute rows | pg_depend rows | pg_catalog MB | database MB |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, c := range r.Catalog {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %.1f | %.1f |\n", c.After, c.Schemas, c.PGClass, c.PGAttribute, c.PGDepend, c.CatalogMB, c.DatabaseMB)
	}
	fmt.Fprintln(w)
	for _, k := range []string{"migrate", "no-op", "verify"} {
		if c, ok := r.Commands[k]; ok {
			fmt.Fprintf(w, "- %s: `%s`\n", k, c)
		}
	}
	fmt.Fprintf(w, "- registering the %d tenants (untimed): %.1fs\n\n", r.Schemas, r.RegisterSeconds)
}
