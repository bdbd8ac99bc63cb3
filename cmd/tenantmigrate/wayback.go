package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// This file holds the commands of the way back: target (the fleet's pinned
// target version), rollback and force.

func newTargetCmd(g *globalOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "target (set V | clear | show)",
		Short: "Pin the fleet's target version, clear the pin, or show it",
		Long: `target pins the version every instance migrates tenants to, below the
latest version of --migrations, clears the pin, or shows it. Running
instances follow a change within seconds (the control plane notifies them):
the gate serves tenants at or above the target, scans and migrate --all aim
at it, and status, the fleet page, /admin/migrations and the metrics report
against it. Tenants above a pinned target stay where they are: rollback moves
them back. Clearing the pin brings the fleet back to the latest version
through the strategies (full_fleet servers scan at once).

set and show need --migrations (MIGRATIONS_DIR), to check V against the
latest version. A target below 0 or above the latest version is refused.`,
		Example: `  # Hold the fleet at version 4, then let it go on to the latest
  tenantmigrate target set 4 --migrations ./migrations
  tenantmigrate target show --json --migrations ./migrations
  tenantmigrate target clear --migrations ./migrations`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTarget(cmd, g, args, asJSON)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func runTarget(cmd *cobra.Command, g *globalOpts, args []string, asJSON bool) error {
	var version int64
	switch {
	case args[0] == "set" && len(args) == 2:
		v, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return usageErr("target set %q: want a version number", args[1])
		}
		if v < 0 {
			return usageErr("target set %d: a version is not negative", v)
		}
		version = v
	case (args[0] == "clear" || args[0] == "show") && len(args) == 1:
	default:
		return usageErr("want target set V, target clear or target show")
	}
	orch, err := openInspectOrchestrator(cmd, g, true, g.requireMigrations)
	if err != nil {
		return err
	}
	defer orch.Close()
	ctx := cmd.Context()
	var t tenantmigrate.FleetTarget
	switch args[0] {
	case "set":
		t, err = orch.SetTarget(ctx, version)
		if errors.Is(err, tenantmigrate.ErrInvalidTarget) {
			return usageErr("%v", err)
		}
	case "clear":
		t, err = orch.ClearTarget(ctx)
	default:
		t, err = orch.FleetTarget(ctx)
	}
	if err != nil {
		return failedErr(err)
	}
	return printTarget(g.stdout, t, asJSON)
}

func printTarget(w io.Writer, t tenantmigrate.FleetTarget, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(t)
	}
	if t.Pinned == nil {
		_, err := fmt.Fprintf(w, "fleet target: %d, the latest version (not pinned)\n", t.Version)
		return err
	}
	_, err := fmt.Fprintf(w, "fleet target: pinned at %d (latest version %d)\n", *t.Pinned, t.Latest)
	return err
}

type rollbackOpts struct {
	runOpts
	to         int64
	all        bool
	tenants    []string
	selector   string
	rollout    int64
	dryRun     bool
	keepTarget bool
}

func newRollbackCmd(g *globalOpts) *cobra.Command {
	var o rollbackOpts
	cmd := &cobra.Command{
		Use:   "rollback --to V (--all | --tenant ID... | --selector SEL) | rollback --rollout ID [--to V]",
		Short: "Undo the versions above V on tenants, running their Down sections",
		Long: `rollback runs the Down sections of the versions above --to, newest first, on
each selected tenant above that version, from this process, as migrate does
(--concurrency, retries, the progress display, the summary), and records
each tenant COMPLETED at its new version, or FAILED at the version where its
Down stopped, with the error. It is safe while servers run: each tenant's run
holds its lock.

Which tenants:
  --all             every tenant recorded above --to
  --tenant ID       this tenant, when above --to (repeatable)
  --selector SEL    the tenants above --to whose labels match SEL (as in
                    "tenants list --selector")
  --rollout ID      exactly the tenants rollout ID moved, from the run
                    history: each goes back to the version it had before
                    that rollout (or --to when higher); tenants it never
                    moved are left alone. --to is optional and defaults to
                    the lowest of those versions, the pinned fleet target

Before it touches any tenant it refuses when a version to undo has no Down
section (empty or missing), naming every such file. Then, unless
--keep-target, it pins the fleet target to --to and says so, so that running
servers do not re-apply what it undoes; "tenantmigrate target clear" later
brings the fleet back to the latest version.

--dry-run lists each selected tenant with the versions it would undo, read
from its database in a read-only session, and changes nothing.

Exit status: 0 when every selected tenant ended COMPLETED, 1 when any failed
or the rollback was refused, 2 on a usage error.`,
		Example: `  # Undo versions 5 and 6 everywhere (the fleet target is pinned at 4)
  tenantmigrate rollback --to 4 --all --migrations ./migrations

  # What would it undo on two tenants?
  tenantmigrate rollback --to 4 --tenant acme --tenant globex --dry-run

  # Undo rollout 7: its tenants go back to where each was before it
  tenantmigrate rollback --rollout 7

  # Undo versions above 4 on the EU tenants
  tenantmigrate rollback --to 4 --selector region=eu`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRollback(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&o.to, "to", -1, "the version to go back to: the versions above it are undone (required)")
	bindEnv(f, "to", "ROLLBACK_TO")
	f.BoolVar(&o.all, "all", false, "every tenant recorded above --to")
	bindEnv(f, "all", "ROLLBACK_ALL")
	f.StringSliceVar(&o.tenants, "tenant", nil, "roll back this tenant (repeatable; comma-separated in the environment)")
	bindEnv(f, "tenant", "ROLLBACK_TENANTS")
	f.StringVar(&o.selector, "selector", "", `roll back the tenants above --to whose labels match this selector ("k=v,k2!=v2,k3,!k4")`)
	bindEnv(f, "selector", "ROLLBACK_SELECTOR")
	f.Int64Var(&o.rollout, "rollout", 0, "roll back exactly the tenants this rollout moved, each to its version before it (--to optional)")
	bindEnv(f, "rollout", "ROLLBACK_ROLLOUT")
	f.BoolVar(&o.dryRun, "dry-run", false, "list the tenants and the versions each would undo; change nothing")
	bindEnv(f, "dry-run", "ROLLBACK_DRY_RUN")
	f.BoolVar(&o.keepTarget, "keep-target", false, "leave the fleet target as it is (servers may re-apply what is undone)")
	bindEnv(f, "keep-target", "ROLLBACK_KEEP_TARGET")
	addRunFlags(f, &o.runOpts)
	return cmd
}

func (o *rollbackOpts) validate() error {
	ways := 0
	for _, given := range []bool{o.all, len(o.tenants) > 0, o.selector != "", o.rollout != 0} {
		if given {
			ways++
		}
	}
	switch {
	case o.rollout < 0:
		return usageErr("--rollout: want a rollout id (1 or more; see tenantmigrate rollout list)")
	case o.to < 0 && o.rollout == 0:
		return usageErr("say which version to go back to: --to V (0 or more)")
	case ways == 0:
		return usageErr("say which tenants: --all, --tenant ID (repeatable), --selector SEL or --rollout ID")
	case ways > 1:
		return usageErr("choose the tenants one way: --all, --tenant, --selector or --rollout")
	}
	if err := tenantmigrate.ValidateSelector(o.selector); err != nil {
		return usageErr("--selector: %v", err)
	}
	for _, id := range o.tenants {
		if err := tenantmigrate.ValidateTenantID(id); err != nil {
			return usageErr("--tenant: %v", err)
		}
	}
	return o.runOpts.validate()
}

func runRollback(cmd *cobra.Command, g *globalOpts, o *rollbackOpts) error {
	if err := o.validate(); err != nil {
		return err
	}
	ctx := cmd.Context()
	prog, logger, err := o.runOpts.start(cmd, g, o.dryRun)
	if err != nil {
		return err
	}
	orch, err := openOrchestrator(ctx, g, logger, true, func(cfg *tenantmigrate.Config) {
		cfg.Queue.Workers = o.concurrency
		cfg.Limits.InlineConcurrency = o.concurrency
		cfg.ReadOnly = o.dryRun
	})
	if err != nil {
		return err
	}
	defer orch.Close()

	sel := tenantmigrate.RollbackSelection{To: o.to, IDs: dedupe(o.tenants), All: o.all, Selector: o.selector, Rollout: o.rollout}
	sel, err = orch.ResolveRollback(ctx, sel)
	switch {
	case errors.Is(err, tenantmigrate.ErrRolloutNotFound):
		return usageErr("--rollout: %v", err)
	case errors.Is(err, tenantmigrate.ErrInvalid):
		return usageErr("%v", err)
	case err != nil:
		return failedErr(err)
	}
	o.to = sel.To
	if err := orch.CheckRollback(ctx, sel); err != nil {
		switch {
		case errors.Is(err, tenantmigrate.ErrInvalidTarget):
			return usageErr("--to: %v", err)
		case errors.Is(err, tenantmigrate.ErrTenantNotFound):
			return failedErr(err)
		}
		return failedErr(fmt.Errorf("refused: %w", err))
	}
	if o.dryRun {
		return rollbackDryRun(ctx, orch, sel, o.concurrency, g.stdout)
	}
	var total int64
	for _, err := range orch.RollbackTenants(ctx, sel) {
		if err != nil {
			return failedErr(fmt.Errorf("select tenants: %w", err))
		}
		total++
	}
	if !o.keepTarget {
		if _, err := orch.SetTarget(ctx, o.to); err != nil {
			return failedErr(err)
		}
		fmt.Fprintf(g.stdout, "fleet target pinned at %d: servers do not re-apply what is undone (tenantmigrate target clear lets them)\n", o.to)
	}
	if total == 0 {
		fmt.Fprintf(g.stdout, "nothing to do: no selected tenant is above version %d\n", o.to)
		return nil
	}
	if o.rollout != 0 {
		fmt.Fprintf(g.stdout, "rolling back the %s rollout %d moved to their versions before it (at least %d), %d at a time\n", pluralize(total, "tenant"), o.rollout, o.to, o.concurrency)
	} else {
		fmt.Fprintf(g.stdout, "rolling back %s to version %d, %d at a time\n", pluralize(total, "tenant"), o.to, o.concurrency)
	}
	prog.Start(total)
	res := runFleetWith(o.migrateOptions(), prog, func(opts tenantmigrate.MigrateOptions) (tenantmigrate.MigrateResult, error) {
		return orch.Rollback(ctx, sel, tenantmigrate.RollbackOptions{MigrateOptions: opts, KeepTarget: true})
	})
	prog.Stop()
	printSummary(g.stdout, res, o.to)
	return resultErr(res)
}

// rollbackDryRun lists the selected tenants with the versions each would
// undo, a page at a time.
func rollbackDryRun(ctx context.Context, orch *tenantmigrate.Orchestrator, sel tenantmigrate.RollbackSelection, concurrency int, w io.Writer) error {
	type row struct {
		t    tenantmigrate.RollbackTenant
		undo []int64
		err  error
	}
	var (
		page           []row
		total, errored int64
		header         = true
	)
	flush := func() error {
		var eg errgroup.Group
		eg.SetLimit(concurrency)
		for i := range page {
			eg.Go(func() error {
				page[i].undo, page[i].err = orch.UndoVersions(ctx, page[i].t.ID, page[i].t.To)
				return nil
			})
		}
		_ = eg.Wait()
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if header && len(page) > 0 {
			fmt.Fprintln(tw, "TENANT\tRECORDED\tUNDO")
			header = false
		}
		for _, r := range page {
			switch {
			case r.err != nil:
				errored++
				fmt.Fprintf(tw, "%s\t%d\terror: %s\n", r.t.ID, r.t.Version, oneLine(failureText(r.err), 200))
			case len(r.undo) == 0:
				fmt.Fprintf(tw, "%s\t%d\tnone (its database is at or below %d; a run records it)\n", r.t.ID, r.t.Version, r.t.To)
			default:
				fmt.Fprintf(tw, "%s\t%d\t%s\n", r.t.ID, r.t.Version, joinVersions(r.undo))
			}
		}
		page = page[:0]
		return tw.Flush()
	}
	for t, err := range orch.RollbackTenants(ctx, sel) {
		if err != nil {
			return failedErr(fmt.Errorf("select tenants: %w", err))
		}
		total++
		page = append(page, row{t: t})
		if len(page) == dryRunPage {
			if err := flush(); err != nil {
				return failedErr(err)
			}
		}
	}
	if err := flush(); err != nil {
		return failedErr(err)
	}
	fmt.Fprintf(w, "dry run: %s would be rolled back to version %d; nothing was changed\n", pluralize(total, "tenant"), sel.To)
	if errored > 0 {
		return failedErr(fmt.Errorf("could not read the versions of %s", pluralize(errored, "tenant")))
	}
	return nil
}

type forceOpts struct {
	runOpts
	tenants  []string
	version  int64
	allAbove int64
}

func newForceCmd(g *globalOpts) *cobra.Command {
	var o forceOpts
	cmd := &cobra.Command{
		Use:   "force (--tenant ID... --version V | --all-above V)",
		Short: "Set tenants' version tables and state to a version without running SQL",
		Long: `force is for after a repair by hand: it sets each selected tenant's version
table to the version and records it COMPLETED there, without running any
migration. goose tenants lose their goose_db_version rows above it and get a
row for every version up to it; golang-migrate tenants get it in
schema_migrations, clean (which clears a dirty tenant).

Which tenants:
  --tenant ID --version V   these tenants, whatever their state (repeatable)
  --all-above V             every tenant recorded above V, set to V (a page
                            at a time): "reset the fleet until V"

Each tenant is set under its migration lock, so it is safe while servers run.
But servers migrate a tenant below the fleet target up again at once: pin the
target first ("tenantmigrate target set V") when V is below it. A version
above the latest of --migrations is refused.`,
		Example: `  # A tenant repaired by hand is at version 4 now
  tenantmigrate force --tenant acme --version 4 --migrations ./migrations

  # Mark every tenant above 3 back at 3, so versions 4 and up run again
  tenantmigrate target set 3 --migrations ./migrations
  tenantmigrate force --all-above 3 --migrations ./migrations`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runForce(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.tenants, "tenant", nil, "set this tenant (repeatable; comma-separated in the environment)")
	bindEnv(f, "tenant", "FORCE_TENANTS")
	f.Int64Var(&o.version, "version", -1, "the version --tenant tenants are set to")
	bindEnv(f, "version", "FORCE_VERSION")
	f.Int64Var(&o.allAbove, "all-above", -1, "set every tenant recorded above this version to it")
	bindEnv(f, "all-above", "FORCE_ALL_ABOVE")
	addRunFlags(f, &o.runOpts)
	return cmd
}

func (o *forceOpts) validate() error {
	switch {
	case len(o.tenants) == 0 && o.allAbove < 0:
		return usageErr("say which tenants: --tenant ID --version V (repeatable --tenant), or --all-above V")
	case len(o.tenants) > 0 && o.version < 0:
		return usageErr("--tenant needs --version V (0 or more)")
	case o.allAbove >= 0 && o.version >= 0 && o.version != o.allAbove:
		return usageErr("--all-above %d sets tenants to %d: leave out --version, or give the same", o.allAbove, o.allAbove)
	}
	for _, id := range o.tenants {
		if err := tenantmigrate.ValidateTenantID(id); err != nil {
			return usageErr("--tenant: %v", err)
		}
	}
	return o.runOpts.validate()
}

func runForce(cmd *cobra.Command, g *globalOpts, o *forceOpts) error {
	if err := o.validate(); err != nil {
		return err
	}
	version := o.version
	if o.allAbove >= 0 {
		version = o.allAbove
	}
	ctx := cmd.Context()
	prog, logger, err := o.runOpts.start(cmd, g, false)
	if err != nil {
		return err
	}
	orch, err := openOrchestrator(ctx, g, logger, true, func(cfg *tenantmigrate.Config) {
		cfg.Queue.Workers = o.concurrency
		cfg.Limits.InlineConcurrency = o.concurrency
	})
	if err != nil {
		return err
	}
	defer orch.Close()
	if version > orch.Latest() {
		return usageErr("--version %d is above the latest version, %d", version, orch.Latest())
	}
	for _, id := range o.tenants {
		if _, err := orch.TenantState(ctx, id); err != nil {
			return tenantErr(id, err)
		}
	}
	sel := tenantmigrate.ForceSelection{IDs: dedupe(o.tenants), AllAbove: o.allAbove >= 0}
	fmt.Fprintf(g.stdout, "forcing tenants to version %d without running SQL\n", version)
	prog.Start(int64(len(sel.IDs)))
	res := runFleetWith(o.migrateOptions(), prog, func(opts tenantmigrate.MigrateOptions) (tenantmigrate.MigrateResult, error) {
		return orch.Force(ctx, sel, version, opts)
	})
	prog.Stop()
	printSummary(g.stdout, res, version)
	return resultErr(res)
}

var _ httpapi.WaybackService = (*tenantmigrate.Orchestrator)(nil)
