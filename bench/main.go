// Command bench is tenantmigrate's benchmark suite. It measures, on one
// PostgreSQL server (its own throwaway cluster unless --database-url is given):
//
//   - fleet: migrating N tenant databases with the migration set in
//     bench/migrations, five ways: (a) the raw limit, the same SQL applied with
//     psql at the best of several concurrencies; (b) tenantmigrate migrate
//     --all (--transaction-mode file); (e) the same in --transaction-mode
//     tenant; (c) tenantmigrate serve --strategy full_fleet until every tenant
//     is COMPLETED; (d) a naive loop of goose providers, one tenant after the
//     other. The fleet is reset (databases dropped and recreated) before
//     each run.
//   - scale: a control plane of 10,000 and 100,000 tenants: full_fleet scan and
//     enqueue, a no-op deploy, the admin and status reads, peak RSS.
//   - queue: enqueue to worker start latency on an idle queue.
//   - locks: how long reads of a tenant's tables wait while it is migrated,
//     in each transaction mode (a group holds its locks until it commits).
//   - coldstart: 1,000 requests over 100 never-migrated tenants at once
//     through the gateway under on_request, against one tenant's migration
//     alone (not in the default set).
//   - schemas (not in the default list): schema-per-tenant, -schemas schemas
//     in one database: raw psql against migrate --all, a no-op deploy,
//     verify, and what the catalog's size does (see schemas.go).
//
// Run it from the module root:
//
//	go run ./bench                      # everything, with the defaults
//	go run ./bench -run fleet -tenants 20
//
// It prints a report (Markdown) on stdout and, with -out, writes the raw
// figures as JSON. See BENCHMARKS.md for recorded results.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tenantmigrate/tenantmigrate"
)

// options are the command-line flags.
type options struct {
	databaseURL    string
	run            []string
	tenants        int
	rawConcurrency []int
	methods        []string
	cliBin         string
	inProcess      bool
	scaleSizes     []int
	queueSamples   int
	prefix         string
	out            string
	keepServer     bool
	pgSettings     map[string]string
	profileDir     string
	settle         time.Duration
	repeat         int
	profileTenants int
	concurrency    int
	warmup         bool
	logDir         string
	verbose        bool

	schemas           int
	schemasRawConc    []int
	schemasConc       []int
	schemasVerifyConc []int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run parses args, runs the selected benchmarks and writes the report to
// stdout and progress to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	srv, err := openServer(ctx, o, logf)
	if err != nil {
		return err
	}
	defer srv.close(logf)

	rep := &report{Started: time.Now().UTC(), Command: commandLine(args)}
	if rep.Machine, err = machineInfo(ctx, srv); err != nil {
		return err
	}
	logf("machine: %d cores, %s memory, PostgreSQL %s, load %s", rep.Machine.Cores, rep.Machine.Memory, rep.Machine.PGVersion, loadAvg())

	b := &bench{o: o, srv: srv, logf: logf, rep: rep}
	for _, item := range o.run {
		var err error
		switch item {
		case "fleet":
			err = b.fleet(ctx)
		case "scale":
			err = b.scale(ctx)
		case "queue":
			err = b.queueLatency(ctx)
		case "profile":
			err = b.profile(ctx)
		case "locks":
			err = b.locks(ctx)
		case "coldstart":
			err = b.coldStart(ctx)
		case "schemas":
			err = b.schemas(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", item, err)
		}
	}
	rep.Finished = time.Now().UTC()
	rep.write(stdout)
	if o.out != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.out, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bench holds what every benchmark needs.
type bench struct {
	o    options
	srv  *server
	logf func(format string, a ...any)
	rep  *report
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var (
		o                                    options
		runList, rawConc, methods, scale, pg string
		schemaRaw, schemaConc, schemaVerify  string
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.databaseURL, "database-url", "", "superuser URL of an existing PostgreSQL server (its postgres database); default: start a throwaway cluster")
	fs.StringVar(&runList, "run", "profile,queue,fleet,scale,locks", "benchmarks to run: fleet, scale, queue, profile, locks, coldstart, schemas")
	fs.IntVar(&o.tenants, "tenants", 200, "fleet: number of tenant databases")
	fs.StringVar(&rawConc, "raw-concurrency", "1,2,4,8", "fleet: psql concurrencies tried for the raw limit")
	fs.StringVar(&methods, "methods", "raw,migrate,migrate-tenant,serve,naive", "fleet: methods to measure (migrate: --transaction-mode file; migrate-tenant: --transaction-mode tenant)")
	fs.StringVar(&o.cliBin, "cli", "", "fleet, scale: tenantmigrate binary; default: go build ./cmd/tenantmigrate")
	fs.BoolVar(&o.inProcess, "in-process", false, "fleet, scale: drive the root package in this process instead of the tenantmigrate binary")
	fs.StringVar(&scale, "scale", "10000,100000", "scale: control-plane sizes (tenants)")
	fs.IntVar(&o.queueSamples, "queue-samples", 50, "queue: number of jobs timed")
	fs.StringVar(&o.prefix, "prefix", "bench", "prefix of every database the bench creates")
	fs.StringVar(&o.out, "out", "", "write the figures as JSON to this file")
	fs.BoolVar(&o.keepServer, "keep-server", false, "keep the throwaway cluster (and print its URL)")
	fs.StringVar(&pg, "pg-settings", "", "throwaway cluster: extra settings, name=value,...")
	fs.StringVar(&o.profileDir, "profile", "", "write CPU profiles of in-process runs to this directory")
	fs.StringVar(&o.logDir, "logs", "", "fleet: keep the log of every migrate --all and serve run in this directory")
	fs.BoolVar(&o.warmup, "warmup", true, "fleet: one unrecorded run first (the first run on a fresh server is slower)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "fleet: migrate --all --concurrency and serve --workers (0: their defaults)")
	fs.IntVar(&o.profileTenants, "profile-tenants", 5, "profile: tenants migrated one at a time per client")
	fs.IntVar(&o.repeat, "repeat", 1, "fleet, locks, coldstart: rounds of every method; figures and ratios use each method's best round")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "pause before each timed run, after the reset, for the server to settle")
	fs.BoolVar(&o.verbose, "v", false, "log more")
	fs.IntVar(&o.schemas, "schemas", 10000, "schemas: tenant schemas in the one database")
	fs.StringVar(&schemaRaw, "schemas-raw-concurrency", "2,4,8", "schemas: psql concurrencies tried for the raw limit")
	fs.StringVar(&schemaConc, "schemas-concurrency", "2,4,8", "schemas: migrate --all --concurrency values tried (the first also runs the no-op deploys)")
	fs.StringVar(&schemaVerify, "schemas-verify-concurrency", "4", "schemas: verify --concurrency values timed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.run = splitList(runList)
	for _, r := range o.run {
		if !slices.Contains([]string{"fleet", "scale", "queue", "profile", "locks", "coldstart", "schemas"}, r) {
			return o, fmt.Errorf("-run: unknown benchmark %q", r)
		}
	}
	o.methods = splitList(methods)
	for _, m := range o.methods {
		if !slices.Contains([]string{"raw", "migrate", "migrate-tenant", "serve", "naive"}, m) {
			return o, fmt.Errorf("-methods: unknown method %q", m)
		}
	}
	var err error
	if o.rawConcurrency, err = intList(rawConc); err != nil {
		return o, fmt.Errorf("-raw-concurrency: %w", err)
	}
	if o.scaleSizes, err = intList(scale); err != nil {
		return o, fmt.Errorf("-scale: %w", err)
	}
	for _, l := range []struct {
		flag string
		s    string
		to   *[]int
	}{{"-schemas-raw-concurrency", schemaRaw, &o.schemasRawConc}, {"-schemas-concurrency", schemaConc, &o.schemasConc}, {"-schemas-verify-concurrency", schemaVerify, &o.schemasVerifyConc}} {
		if *l.to, err = intList(l.s); err != nil {
			return o, fmt.Errorf("%s: %w", l.flag, err)
		}
	}
	if o.schemas < 1 || len(o.schemasConc) == 0 {
		return o, errors.New("-schemas must be positive and -schemas-concurrency not empty")
	}
	if o.tenants < 1 || o.queueSamples < 1 || o.repeat < 1 || o.profileTenants < 1 {
		return o, errors.New("-tenants, -queue-samples, -repeat and -profile-tenants must be positive")
	}
	o.pgSettings = map[string]string{}
	for _, kv := range splitList(pg) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, fmt.Errorf("-pg-settings: %q is not name=value", kv)
		}
		o.pgSettings[k] = v
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// commandLine is the bench's command line for the report, with the password
// of a -database-url masked, given as a URL or a keyword/value string.
func commandLine(args []string) string {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if strings.Contains(a, "://") || strings.Contains(strings.ToLower(a), "pass") {
			shown[i] = tenantmigrate.RedactURL(a)
		}
	}
	return strings.TrimSpace("go run ./bench " + strings.Join(shown, " "))
}
