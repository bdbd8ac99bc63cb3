package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
)

// defaultConcurrency is the default of --concurrency; see its help.
const defaultConcurrency = tenantmigrate.DefaultMigrateConcurrency

// runOpts are the flags of a fleet run, shared by migrate and demo.
type runOpts struct {
	concurrency      int
	retries          int
	retryBackoff     time.Duration
	progress         string
	progressInterval time.Duration
}

// start begins a batch command (migrate, rollback, force): its progress
// display (none for a dry run), the logger that writes around it, and the
// encryption key every batch needs.
func (o *runOpts) start(cmd *cobra.Command, g *globalOpts, dryRun bool) (*progress, *slog.Logger, error) {
	prog := newProgress(g.stderr, o.progress, o.progressInterval)
	if dryRun {
		prog.mode = progressNone
	}
	logger, err := cliLogger(cmd, g, prog)
	if err != nil {
		return nil, nil, err
	}
	if g.databaseURL != "" && g.encryptionKey == "" {
		return nil, nil, usageErr("%v", errNoKey)
	}
	return prog, logger, nil
}

// addRunFlags adds the flags of runOpts to f.
func addRunFlags(f *pflag.FlagSet, o *runOpts) {
	f.IntVar(&o.concurrency, "concurrency", defaultConcurrency,
		"tenants migrated at once; each runs DDL on its database host, and 4 keeps a 2-4 core host busy without queueing DDL behind DDL (raise it when tenants are spread over many hosts)")
	bindEnv(f, "concurrency", "MIGRATE_CONCURRENCY")
	f.IntVar(&o.retries, "retries", 2, "extra attempts for a tenant whose failure is transient (lock timeout, lost connection, deadlock, ...)")
	bindEnv(f, "retries", "MIGRATE_RETRIES")
	f.DurationVar(&o.retryBackoff, "retry-backoff", time.Second, "wait before the first retry of a tenant, doubling after")
	bindEnv(f, "retry-backoff", "MIGRATE_RETRY_BACKOFF")
	f.StringVar(&o.progress, "progress", progressAuto, "progress display on stderr: auto (a live bar on a terminal, plain lines otherwise), bar, plain or none")
	bindEnv(f, "progress", "PROGRESS")
	f.DurationVar(&o.progressInterval, "progress-interval", 5*time.Second, "plain progress: print a line this often")
	bindEnv(f, "progress-interval", "PROGRESS_INTERVAL")
}

func (o *runOpts) validate() error {
	switch {
	case o.concurrency < 1:
		return usageErr("--concurrency must be at least 1")
	case o.retries < 0:
		return usageErr("--retries must not be negative")
	case o.retryBackoff < 0:
		return usageErr("--retry-backoff must not be negative")
	case o.progressInterval <= 0:
		return usageErr("--progress-interval must be positive")
	}
	return validProgressMode(o.progress)
}

func (o *runOpts) migrateOptions() tenantmigrate.MigrateOptions {
	backoff := o.retryBackoff
	if backoff == 0 {
		backoff = -1 // --retry-backoff 0: no wait (0 is the library's default)
	}
	return tenantmigrate.MigrateOptions{Concurrency: o.concurrency, Retries: o.retries, RetryBackoff: backoff}
}

type migrateOpts struct {
	runOpts
	rollout      rolloutOpts
	all          bool
	includeStale bool
	tenants      []string
	dryRun       bool
	// instanceTimeout is how long this process may be silent before the
	// others take it as dead (its heartbeat, see --instance-timeout).
	instanceTimeout time.Duration
	servers         serverOpts
}

func newMigrateCmd(g *globalOpts) *cobra.Command {
	var o migrateOpts
	cmd := &cobra.Command{
		Use:   "migrate (--all | --tenant ID...)",
		Short: "Migrate tenants now, in this process, without a server",
		Long: `migrate applies the pending migrations to tenants now, from this process, and
records each result in the control plane as the server does (COMPLETED, or
FAILED with the error). It is safe while servers run: every tenant migration
holds the tenant's lock, so a tenant is never migrated twice at once.

Which tenants:
  --all             every tenant behind the latest version (never migrated,
                    older version, FAILED), but not FAILED_STALE ones
  --include-stale   with --all, FAILED_STALE tenants too
  --tenant ID       this tenant, whatever its state (repeat the flag, or
                    give a comma-separated list)

A failure that is likely transient (lock timeout, lost connection, deadlock)
is retried --retries times, after --retry-backoff and doubling waits. Progress
goes to stderr: a live bar on a terminal, otherwise a line every
--progress-interval. A summary follows on stdout. On Ctrl-C no new tenant is
started and the running ones finish.

It needs --migrations (MIGRATIONS_DIR): there is no default set.

--all runs the rollout to the latest version, the one serve's full_fleet scan
runs too (created now if there is none): its waves in its order, the canary
selector's tenants first, halting as soon as a wave's FAILED_STALE tenants
exceed --halt-failure-rate of it. A tenant fails in a rollout (FAILED_STALE)
after its last attempt. A halt, by this run or any other process, stops it:
no tenant is started after it, the running ones finish, and it exits 1 naming
the rollout, the failing version and the first errors. --waves,
--canary-selector, --halt-failure-rate and --wave-pause shape a rollout this
run creates; an existing one keeps its own.

--dry-run lists the selected tenants with the versions each one lacks, read
from the tenant databases in read-only sessions, and writes nothing anywhere
(no migration checksum either).

Logs (JSON on stderr) show errors only, unless --log-level is given.

Exit status: 0 when every selected tenant ended COMPLETED (or there was nothing
to do), 1 when any failed, 2 on a usage or configuration error.`,
		Example: `  # Bring every tenant behind to the latest version
  tenantmigrate migrate --all --migrations ./migrations

  # What would that do? (MIGRATIONS_DIR instead of --migrations)
  export MIGRATIONS_DIR=./migrations
  tenantmigrate migrate --all --dry-run

  # Retry two tenants, whatever their state, and FAILED_STALE ones too
  tenantmigrate migrate --tenant acme --tenant globex
  tenantmigrate migrate --all --include-stale --concurrency 8

  # Heartbeat for a control plane whose serve instances use a longer timeout
  tenantmigrate migrate --all --instance-timeout 30s

  # Four at once per database server; wait up to 5m for a server that is down
  tenantmigrate migrate --all --concurrency 16 --max-per-server 4 --server-down-timeout 5m

  # A release with canaries first, then 5%, then the rest; halt above 2%
  tenantmigrate migrate --all --canary-selector canary=true --waves 5%,100% --halt-failure-rate 2%`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrate(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.all, "all", false, "migrate every tenant behind the latest version (not FAILED_STALE ones)")
	bindEnv(f, "all", "MIGRATE_ALL")
	f.BoolVar(&o.includeStale, "include-stale", false, "with --all, FAILED_STALE tenants too")
	bindEnv(f, "include-stale", "MIGRATE_INCLUDE_STALE")
	f.StringSliceVar(&o.tenants, "tenant", nil, "migrate this tenant whatever its state (repeatable; comma-separated in the environment)")
	bindEnv(f, "tenant", "MIGRATE_TENANTS")
	f.BoolVar(&o.dryRun, "dry-run", false, "list the tenants and their pending versions; change nothing")
	bindEnv(f, "dry-run", "MIGRATE_DRY_RUN")
	f.DurationVar(&o.instanceTimeout, "instance-timeout", tenantmigrate.DefaultInstanceTimeout, "this process heartbeats while it migrates; silent this long, it is taken as dead by the serve instances")
	bindEnv(f, "instance-timeout", "INSTANCE_TIMEOUT")
	addRunFlags(f, &o.runOpts)
	addServerFlags(f, &o.servers, true)
	addRolloutFlags(f, &o.rollout)
	return cmd
}

func (o *migrateOpts) validate() error {
	if o.instanceTimeout <= 0 {
		return usageErr("--instance-timeout must be positive")
	}
	if !o.all && len(o.tenants) == 0 {
		return usageErr("say which tenants: --all, or --tenant ID (repeatable)")
	}
	if o.includeStale && !o.all {
		return usageErr("--include-stale goes with --all")
	}
	for _, id := range o.tenants {
		if err := tenantmigrate.ValidateTenantID(id); err != nil {
			return usageErr("--tenant: %v", err)
		}
	}
	if err := o.servers.validate(); err != nil {
		return err
	}
	return o.runOpts.validate()
}

func runMigrate(cmd *cobra.Command, g *globalOpts, o *migrateOpts) error {
	if err := o.validate(); err != nil {
		return err
	}
	ctx := cmd.Context()
	prog, logger, err := o.runOpts.start(cmd, g, o.dryRun)
	if err != nil {
		return err
	}
	var rolloutCfg tenantmigrate.Config
	if err := o.rollout.apply(&rolloutCfg); err != nil {
		return err
	}
	orch, err := openOrchestrator(ctx, g, logger, true, func(cfg *tenantmigrate.Config) {
		cfg.Rollout = rolloutCfg.Rollout
		cfg.Queue.Workers = o.concurrency            // sizes the control-plane pool
		cfg.Limits.InlineConcurrency = o.concurrency // MigrateTenant runs inline
		cfg.Queue.InstanceTimeout = o.instanceTimeout
		// A dry run writes nothing anywhere, but refuses a source that
		// drifted as the run it previews would.
		cfg.ReadOnly = o.dryRun
		o.servers.apply(cfg)
	})
	if err != nil {
		return err
	}
	defer orch.Close()

	sel := tenantmigrate.Selection{IDs: dedupe(o.tenants), AllBehind: o.all, IncludeStale: o.includeStale}
	for _, id := range sel.IDs {
		if _, err := orch.TenantState(ctx, id); err != nil {
			return tenantErr(id, err)
		}
	}
	if o.dryRun {
		return dryRun(ctx, orch, sel, o.concurrency, g.stdout)
	}
	res, err := migrateSelection(ctx, orch, sel, o.runOpts, prog, g.stdout)
	if err != nil {
		return err
	}
	return resultErr(res)
}

// migrateSelection counts the selection, then migrates it with a progress
// display and prints the summary. With nothing to do it says so and returns
// a zero result.
func migrateSelection(ctx context.Context, orch *tenantmigrate.Orchestrator, sel tenantmigrate.Selection, o runOpts, prog *progress, stdout io.Writer) (fleetResult, error) {
	total, err := countSelection(ctx, orch, sel)
	if err != nil {
		return fleetResult{}, failedErr(fmt.Errorf("select tenants: %w", err))
	}
	if total == 0 {
		if err := printNothingToDo(ctx, orch, stdout); err != nil {
			return fleetResult{}, err
		}
		return fleetResult{}, nil
	}
	fmt.Fprintf(stdout, "migrating %s to version %d, %d at a time\n", pluralize(total, "tenant"), orch.Latest(), o.concurrency)
	prog.Start(total)
	res := runFleet(ctx, orch, sel, o.migrateOptions(), prog)
	prog.Stop()
	printSummary(stdout, res, orch.Latest())
	return res, nil
}

// resultErr is the exit error of a run: nil when every tenant completed.
func resultErr(res fleetResult) error {
	switch {
	case res.ok():
		return nil
	case res.Halted != nil && res.Rollout != nil:
		return haltedErr(res)
	case res.Failed > 0:
		return failedErr(fmt.Errorf("%d of %d tenants failed", res.Failed, res.Completed+res.Failed))
	case res.Interrupted:
		return failedErr(errors.New("interrupted"))
	default:
		return failedErr(fmt.Errorf("stopped early: %w", res.scanErr))
	}
}

// printNothingToDo explains an empty selection.
func printNothingToDo(ctx context.Context, orch *tenantmigrate.Orchestrator, w io.Writer) error {
	st, err := orch.Stats(ctx)
	if err != nil {
		return failedErr(err)
	}
	if st.Behind == 0 {
		fmt.Fprintf(w, "nothing to do: all %s at version %d\n", pluralize(st.Total, "tenant"), orch.Latest())
		return nil
	}
	fmt.Fprintf(w, "nothing to do: %d of %s at version %d; the %d behind are FAILED_STALE (add --include-stale to retry them)\n",
		st.Total-st.Behind, pluralize(st.Total, "tenant"), orch.Latest(), st.Behind)
	return nil
}

// dedupe returns ids without repeats, in their first order.
func dedupe(ids []string) []string {
	var out []string
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// dryRunPage is how many tenants a dry run reads before printing them.
const dryRunPage = 100

// pendingResult is what a dry run learnt about one tenant.
type pendingResult struct {
	id      string
	current int64
	pending []int64
	err     error
}

// dryRun prints the selected tenants with their pending versions, reading a
// page of tenants at a time (concurrency at once) and printing it in order.
func dryRun(ctx context.Context, orch *tenantmigrate.Orchestrator, sel tenantmigrate.Selection, concurrency int, w io.Writer) error {
	var (
		page           []string
		total, errored int64
		header         = true
	)
	flush := func() error {
		if len(page) == 0 {
			return nil
		}
		results := make([]pendingResult, len(page))
		var eg errgroup.Group
		eg.SetLimit(concurrency)
		for i, id := range page {
			eg.Go(func() error {
				cur, pending, err := orch.PendingVersions(ctx, id)
				results[i] = pendingResult{id: id, current: cur, pending: pending, err: err}
				return nil
			})
		}
		_ = eg.Wait()
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if header {
			fmt.Fprintln(tw, "TENANT\tCURRENT\tPENDING")
			header = false
		}
		for _, r := range results {
			switch {
			case r.err != nil:
				errored++
				fmt.Fprintf(tw, "%s\t?\terror: %s\n", r.id, oneLine(failureText(r.err), 200))
			case len(r.pending) == 0:
				fmt.Fprintf(tw, "%s\t%d\tnone (the database is up to date; a run records it)\n", r.id, r.current)
			default:
				fmt.Fprintf(tw, "%s\t%d\t%s\n", r.id, r.current, joinVersions(r.pending))
			}
		}
		page = page[:0]
		return tw.Flush()
	}
	var err error
	for id, serr := range orch.SelectTenants(ctx, sel) {
		if serr != nil {
			err = serr
			break
		}
		total++
		page = append(page, id)
		if len(page) == dryRunPage {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		return failedErr(fmt.Errorf("select tenants: %w", err))
	}
	if total == 0 {
		return printNothingToDo(ctx, orch, w)
	}
	fmt.Fprintf(w, "dry run: %s would be migrated to version %d; nothing was changed\n", pluralize(total, "tenant"), orch.Latest())
	if errored > 0 {
		return failedErr(fmt.Errorf("could not read the pending versions of %s", pluralize(errored, "tenant")))
	}
	return nil
}

// joinVersions formats versions as "1, 2, 3", eliding the middle of long
// lists.
func joinVersions(vs []int64) string {
	strs := make([]string, 0, len(vs))
	for i, v := range vs {
		if len(vs) > 12 && i == 5 {
			strs = append(strs, fmt.Sprintf("... (%d more)", len(vs)-10))
		}
		if len(vs) > 12 && i >= 5 && i < len(vs)-5 {
			continue
		}
		strs = append(strs, strconv.FormatInt(v, 10))
	}
	return strings.Join(strs, ", ")
}
