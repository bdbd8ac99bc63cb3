package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// This file runs a migration over a selection of tenants in this process:
// the engine of "migrate" and "demo".

// selection is the set of tenants a run covers: the explicit ones first,
// then (with all) every tenant behind the latest version, in cursor order.
type selection struct {
	orch     *tenantmigrate.Orchestrator
	explicit []string
	all      bool
	// includeStale adds FAILED_STALE tenants to all.
	includeStale bool
}

// each calls fn with every selected tenant id. It walks the control plane a
// page of ids at a time (Orchestrator.ScanBehind: version unknown or below
// the latest, FAILED_STALE ones only with includeStale), so its memory does
// not grow with the fleet and no URL is decrypted.
func (s selection) each(ctx context.Context, fn func(id string) error) error {
	seen := make(map[string]bool, len(s.explicit))
	for _, id := range s.explicit {
		seen[id] = true
		if err := fn(id); err != nil {
			return err
		}
	}
	if !s.all {
		return nil
	}
	var cursor int64
	for {
		ids, next, err := s.orch.ScanBehind(ctx, s.includeStale, cursor, scanPageSize)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if seen[id] {
				continue
			}
			if err := fn(id); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// scanPageSize is how many tenant ids one control-plane read returns.
const scanPageSize = 1000

// count returns how many tenants the selection holds now.
func (s selection) count(ctx context.Context) (int64, error) {
	var n int64
	err := s.each(ctx, func(string) error { n++; return nil })
	return n, err
}

// migrateFunc migrates one tenant and records the result, as
// Orchestrator.MigrateTenant does.
type migrateFunc func(ctx context.Context, id string) (int64, error)

// fleetOpts tunes a fleet run.
type fleetOpts struct {
	concurrency  int
	retries      int
	retryBackoff time.Duration
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
	selected    int64 // tenants handed to workers
	completed   int64
	failed      int64
	retried     int64 // tenants that needed more than one attempt
	removed     int64 // tenants removed from the control plane meanwhile
	failures    []tenantFailure
	interrupted bool  // ctx ended before every selected tenant was tried
	scanErr     error // reading the control plane failed mid-run
	duration    time.Duration
}

// ok reports whether every selected tenant ended COMPLETED.
func (r fleetResult) ok() bool {
	return r.failed == 0 && !r.interrupted && r.scanErr == nil
}

// runFleet migrates every tenant of each with opts.concurrency workers,
// retrying retryable failures, and reports progress to prog. When ctx ends,
// no new tenant is started, but the running ones finish: a migration holds
// the tenant's lock and may run statements that are not transactional.
func runFleet(ctx context.Context, each func(context.Context, func(string) error) error, migrate migrateFunc, opts fleetOpts, prog *progress) fleetResult {
	start := time.Now()
	var (
		mu  sync.Mutex
		res fleetResult
	)
	ids := make(chan string)
	var eg errgroup.Group
	eg.Go(func() error {
		defer close(ids)
		err := each(ctx, func(id string) error {
			select {
			case ids <- id:
			case <-ctx.Done():
				return ctx.Err()
			}
			mu.Lock()
			res.selected++
			n := res.selected
			mu.Unlock()
			prog.RaiseTotal(n)
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			res.interrupted = true
		case err != nil:
			res.scanErr = err
		}
		return nil
	})
	for range opts.concurrency {
		eg.Go(func() error {
			for id := range ids {
				_, attempts, err := migrateWithRetry(ctx, migrate, id, opts.retries, opts.retryBackoff)
				// A tenant removed while the run went on is no failure.
				removed := errors.Is(err, tenantmigrate.ErrTenantNotFound)
				prog.Done(err != nil && !removed)
				mu.Lock()
				if attempts > 1 {
					res.retried++
				}
				switch {
				case removed:
					res.removed++
				case err != nil:
					res.failed++
					if len(res.failures) < maxShownErrors {
						res.failures = append(res.failures, tenantFailure{id: id, err: err})
					}
				default:
					res.completed++
				}
				mu.Unlock()
			}
			return nil
		})
	}
	_ = eg.Wait() // the goroutines record their errors in res
	prog.SetTotal(res.selected)
	res.duration = time.Since(start)
	return res
}

// migrateWithRetry migrates tenant id, trying again up to retries times,
// after retryBackoff and then doubling waits, while the failure is
// retryable (migrator.IsRetryable: lock timeouts, lost connections,
// serialization failures, ...). It returns the version, the number of
// attempts and the last error. The migration itself is not cancelled by
// ctx; the waits between attempts are.
func migrateWithRetry(ctx context.Context, migrate migrateFunc, id string, retries int, retryBackoff time.Duration) (int64, int, error) {
	wait := retryBackoff
	for attempt := 1; ; attempt++ {
		v, err := migrate(context.WithoutCancel(ctx), id)
		if err == nil || attempt > retries || !migrator.IsRetryable(err) {
			return v, attempt, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return v, attempt, err
		case <-timer.C:
		}
		wait *= 2
	}
}

// printSummary prints what a run did.
func printSummary(w io.Writer, res fleetResult, latest int64) {
	rate := 0.0
	if s := res.duration.Seconds(); s > 0 {
		rate = float64(res.completed+res.failed) / s
	}
	verb := "migrated %s to version %d"
	if res.failed > 0 {
		verb = "ran %s toward version %d"
	}
	fmt.Fprintf(w, verb+" in %s (%.1f tenants/s): %d completed, %d failed",
		pluralize(res.completed+res.failed, "tenant"), latest, durationText(res.duration), rate, res.completed, res.failed)
	if res.retried > 0 {
		fmt.Fprintf(w, ", %d needed a retry", res.retried)
	}
	if res.removed > 0 {
		fmt.Fprintf(w, ", %d removed from the control plane meanwhile", res.removed)
	}
	fmt.Fprintln(w)
	if res.interrupted {
		fmt.Fprintln(w, "interrupted: the tenants not started yet were left as they are")
	}
	if res.scanErr != nil {
		fmt.Fprintf(w, "stopped early: reading the control plane failed: %v\n", res.scanErr)
	}
	if res.failed == 0 {
		return
	}
	if int64(len(res.failures)) < res.failed {
		fmt.Fprintf(w, "failed tenants (first %d of %d; all of them: tenantmigrate status):\n", len(res.failures), res.failed)
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
