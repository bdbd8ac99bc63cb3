package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
)

// Limits of demo --tenants.
const maxDemoTenants = 1000

// demoControlPlaneDB is the control-plane database of the demo cluster.
const demoControlPlaneDB = "tenantmigrate"

// demoNewTenant is a database the demo creates but does not register, for the
// "add a tenant" example of --keep.
const demoNewTenant = "tenant-new"

type demoOpts struct {
	runOpts
	tenants int
	keep    bool
	listen  string
}

func newDemoCmd(g *globalOpts) *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Migrate a fleet of tenants on a throwaway local PostgreSQL",
		Long: `demo shows tenantmigrate end to end on this machine, with nothing to set up
but the PostgreSQL server programs (Debian package postgresql):

  1. it starts a throwaway PostgreSQL in a new temporary directory;
  2. it creates --tenants tenant databases and registers them in a control
     plane on that server, with a random encryption key;
  3. it migrates them all, as "migrate --all" does, with its progress display;
  4. it prints the fleet status, as "status" does;
  5. it stops PostgreSQL and removes the directory.

With --keep it serves the gateway and admin API (as "serve" does, with a
random admin key) on --listen between steps 4 and 5, prints curl commands to
try, and cleans up on Ctrl-C. serve's environment variables
(MIGRATION_STRATEGY, WORKERS, ...) apply to that server.

The demo always uses its own throwaway server: --database-url (DATABASE_URL)
and --encryption-key (ENCRYPTION_KEY) are ignored. --migrations is used.`,
		Example: `  # 50 tenants, migrated and removed again
  tenantmigrate demo

  # 200 tenants, 8 at a time, then keep serving them on :8080
  tenantmigrate demo --tenants 200 --concurrency 8 --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.tenants, "tenants", 50, fmt.Sprintf("how many tenant databases to create (1-%d)", maxDemoTenants))
	bindEnv(f, "tenants", "DEMO_TENANTS")
	f.BoolVar(&o.keep, "keep", false, "serve the migrated fleet until Ctrl-C, then clean up")
	bindEnv(f, "keep", "DEMO_KEEP")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "with --keep, the address to serve on (port 0: a free port)")
	bindEnv(f, "listen", "DEMO_LISTEN_ADDR")
	addRunFlags(f, &o.runOpts)
	return cmd
}

func runDemo(cmd *cobra.Command, g *globalOpts, o *demoOpts) (retErr error) {
	if o.tenants < 1 || o.tenants > maxDemoTenants {
		return usageErr("--tenants must be between 1 and %d", maxDemoTenants)
	}
	if err := o.validate(); err != nil {
		return err
	}
	ctx := cmd.Context()
	out := g.stdout
	prog := newProgress(g.stderr, o.progress, o.progressInterval)
	logger, err := cliLogger(cmd, g, prog)
	if err != nil {
		return err
	}
	if _, err := pgserver.FindBinDir(); err != nil {
		return failedErr(err) // ErrNoBinaries names the package to install
	}
	var listen string
	if o.keep {
		// Check the address now rather than after the whole demo.
		if listen, err = resolveListen(o.listen); err != nil {
			return usageErr("--listen: %v", err)
		}
	}

	// 1. A throwaway server. Not a private temporary directory: when this
	// process is root, PostgreSQL runs as the postgres OS user, which must
	// reach it.
	dir, err := os.MkdirTemp("", "tenantmigrate-demo-")
	if err != nil {
		return failedErr(err)
	}
	// Should this process die before it cleans up, a watchdog does.
	if err := pgserver.RemoveAfterExit(dir, os.Getpid()); err != nil {
		_ = os.RemoveAll(dir)
		return failedErr(err)
	}
	fmt.Fprintf(out, "starting a throwaway PostgreSQL in %s\n", dir)
	srv, err := pgserver.Start(ctx, pgserver.Config{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		return failedErr(err)
	}
	defer func() {
		if err := srv.Remove(); err != nil {
			retErr = errors.Join(retErr, failedErr(err))
			return
		}
		fmt.Fprintf(out, "removed the throwaway PostgreSQL and %s\n", dir)
	}()

	// 2. Tenant databases and the control plane.
	ids := demoTenantIDs(o.tenants)
	names := append([]string{demoControlPlaneDB, demoNewTenant}, ids...)
	fmt.Fprintf(out, "creating %d databases: the control plane, %d tenants and a spare one for --keep\n", len(names), len(ids))
	createProg := newProgress(g.stderr, o.progress, o.progressInterval)
	createProg.Start(int64(len(names)))
	err = createDemoDatabases(ctx, srv.URL("postgres"), names, func() { createProg.Done(false) })
	createProg.Stop()
	if err != nil {
		return failedErr(err)
	}
	dg := *g
	dg.databaseURL = srv.URL(demoControlPlaneDB)
	dg.encryptionKey = randomHex(24)
	// The one command that uses the example set, and only without
	// --migrations: its fleet is a throwaway.
	dg.migrationsFS = examplemigrations.FS
	orch, err := openOrchestrator(ctx, &dg, logger, true, func(cfg *tenantmigrate.Config) {
		cfg.Queue.Workers = o.concurrency
		cfg.Limits.InlineConcurrency = o.concurrency
	})
	if err != nil {
		return err
	}
	defer orch.Close()
	for _, id := range ids {
		if _, err := orch.CreateTenant(ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: srv.URL(demoDatabaseName(id))}); err != nil {
			return failedErr(err)
		}
	}

	// 3. The fleet migration, 4. the status.
	res, err := migrateSelection(ctx, orch, tenantmigrate.Selection{AllBehind: true}, o.runOpts, prog, out)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return resultErr(res) // interrupted: clean up at once
	}
	rep, err := fleetStatus(ctx, orch, true, 20)
	if err != nil {
		return failedErr(err)
	}
	fmt.Fprintln(out)
	printStatus(out, rep)
	fmt.Fprintln(out)
	orch.Close()

	if o.keep {
		if err := serveDemo(ctx, &dg, srv, listen, out); err != nil {
			return err
		}
	}
	// 5. The deferred srv.Remove.
	return resultErr(res)
}

// serveDemo runs serve on the demo's control plane until ctx ends.
func serveDemo(ctx context.Context, dg *globalOpts, srv *pgserver.Server, listen string, out io.Writer) error {
	adminKey := randomHex(16)
	serveCmd := newServeCmd(dg)
	serveCmd.SetContext(ctx)
	if err := serveCmd.ParseFlags([]string{"--listen", listen, "--admin-api-keys", adminKey}); err != nil {
		return failedErr(err)
	}
	if err := applyEnv(serveCmd); err != nil {
		return err
	}
	base := "http://" + listen
	newURL := srv.URL(demoDatabaseName(demoNewTenant))
	fmt.Fprintf(out, `serving on %[1]s; try:

  # a tenant's migration state, through the gateway
  curl -H 'Host: tenant-001.local.dev' %[1]s/tenant

  # the fleet, through the admin API
  curl -H 'apikey: %[2]s' %[1]s/admin/stats
  curl -H 'apikey: %[2]s' '%[1]s/admin/tenants?limit=5'

  # register a new tenant: its first request migrates it
  curl -X POST -H 'apikey: %[2]s' -d '{"databaseUrl": "%[3]s"}' %[1]s/admin/tenants/%[4]s
  curl -H 'Host: %[4]s.local.dev' %[1]s/tenant

  # the CLI against the demo's control plane
  DATABASE_URL='%[5]s' ENCRYPTION_KEY='%[6]s' tenantmigrate status

Ctrl-C stops the server and removes everything.
`, base, adminKey, newURL, demoNewTenant, dg.databaseURL, dg.encryptionKey)
	return serveCmd.RunE(serveCmd, nil)
}

// resolveListen checks that addr can be listened on and returns it with a
// free port in place of port 0.
func resolveListen(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	resolved := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", err
	}
	return resolved, nil
}

// demoTenantIDs returns tenant-001, tenant-002, ...
func demoTenantIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%03d", i+1)
	}
	return ids
}

// demoDatabaseName is the database of a demo tenant: tenant-001 -> tenant_001.
func demoDatabaseName(id string) string { return strings.ReplaceAll(id, "-", "_") }

// createDBConcurrency is how many databases the demo creates at once:
// creating one mostly waits on I/O, so many at once go faster even on two
// cores.
const createDBConcurrency = 16

// createDemoDatabases creates the databases named (demo ids are turned into
// database names), several at a time, calling done after each.
func createDemoDatabases(ctx context.Context, serverURL string, names []string, done func()) error {
	cfg, err := pgxpool.ParseConfig(serverURL)
	if err != nil {
		return fmt.Errorf("connect to the demo server: %w", err)
	}
	cfg.MaxConns = createDBConcurrency
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to the demo server: %w", err)
	}
	defer pool.Close()
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(createDBConcurrency)
	for _, name := range names {
		eg.Go(func() error {
			db := demoDatabaseName(name)
			if _, err := pool.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
				return fmt.Errorf("create database %s: %w", db, err)
			}
			done()
			return nil
		})
	}
	return eg.Wait()
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
