package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// defaultHistoryLimit is how many runs history shows without --limit.
const defaultHistoryLimit = 20

func newHistoryCmd(g *globalOpts) *cobra.Command {
	var (
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "history ID",
		Short: "Show a tenant's migration runs, newest first",
		Long: `history prints the runs of one tenant's migrations that the control plane keeps
(every attempt, whatever ran it: a request, a queued job, the admin API, migrate),
newest first: STARTED, DURATION, TRIGGER, ATTEMPT, FROM and TO versions, RESULT,
PROCESS (host:pid) and the error of a failed run. A version of "-" is unknown
(never migrated before, or unreadable after a failure). With --json it prints a
JSON array of objects shaped like the admin API's runs. Runs are kept for
serve's --history-retention (30 days by default). It reads the control plane
only, and needs no encryption key.`,
		Example: `  tenantmigrate history acme
  tenantmigrate history acme --limit 0 --json | jq -r '.[] | select(.result == "failed") | .error'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tenantmigrate.ValidateTenantID(args[0]); err != nil {
				return failedErr(err)
			}
			if limit < 0 {
				return usageErr("--limit must not be negative")
			}
			orch, err := openInspectOrchestrator(cmd, g, false, nil)
			if err != nil {
				return err
			}
			defer orch.Close()
			runs, err := tenantRuns(cmd.Context(), orch, args[0], limit)
			if err != nil {
				return tenantErr(args[0], err)
			}
			if asJSON {
				out := make([]httpapi.RunJSON, len(runs))
				for i, r := range runs {
					out[i] = httpapi.RunToJSON(r)
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			return printRuns(g.stdout, args[0], runs)
		},
	}
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().IntVar(&limit, "limit", defaultHistoryLimit, "show the latest N runs (0: every run kept)")
	bindEnv(cmd.Flags(), "limit", "HISTORY_LIMIT")
	return cmd
}

// tenantRuns reads up to limit runs of tenant id (every run when 0), newest
// first, a page at a time.
func tenantRuns(ctx context.Context, orch *tenantmigrate.Orchestrator, id string, limit int) ([]tenantmigrate.Run, error) {
	var (
		all    []tenantmigrate.Run
		cursor string
	)
	for {
		page := tenantmigrate.MaxRunsPageSize
		if limit > 0 {
			page = min(page, limit-len(all))
		}
		runs, next, err := orch.TenantRuns(ctx, id, cursor, page)
		if err != nil {
			return nil, err
		}
		all = append(all, runs...)
		if next == "" || (limit > 0 && len(all) >= limit) {
			return all, nil
		}
		cursor = next
	}
}

// printRuns prints runs as a table.
func printRuns(w io.Writer, id string, runs []tenantmigrate.Run) error {
	if len(runs) == 0 {
		_, err := fmt.Fprintf(w, "tenant %s has no runs in the history\n", id)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tDURATION\tTRIGGER\tATTEMPT\tFROM\tTO\tRESULT\tPROCESS\tERROR")
	for _, r := range runs {
		attempt := "-"
		if r.Attempt > 0 {
			attempt = strconv.Itoa(r.Attempt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", timeText(r.StartedAt), durationText(r.Duration()),
			r.Trigger, attempt, versionText(r.FromVersion), versionText(r.ToVersion), r.Result, r.Process, oneLine(r.Error, 200))
	}
	return tw.Flush()
}
