package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

func newTenantsCmd(g *globalOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Add, list, show and remove the tenants of the control plane",
		Long: `tenants manages the tenants listed in the control plane (--database-url).
Tenant database URLs are stored encrypted with --encryption-key and only ever
shown with their password masked.`,
		Example: `  export DATABASE_URL=postgres://admin@cp-host/control ENCRYPTION_KEY=...
  tenantmigrate tenants add acme postgres://app:secret@db1/acme --label tier=gold
  tenantmigrate tenants list
  tenantmigrate tenants label acme canary=true tier-
  tenantmigrate tenants list --selector 'tier=gold,!canary'
  tenantmigrate tenants get acme --json
  tenantmigrate tenants rm acme`,
		Args: cobra.NoArgs, // "unknown command" for a wrong subcommand
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTenantsAddCmd(g), newTenantsListCmd(g), newTenantsGetCmd(g), newTenantsRmCmd(g), newTenantsLabelCmd(g))
	return cmd
}

// addJSONFlag adds --json (OUTPUT_JSON) to cmd.
func addJSONFlag(cmd *cobra.Command, v *bool) {
	cmd.Flags().BoolVar(v, "json", false, "print JSON instead of text")
	bindEnv(cmd.Flags(), "json", "OUTPUT_JSON")
}

func newTenantsAddCmd(g *globalOpts) *cobra.Command {
	var (
		schema    string
		provision bool
		labelArgs []string
	)
	cmd := &cobra.Command{
		Use:   "add ID [TENANT_DATABASE_URL]",
		Short: "Register a tenant and its database (or schema), or provision a new database for it",
		Long: `add registers tenant ID with the postgres:// URL of its database. With
--schema the tenant is one schema of that database (schema-per-tenant);
without, it has the whole database. The tenant is not migrated now: the
gateway or "tenantmigrate migrate" does that.

With --provision (and no URL), add creates the tenant's database instead: a
clone of a template database kept at the latest version on the
--provision-url server (built from --migrations on first use), and registers
it COMPLETED at the latest version. See the README, "Provisioning tenants".

ID is 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or a
digit. A URL of "-" is read from the first line of standard input, which keeps
the password out of the shell history and the process list.

--label KEY=VALUE (repeatable) sets a label: keys are 1-63 characters of
a-z, 0-9, '_', '.', '-' and '/', values at most 255 characters, at most 32
labels. Selectors pick tenants by them (tenants list --selector, rollout
canaries).`,
		Example: `  tenantmigrate tenants add acme postgres://app:secret@db1:5432/acme
  tenantmigrate tenants add acme postgres://app:secret@db1/acme --label tier=gold --label server=db1
  tenantmigrate tenants add globex postgres://app:secret@db1/shared --schema globex
  echo "$TENANT_URL" | tenantmigrate tenants add initech -
  PROVISION_URL=postgres://provisioner:secret@db1/postgres tenantmigrate tenants add hooli --provision --migrations ./migrations`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if provision {
				if len(args) == 2 || schema != "" {
					return usageErr("--provision creates the tenant's database: give no TENANT_DATABASE_URL and no --schema")
				}
				if len(labelArgs) > 0 {
					return usageErr("--provision sets no labels: set them afterwards with tenants label")
				}
				return runTenantsProvision(cmd, g, args[0])
			}
			if len(args) != 2 {
				return usageErr("tenants add needs ID and TENANT_DATABASE_URL (or --provision to create the database)")
			}
			return runTenantsAdd(cmd, g, args[0], args[1], schema, labelArgs)
		},
	}
	cmd.Flags().StringVar(&schema, "schema", "", "the tenant's schema in that database (schema-per-tenant); none: the whole database")
	bindEnv(cmd.Flags(), "schema", "TENANT_SCHEMA")
	cmd.Flags().BoolVar(&provision, "provision", false, "create the tenant's database from the template on the --provision-url server instead of registering one")
	bindEnv(cmd.Flags(), "provision", "TENANT_PROVISION")
	cmd.Flags().StringSliceVar(&labelArgs, "label", nil, "set label KEY=VALUE (repeatable, or comma-separated; quote a value holding a comma as CSV does)")
	bindEnv(cmd.Flags(), "label", "TENANT_LABELS")
	return cmd
}

// runTenantsProvision is tenants add --provision.
func runTenantsProvision(cmd *cobra.Command, g *globalOpts, id string) error {
	if err := tenantmigrate.ValidateTenantID(id); err != nil {
		return failedErr(err)
	}
	if g.provisionURL == "" {
		return usageErr("--provision needs --provision-url or PROVISION_URL: the server where provisioned tenants' databases go")
	}
	if g.encryptionKey == "" && g.databaseURL != "" {
		return failedErr(errNoKey)
	}
	logger, err := cliLogger(cmd, g, g.stderr)
	if err != nil {
		return err
	}
	orch, err := openOrchestrator(cmd.Context(), g, logger, true, nil)
	if err != nil {
		return err
	}
	defer orch.Close()
	t, err := orch.ProvisionTenant(cmd.Context(), id)
	switch {
	case errors.Is(err, tenantmigrate.ErrTenantExists):
		return failedErr(fmt.Errorf("tenant %s already exists (remove it first with: tenantmigrate tenants rm %s)", id, id))
	case err != nil:
		return failedErr(tenantmigrate.RedactError(err, g.provisionURL, g.provisionTenantURLTemplate))
	}
	fmt.Fprintf(g.stdout, "provisioned tenant %s\n", t.ID)
	return printTenant(g.stdout, t)
}

// parseLabelFlags turns --label KEY=VALUE arguments into labels.
func parseLabelFlags(args []string) (map[string]string, error) {
	patch, err := tenantmigrate.ParseLabelArgs(args)
	if err != nil {
		return nil, usageErr("--label: %v", err)
	}
	out := make(map[string]string, len(patch))
	for k, v := range patch {
		if v == nil {
			return nil, usageErr("--label %s-: a new tenant has no label to remove; use KEY=VALUE", k)
		}
		out[k] = *v
	}
	if err := tenantmigrate.ValidateLabels(out); err != nil {
		return nil, usageErr("--label: %v", err)
	}
	return out, nil
}

func runTenantsAdd(cmd *cobra.Command, g *globalOpts, id, dbURL, schema string, labelArgs []string) error {
	labels, err := parseLabelFlags(labelArgs)
	if err != nil {
		return err
	}
	if dbURL == "-" {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return failedErr(fmt.Errorf("read the database URL from standard input: %w", err))
		}
		dbURL = strings.TrimSpace(line)
	}
	// Validate before connecting. These messages never hold the password.
	if err := tenantmigrate.ValidateTenantID(id); err != nil {
		return failedErr(err)
	}
	if err := tenantmigrate.ValidateDatabaseURL(dbURL); err != nil {
		return failedErr(err)
	}
	if schema != "" {
		if err := tenantmigrate.ValidateSchemaName(schema); err != nil {
			return failedErr(err)
		}
	}
	orch, err := openKeyedOrchestrator(cmd, g)
	if err != nil {
		return err
	}
	defer orch.Close()

	t, err := orch.CreateTenant(cmd.Context(), tenantmigrate.Tenant{ID: id, DatabaseURL: dbURL, Schema: schema, Labels: labels})
	switch {
	case errors.Is(err, tenantmigrate.ErrTenantExists):
		return failedErr(fmt.Errorf("tenant %s already exists (remove it first with: tenantmigrate tenants rm %s)", id, id))
	case errors.Is(err, tenantmigrate.ErrNoEncryptionKey):
		return failedErr(errNoKey)
	case err != nil:
		return failedErr(err)
	}
	fmt.Fprintf(g.stdout, "added tenant %s\n", t.ID)
	return printTenant(g.stdout, t)
}

func newTenantsListCmd(g *globalOpts) *cobra.Command {
	var (
		asJSON   bool
		selector string
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every tenant with its migration state",
		Long: `list prints every tenant of the control plane, in the order they were added:
ID, SCHEMA, VERSION, STATUS, URL (password masked) and UPDATED. A VERSION or
STATUS of "-" means never migrated. With --json it prints a JSON array of
objects shaped like the admin API's tenants. It reads the control plane page
by page, so it works for fleets of any size.

--selector lists only the tenants whose labels match, in kubectl's equality
form: k=v, k!=v, k (has the label), !k (has not), comma-separated, all of
which must hold.`,
		Example: `  tenantmigrate tenants list
  tenantmigrate tenants list --selector 'tier=gold,server!=db3,!canary'
  tenantmigrate tenants list --json | jq -r '.[] | select(.migrationsStatus != "COMPLETED") | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTenantsList(cmd, g, asJSON, selector)
		},
	}
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().StringVar(&selector, "selector", "", "only tenants whose labels match, e.g. tier=gold,!canary")
	bindEnv(cmd.Flags(), "selector", "TENANT_SELECTOR")
	return cmd
}

func runTenantsList(cmd *cobra.Command, g *globalOpts, asJSON bool, selector string) error {
	if err := tenantmigrate.ValidateSelector(selector); err != nil {
		return usageErr("--selector: %v", err)
	}
	orch, err := openKeyedOrchestrator(cmd, g)
	if err != nil {
		return err
	}
	defer orch.Close()
	ctx := cmd.Context()
	if asJSON {
		return listTenantsJSON(ctx, orch, selector, g.stdout)
	}
	return listTenantsTable(ctx, orch, selector, g.stdout)
}

// openKeyedOrchestrator opens the Orchestrator of a command that reads
// tenant URLs: without the key it fails (exit 1) naming ENCRYPTION_KEY.
func openKeyedOrchestrator(cmd *cobra.Command, g *globalOpts) (*tenantmigrate.Orchestrator, error) {
	return openInspectOrchestrator(cmd, g, false, func() error {
		if g.databaseURL != "" && g.encryptionKey == "" {
			return failedErr(errNoKey)
		}
		return nil
	})
}

// openInspectOrchestrator opens the read-only Orchestrator of a command that
// only inspects or edits the control plane (no migration runs, no queue
// workers), logging as the global flags say. withMigrations loads
// --migrations when it is given (status shows the latest version); the
// tenants commands never read it, so a migration file cannot stop them.
// check, if not nil, runs once the logger is set up, before the control
// plane is opened.
func openInspectOrchestrator(cmd *cobra.Command, g *globalOpts, withMigrations bool, check func() error) (*tenantmigrate.Orchestrator, error) {
	logger, err := cliLogger(cmd, g, g.stderr)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return openOrchestrator(cmd.Context(), g, logger, false, func(cfg *tenantmigrate.Config) {
		inspectOnly(cfg)
		if !withMigrations {
			cfg.Migrations, cfg.GoMigrations = nil, nil
		}
	})
}

// listTenantsJSON streams a JSON array, one tenant per line.
func listTenantsJSON(ctx context.Context, orch *tenantmigrate.Orchestrator, selector string, w io.Writer) error {
	bw := bufio.NewWriter(w)
	n := 0
	bw.WriteString("[")
	err := eachTenant(ctx, orch, selector, func(t tenantmigrate.Tenant) error {
		b, err := json.Marshal(httpapi.TenantToJSON(t))
		if err != nil {
			return err
		}
		if n > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n  ")
		bw.Write(b)
		n++
		return nil
	})
	if err != nil {
		return failedErr(fmt.Errorf("list tenants: %w", err))
	}
	if n > 0 {
		bw.WriteString("\n")
	}
	bw.WriteString("]\n")
	return bw.Flush()
}

// listTenantsTable prints a table, flushed every page so memory stays flat
// (columns may widen from one page to the next).
func listTenantsTable(ctx context.Context, orch *tenantmigrate.Orchestrator, selector string, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCHEMA\tVERSION\tSTATUS\tURL\tUPDATED\tLABELS")
	n := 0
	err := eachTenant(ctx, orch, selector, func(t tenantmigrate.Tenant) error {
		schema := t.Schema
		if schema == "" {
			schema = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, schema, versionText(t.MigrationsVersion),
			statusText(t.MigrationsStatus), t.RedactedURL(), timeText(t.UpdatedAt), labelsText(t.Labels))
		n++
		if n%listPageSize == 0 {
			return tw.Flush()
		}
		return nil
	})
	if err != nil {
		_ = tw.Flush()
		return failedErr(fmt.Errorf("list tenants: %w", err))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case n == 0 && selector != "":
		fmt.Fprintf(w, "(no tenant matches the selector %s)\n", selector)
	case n == 0:
		fmt.Fprintln(w, "(no tenants: add one with tenantmigrate tenants add ID URL)")
	}
	return nil
}

func newTenantsGetCmd(g *globalOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one tenant with its migration state and last error",
		Example: `  tenantmigrate tenants get acme
  tenantmigrate tenants get acme --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			orch, err := openKeyedOrchestrator(cmd, g)
			if err != nil {
				return err
			}
			defer orch.Close()
			t, err := orch.GetTenant(cmd.Context(), args[0])
			if err != nil {
				return tenantErr(args[0], err)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(httpapi.TenantToJSON(t))
			}
			return printTenant(g.stdout, t)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func newTenantsRmCmd(g *globalOpts) *cobra.Command {
	var dropDatabase bool
	cmd := &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a tenant from the control plane (its database is left alone)",
		Long: `rm removes tenant ID from the control plane. Its database or schema is not
touched: drop it yourself if you mean to. It needs no encryption key.

With --drop-database, a tenant created by tenants add --provision has its
database dropped too (WITH (FORCE): its sessions are ended), on the
--provision-url server; any other tenant is refused, and nothing is changed.`,
		Example: `  tenantmigrate tenants rm acme
  PROVISION_URL=postgres://provisioner:secret@db1/postgres tenantmigrate tenants rm hooli --drop-database`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dropDatabase && g.provisionURL == "" {
				return usageErr("--drop-database needs --provision-url or PROVISION_URL: the server the tenant's database was provisioned on")
			}
			orch, err := openInspectOrchestrator(cmd, g, false, nil)
			if err != nil {
				return err
			}
			defer orch.Close()
			if dropDatabase {
				if err := orch.DeprovisionTenant(cmd.Context(), args[0]); err != nil {
					return tenantErr(args[0], tenantmigrate.RedactError(err, g.provisionURL))
				}
				fmt.Fprintf(g.stdout, "removed tenant %s and dropped its database\n", args[0])
				return nil
			}
			if err := orch.DeleteTenant(cmd.Context(), args[0]); err != nil {
				return tenantErr(args[0], err)
			}
			fmt.Fprintf(g.stdout, "removed tenant %s (its database was left as it is)\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&dropDatabase, "drop-database", false, "also drop the tenant's database, if tenants add --provision created it (refused for any other tenant)")
	bindEnv(cmd.Flags(), "drop-database", "TENANT_DROP_DATABASE")
	return cmd
}

// tenantErr turns the error of a lookup of tenant id into an exit error.
func tenantErr(id string, err error) error {
	switch {
	case errors.Is(err, tenantmigrate.ErrTenantNotFound):
		return failedErr(fmt.Errorf("no tenant %s", quoteID(id)))
	case errors.Is(err, tenantmigrate.ErrNoEncryptionKey):
		return failedErr(errNoKey)
	}
	return failedErr(err)
}

// quoteID shows a tenant id as it is when valid, quoted and cut otherwise.
func quoteID(id string) string {
	if tenantmigrate.ValidateTenantID(id) == nil {
		return id
	}
	if len(id) > 70 {
		id = id[:70] + "..."
	}
	return fmt.Sprintf("%q", id)
}

// printTenant prints one tenant as aligned "key: value" lines.
func printTenant(w io.Writer, t tenantmigrate.Tenant) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	schema := t.Schema
	if schema == "" {
		schema = "- (the whole database)"
	}
	fmt.Fprintf(tw, "id:\t%s\n", t.ID)
	fmt.Fprintf(tw, "url:\t%s\n", t.RedactedURL())
	fmt.Fprintf(tw, "schema:\t%s\n", schema)
	fmt.Fprintf(tw, "version:\t%s\n", versionText(t.MigrationsVersion))
	fmt.Fprintf(tw, "status:\t%s\n", statusText(t.MigrationsStatus))
	fmt.Fprintf(tw, "labels:\t%s\n", labelsText(t.Labels))
	if t.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", oneLine(tenantmigrate.RedactString(t.LastError, t.DatabaseURL), 2000))
	}
	fmt.Fprintf(tw, "created:\t%s\n", timeText(t.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", timeText(t.UpdatedAt))
	return tw.Flush()
}

// labelsText shows labels as "k=v,k2=v2" in key order, "-" for none.
func labelsText(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	return tenantmigrate.FormatLabels(m)
}

func newTenantsLabelCmd(g *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "label ID KEY=VALUE... | KEY-...",
		Short: "Set or remove labels of a tenant",
		Long: `label changes the labels of tenant ID, as kubectl label does: KEY=VALUE sets
a label, KEY- removes it; other labels are kept. Keys are 1-63 characters of
a-z, 0-9, '_', '.', '-' and '/', values at most 255 characters, at most 32
labels per tenant. Labels never change the tenant's migration state. Like
tenants get, it needs the encryption key.`,
		Example: `  tenantmigrate tenants label acme tier=gold server=db1
  tenantmigrate tenants label acme canary=true
  tenantmigrate tenants label acme canary-`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := tenantmigrate.ValidateTenantID(id); err != nil {
				return usageErr("%v", err)
			}
			patch, err := tenantmigrate.ParseLabelArgs(args[1:])
			if err != nil {
				return usageErr("%v", err)
			}
			orch, err := openKeyedOrchestrator(cmd, g)
			if err != nil {
				return err
			}
			defer orch.Close()
			t, err := orch.PatchTenant(cmd.Context(), id, tenantmigrate.TenantPatch{Labels: patch})
			if errors.Is(err, tenantmigrate.ErrInvalid) {
				return failedErr(err)
			}
			if err != nil {
				return tenantErr(id, err)
			}
			fmt.Fprintf(g.stdout, "labelled tenant %s: %s\n", t.ID, labelsText(t.Labels))
			return nil
		},
	}
}
