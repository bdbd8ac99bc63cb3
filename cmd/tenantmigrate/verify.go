package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate"
)

// verifyPageSize is how many tenants verify reads from the control plane at
// a time.
const verifyPageSize = 200

type verifyOpts struct {
	tenants       []string
	asJSON        bool
	concurrency   int
	tenantTimeout time.Duration
}

func newVerifyCmd(g *globalOpts) *cobra.Command {
	var o verifyOpts
	cmd := &cobra.Command{
		Use:   "verify [--tenant ID]... [--json]",
		Short: "Check tenant databases against the control plane and the migrations",
		Long: `verify reads each tenant database's goose_db_version, in a read-only session
and without taking the tenant's lock, and compares it with the control plane
and with the migrations (--migrations). It reports the tenants that are:

  ahead          the database has versions the migrations lack (a newer
                 build, or someone else, applied them)
  inconsistent   the control plane records another version than the
                 database's highest, or the database lacks versions below
                 its highest (goose refuses to migrate it)
  unreachable    the database could not be read (connection, permission,
                 --tenant-timeout)

and counts the others. A tenant merely behind the latest version is
consistent (tenantmigrate migrate brings it up). It also reports migrations
that were edited or removed since they were applied (see
--allow-changed-migrations). A tenant being migrated while verify runs may
show as inconsistent: run verify again.

Tenants are read from the control plane a page at a time and checked
--concurrency at a time; problems are printed as they are found. With --json
the output is one JSON object: {"latestVersion", "changedMigrations",
"tenants": [the tenants with problems], "summary"}.

Exit status: 0 when every tenant is consistent, 1 when any problem was found
(or the control plane could not be read), 2 on a usage or configuration
error.`,
		Example: `  # The whole fleet
  tenantmigrate verify --migrations ./migrations

  # Two tenants, as JSON
  tenantmigrate verify --tenant acme --tenant globex --json | jq '.tenants[].problems'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVerify(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.tenants, "tenant", nil, "verify this tenant only (repeatable; comma-separated in the environment)")
	bindEnv(f, "tenant", "VERIFY_TENANTS")
	addJSONFlag(cmd, &o.asJSON)
	f.IntVar(&o.concurrency, "concurrency", 4, "tenant databases read at once")
	bindEnv(f, "concurrency", "VERIFY_CONCURRENCY")
	f.DurationVar(&o.tenantTimeout, "tenant-timeout", 30*time.Second, "longest wait for one tenant database, connecting included, before it counts as unreachable")
	bindEnv(f, "tenant-timeout", "VERIFY_TENANT_TIMEOUT")
	return cmd
}

func (o *verifyOpts) validate() error {
	if o.concurrency < 1 {
		return usageErr("--concurrency must be at least 1")
	}
	if o.tenantTimeout <= 0 {
		return usageErr("--tenant-timeout must be positive")
	}
	for _, id := range o.tenants {
		if err := tenantmigrate.ValidateTenantID(id); err != nil {
			return usageErr("--tenant: %v", err)
		}
	}
	return nil
}

func runVerify(cmd *cobra.Command, g *globalOpts, o *verifyOpts) error {
	if err := o.validate(); err != nil {
		return err
	}
	ctx := cmd.Context()
	logger, err := cliLogger(cmd, g, g.stderr)
	if err != nil {
		return err
	}
	if g.databaseURL != "" && g.encryptionKey == "" {
		return usageErr("%v", errNoKey)
	}
	orch, err := openOrchestrator(ctx, g, logger, true, func(cfg *tenantmigrate.Config) {
		inspectOnly(cfg)                  // changed migrations are one of the things verify reports
		cfg.Queue.Workers = o.concurrency // sizes the control-plane pool
	})
	if err != nil {
		return err
	}
	defer orch.Close()

	out := newVerifyOutput(g.stdout, o.asJSON, orch.Latest(), orch.ChangedMigrations())
	sum, err := verifyFleet(ctx, orch, o, out.tenant)
	if ferr := out.finish(sum); ferr != nil && err == nil {
		err = ferr
	}
	switch {
	case err != nil:
		return failedErr(err)
	case ctx.Err() != nil:
		return failedErr(errors.New("interrupted"))
	case sum.Problems > 0 || len(orch.ChangedMigrations()) > 0:
		return failedErr(fmt.Errorf("found problems: %s", sum.problemText(len(orch.ChangedMigrations()))))
	}
	return nil
}

// verifySummary counts what verify found.
type verifySummary struct {
	Verified     int64 `json:"verified"`
	OK           int64 `json:"ok"`
	Behind       int64 `json:"behind"`
	Ahead        int64 `json:"ahead"`
	Inconsistent int64 `json:"inconsistent"`
	Unreachable  int64 `json:"unreachable"`
	// Problems counts the tenants with at least one problem.
	Problems int64 `json:"problems"`
}

func (s *verifySummary) add(v tenantmigrate.TenantVerification, latest int64) {
	s.Verified++
	switch {
	case v.OK():
		s.OK++
		if v.DatabaseVersion < latest {
			s.Behind++
		}
		return
	case v.Unreachable():
		s.Unreachable++
	}
	if v.IsAhead() {
		s.Ahead++
	}
	if v.Inconsistent() {
		s.Inconsistent++
	}
	s.Problems++
}

// problemText is the exit message: what was found.
func (s verifySummary) problemText(changedMigrations int) string {
	var parts []string
	for _, p := range []struct {
		n    int64
		what string
	}{
		{int64(changedMigrations), "changed migration"},
		{s.Ahead, "tenant ahead of the migrations"},
		{s.Inconsistent, "inconsistent tenant"},
		{s.Unreachable, "unreachable tenant"},
	} {
		if p.n > 0 {
			parts = append(parts, pluralize(p.n, p.what))
		}
	}
	return strings.Join(parts, ", ")
}

// verifyFleet verifies the tenants of o (all of them, or o.tenants) with
// o.concurrency workers and calls report, on this goroutine, with each
// result as it comes. Memory stays flat: one page of tenants is read at a
// time, and results are not kept. On cancellation it stops starting
// tenants and returns what it counted; the caller checks ctx.
func verifyFleet(ctx context.Context, orch *tenantmigrate.Orchestrator, o *verifyOpts, report func(tenantmigrate.TenantVerification) error) (verifySummary, error) {
	var (
		sum     verifySummary
		tenants = make(chan tenantmigrate.Tenant)
		results = make(chan tenantmigrate.TenantVerification)
		readErr error
	)
	var producer errgroup.Group
	producer.Go(func() error {
		defer close(tenants)
		readErr = eachVerifiedTenant(ctx, orch, o.tenants, func(t tenantmigrate.Tenant) error {
			select {
			case tenants <- t:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		return nil
	})
	var workers errgroup.Group
	for range o.concurrency {
		workers.Go(func() error {
			for t := range tenants {
				tctx, cancel := context.WithTimeout(ctx, o.tenantTimeout)
				v := orch.VerifyTenant(tctx, t)
				cancel()
				if v.Err != nil {
					v.Err = tenantmigrate.RedactError(v.Err, t.DatabaseURL)
				}
				results <- v
			}
			return nil
		})
	}
	go func() {
		_ = workers.Wait()
		close(results)
	}()

	var reportErr error
	for v := range results {
		sum.add(v, orch.Latest())
		if reportErr == nil && !v.OK() {
			reportErr = report(v)
		}
	}
	_ = producer.Wait()
	if errors.Is(readErr, context.Canceled) && ctx.Err() != nil {
		readErr = nil // reported as an interruption
	}
	return sum, errors.Join(readErr, reportErr)
}

// eachVerifiedTenant calls fn with each explicitly named tenant, or, with
// none named, with every tenant of the control plane, a page at a time.
func eachVerifiedTenant(ctx context.Context, orch *tenantmigrate.Orchestrator, ids []string, fn func(tenantmigrate.Tenant) error) error {
	if len(ids) > 0 {
		for _, id := range dedupeIDs(ids) {
			t, err := orch.GetTenant(ctx, id)
			if err != nil {
				return fmt.Errorf("tenant %s: %w", id, err)
			}
			if err := fn(t); err != nil {
				return err
			}
		}
		return nil
	}
	var cursor int64
	for {
		page, next, err := orch.ListTenants(ctx, cursor, verifyPageSize)
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		for _, t := range page {
			if err := fn(t); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// dedupeIDs returns ids without repeats, in their first order.
func dedupeIDs(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// verifyOutput prints verify's findings as they come, as text or as one
// streamed JSON object.
type verifyOutput struct {
	w       *bufio.Writer
	asJSON  bool
	latest  int64
	changed []tenantmigrate.ChangedMigration
	n       int // tenants printed
}

// verifyTenantJSON is a tenant with problems in verify --json.
type verifyTenantJSON struct {
	ID string `json:"id"`
	// Problems are "ahead", "inconsistent" and "unreachable".
	Problems            []string `json:"problems"`
	ControlPlaneVersion *int64   `json:"controlPlaneVersion"`
	// DatabaseVersion is null when the database could not be read.
	DatabaseVersion *int64  `json:"databaseVersion"`
	Ahead           []int64 `json:"ahead"`
	Gaps            []int64 `json:"gaps"`
	// Duplicates are versions recorded more than once (applied twice).
	Duplicates []int64 `json:"duplicates"`
	// VersionTables lists the version tables when there are several.
	VersionTables []string `json:"versionTables"`
	// ConfiguredVersionTable is --version-table when it does not exist but
	// VersionTables' one does.
	ConfiguredVersionTable string `json:"configuredVersionTable,omitempty"`
	// SchemaTenantVersionTables are the schema tenants' version tables in a
	// database tenant's database, which refuse it.
	SchemaTenantVersionTables []string `json:"schemaTenantVersionTables,omitempty"`
	// DirtyVersion is the version a golang-migrate tenant is dirty at; null when clean.
	DirtyVersion *int64   `json:"dirtyVersion"`
	Error        string   `json:"error,omitempty"`
	Details      []string `json:"details"`
}

type changedMigrationJSON struct {
	Version          int64  `json:"version"`
	Name             string `json:"name"`
	Change           string `json:"change"`
	RecordedChecksum string `json:"recordedChecksum"`
	SourceChecksum   string `json:"sourceChecksum"`
}

func newVerifyOutput(w io.Writer, asJSON bool, latest int64, changed []tenantmigrate.ChangedMigration) *verifyOutput {
	out := &verifyOutput{w: bufio.NewWriter(w), asJSON: asJSON, latest: latest, changed: changed}
	if asJSON {
		changedJSON := make([]changedMigrationJSON, len(changed))
		for i, c := range changed {
			changedJSON[i] = changedMigrationJSON{Version: c.Version, Name: c.Name, Change: string(c.Change), RecordedChecksum: c.RecordedChecksum, SourceChecksum: c.SourceChecksum}
		}
		b, _ := json.Marshal(changedJSON) // plain structs: cannot fail
		fmt.Fprintf(out.w, "{\n  \"latestVersion\": %d,\n  \"changedMigrations\": %s,\n  \"tenants\": [", latest, b)
		return out
	}
	for _, c := range changed {
		fmt.Fprintf(out.w, "migrations: %s: changed since it was applied (%s)\n", c.Name, c.Change)
	}
	return out
}

// tenant prints one tenant with problems.
func (out *verifyOutput) tenant(v tenantmigrate.TenantVerification) error {
	out.n++
	if !out.asJSON {
		for _, p := range v.Problems() {
			fmt.Fprintf(out.w, "%s: %s\n", v.TenantID, oneLine(p, 300))
		}
		return out.w.Flush()
	}
	j := verifyTenantJSON{
		ID:                     v.TenantID,
		Problems:               []string{},
		ControlPlaneVersion:    v.ControlPlaneVersion,
		Ahead:                  nonNil(v.Ahead),
		Gaps:                   nonNil(v.Gaps),
		Duplicates:             nonNil(v.Duplicates),
		VersionTables:          v.VersionTables,
		ConfiguredVersionTable: v.ConfiguredVersionTable,
		Details:                v.Problems(),
	}
	j.SchemaTenantVersionTables = v.SchemaTenantVersionTables
	if v.Dirty {
		j.DirtyVersion = &v.DirtyVersion
	}
	if j.VersionTables == nil {
		j.VersionTables = []string{}
	}
	if v.Unreachable() {
		j.Problems = append(j.Problems, "unreachable")
		j.Error = v.Err.Error()
	} else {
		j.DatabaseVersion = &v.DatabaseVersion
	}
	if v.IsAhead() {
		j.Problems = append(j.Problems, "ahead")
	}
	if v.Inconsistent() {
		j.Problems = append(j.Problems, "inconsistent")
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if out.n > 1 {
		out.w.WriteString(",")
	}
	out.w.WriteString("\n    ")
	out.w.Write(b)
	return nil
}

// finish prints the summary.
func (out *verifyOutput) finish(sum verifySummary) error {
	if out.asJSON {
		b, _ := json.Marshal(sum) // plain struct: cannot fail
		if out.n > 0 {
			out.w.WriteString("\n  ")
		}
		fmt.Fprintf(out.w, "],\n  \"summary\": %s\n}\n", b)
		return out.w.Flush()
	}
	fmt.Fprintf(out.w, "verified %s against migrations up to version %d: %d consistent",
		pluralize(sum.Verified, "tenant"), out.latest, sum.OK)
	if sum.Behind > 0 {
		fmt.Fprintf(out.w, " (%d of them behind the latest version)", sum.Behind)
	}
	if sum.Problems > 0 {
		fmt.Fprintf(out.w, ", %d with problems (%d ahead, %d inconsistent, %d unreachable)",
			sum.Problems, sum.Ahead, sum.Inconsistent, sum.Unreachable)
	}
	fmt.Fprintln(out.w)
	return out.w.Flush()
}

func nonNil(vs []int64) []int64 {
	if vs == nil {
		return []int64{}
	}
	return vs
}
