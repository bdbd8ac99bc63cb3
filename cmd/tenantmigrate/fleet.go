package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tenantmigrate/tenantmigrate"
)

// This file shows a fleet run: Orchestrator.MigrateTenants does the work
// (for migrate and demo), and this file turns its progress into the
// display and its result into the summary and the exit status.

// countSelection returns how many tenants the selection holds now.
func countSelection(ctx context.Context, orch *tenantmigrate.Orchestrator, sel tenantmigrate.Selection) (int64, error) {
	var n int64
	for _, err := range orch.SelectTenants(ctx, sel) {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// maxShownErrors is how many failures a run keeps to report.
const maxShownErrors = 10

// tenantFailure is the failure of one tenant.
type tenantFailure struct {
	id  string
	err error
}

// fleetResult is what a fleet run did.
type fleetResult struct {
	tenantmigrate.MigrateResult
	failures []tenantFailure // the first maxShownErrors
	scanErr  error           // reading the control plane failed mid-run
}

// ok reports whether every selected tenant ended COMPLETED.
func (r fleetResult) ok() bool {
	return r.OK() && r.scanErr == nil
}

// runFleet migrates the selection with orch.MigrateTenants, showing its
// progress on prog and keeping the first failures for the summary.
func runFleet(ctx context.Context, orch *tenantmigrate.Orchestrator, sel tenantmigrate.Selection, opts tenantmigrate.MigrateOptions, prog *progress) fleetResult {
	return runFleetWith(opts, prog, func(opts tenantmigrate.MigrateOptions) (tenantmigrate.MigrateResult, error) {
		return orch.MigrateTenants(ctx, sel, opts)
	})
}

// runFleetWith is runFleet for any batch of the Orchestrator (MigrateTenants,
// Rollback, Force), which run calls with opts.
func runFleetWith(opts tenantmigrate.MigrateOptions, prog *progress, run func(tenantmigrate.MigrateOptions) (tenantmigrate.MigrateResult, error)) fleetResult {
	var res fleetResult
	// Calls never overlap, and all happen before MigrateTenants returns.
	opts.OnProgress = func(_ context.Context, p tenantmigrate.MigrateProgress) {
		switch p.Kind {
		case tenantmigrate.ProgressSelected:
			prog.RaiseTotal(p.Selected)
		case tenantmigrate.ProgressDone:
			failed := p.Err != nil && !p.Removed
			prog.Done(failed)
			if failed && len(res.failures) < maxShownErrors {
				res.failures = append(res.failures, tenantFailure{id: p.TenantID, err: p.Err})
			}
		}
	}
	res.MigrateResult, res.scanErr = run(opts)
	prog.SetTotal(res.Selected)
	return res
}

// printSummary prints what a run did.
func printSummary(w io.Writer, res fleetResult, latest int64) {
	rate := 0.0
	if s := res.Duration.Seconds(); s > 0 {
		rate = float64(res.Completed+res.Failed) / s
	}
	verb := "migrated %s to version %d"
	if res.Failed > 0 {
		verb = "ran %s toward version %d"
	}
	fmt.Fprintf(w, verb+" in %s (%.1f tenants/s): %d completed, %d failed",
		pluralize(res.Completed+res.Failed, "tenant"), latest, durationText(res.Duration), rate, res.Completed, res.Failed)
	if res.Retried > 0 {
		fmt.Fprintf(w, ", %d needed a retry", res.Retried)
	}
	if res.Removed > 0 {
		fmt.Fprintf(w, ", %d removed from the control plane meanwhile", res.Removed)
	}
	fmt.Fprintln(w)
	if res.Interrupted {
		fmt.Fprintln(w, "interrupted: the tenants not started yet were left as they are")
	}
	if res.scanErr != nil {
		fmt.Fprintf(w, "stopped early: %v\n", res.scanErr)
	}
	if res.Failed == 0 {
		return
	}
	if int64(len(res.failures)) < res.Failed {
		fmt.Fprintf(w, "failed tenants (first %d of %d; all of them: tenantmigrate status):\n", len(res.failures), res.Failed)
	} else {
		fmt.Fprintln(w, "failed tenants:")
	}
	for _, f := range res.failures {
		fmt.Fprintf(w, "  %s: %s\n", f.id, oneLine(failureText(f.err), 300))
	}
}

// failureText is the error of a tenant without the "migrate tenant ID"
// prefix the summary already shows.
func failureText(err error) string {
	var merr *tenantmigrate.MigrationError
	if errors.As(err, &merr) && merr.Err != nil {
		return merr.Err.Error()
	}
	return err.Error()
}
