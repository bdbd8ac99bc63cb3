package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// neverMigratedKey is the byStatus key of tenants never migrated, as in the
// admin API.
const neverMigratedKey = "NEVER_MIGRATED"

// histogramWidth is the length of the longest bar of the version histogram.
const histogramWidth = 40

func newStatusCmd(g *globalOpts) *cobra.Command {
	var (
		asJSON      bool
		failedLimit int
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show how far the fleet is from the latest version",
		Long: `status prints the latest migration version (of --migrations), how many tenants
are at it and behind it, the tenants per version (a histogram) and per status,
the FAILED and FAILED_STALE tenants with their last error (the first
--failed-limit of them, and how many there are), and the migration jobs
queued for the servers' workers. It reads the control plane only, and needs
no encryption key. Without --migrations the latest version is unknown: status
shows the rest, with latestVersion, atLatest and behind null in --json.`,
		Example: `  tenantmigrate status --migrations ./migrations
  tenantmigrate status --json | jq .behind`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if failedLimit < 0 {
				return usageErr("--failed-limit must not be negative")
			}
			orch, err := openInspectOrchestrator(cmd, g, true, nil)
			if err != nil {
				return err
			}
			defer orch.Close()
			rep, err := fleetStatus(cmd.Context(), orch, g.hasMigrations(), failedLimit)
			if err != nil {
				return failedErr(err)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printStatus(g.stdout, rep)
			return nil
		},
	}
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().IntVar(&failedLimit, "failed-limit", 20, "how many failed tenants to list")
	bindEnv(cmd.Flags(), "failed-limit", "STATUS_FAILED_LIMIT")
	return cmd
}

// statusReport is the output of status; its JSON form is that of --json.
type statusReport struct {
	// LatestVersion, AtLatest and Behind are null without --migrations:
	// the latest version is that of the migrations.
	LatestVersion *int64 `json:"latestVersion"`
	// TargetVersion is the version tenants are migrated to (the pinned
	// fleet target, or the latest); null without --migrations. AtLatest
	// and Behind count against it. TargetPinned is the pin, null if none.
	TargetVersion *int64             `json:"targetVersion"`
	TargetPinned  *int64             `json:"targetPinned"`
	Total         int64              `json:"total"`
	AtLatest      *int64             `json:"atLatest"`
	Behind        *int64             `json:"behind"`
	ByVersion     []versionCountJSON `json:"byVersion"`
	ByStatus      map[string]int64   `json:"byStatus"`
	Failed        failedReport       `json:"failed"`
	// Remaining is the number of queued migration jobs, null when the queue
	// cannot be read.
	Remaining *int64 `json:"remaining"`
	// Servers are the database servers of the fleet, as GET /admin/servers
	// lists them.
	Servers []httpapi.ServerJSON `json:"servers"`
	// Rollout is the active rollout, else the last one; null when there
	// was none.
	Rollout *httpapi.RolloutJSON `json:"rollout"`
}

type versionCountJSON struct {
	Version *int64 `json:"version"`
	Count   int64  `json:"count"`
}

type failedReport struct {
	// Count is the number of FAILED and FAILED_STALE tenants.
	Count int64 `json:"count"`
	// Tenants are the first of them, in the order they were added.
	Tenants []failedTenantJSON `json:"tenants"`
}

type failedTenantJSON struct {
	ID                string    `json:"id"`
	MigrationsVersion *int64    `json:"migrationsVersion"`
	MigrationsStatus  string    `json:"migrationsStatus"`
	LastError         string    `json:"lastError"`
	UpdatedAt         time.Time `json:"updatedAt"`
}

// fleetStatus gathers the status report. Without migrations (latestKnown
// false) it leaves the latest version and the counts against it out.
func fleetStatus(ctx context.Context, orch *tenantmigrate.Orchestrator, latestKnown bool, failedLimit int) (statusReport, error) {
	st, err := orch.Stats(ctx)
	if err != nil {
		return statusReport{}, err
	}
	rep := statusReport{
		Total:     st.Total,
		ByVersion: make([]versionCountJSON, len(st.ByVersion)),
		ByStatus:  make(map[string]int64, len(st.ByStatus)),
		Failed: failedReport{
			Count:   st.ByStatus[tenantmigrate.StatusFailed] + st.ByStatus[tenantmigrate.StatusFailedStale],
			Tenants: []failedTenantJSON{},
		},
	}
	if latestKnown {
		latest, atLatest, behind := orch.Latest(), st.Total-st.Behind, st.Behind
		rep.LatestVersion, rep.AtLatest, rep.Behind = &latest, &atLatest, &behind
		target := orch.Target()
		rep.TargetVersion = &target
		if orch.TargetPinned() {
			rep.TargetPinned = &target
		}
	}
	for i, vc := range st.ByVersion {
		rep.ByVersion[i] = versionCountJSON{Version: vc.Version, Count: vc.Count}
	}
	for s, n := range st.ByStatus {
		key := string(s)
		if key == "" {
			key = neverMigratedKey
		}
		rep.ByStatus[key] = n
	}
	if failedLimit > 0 && rep.Failed.Count > 0 {
		failed, _, err := orch.ListFailed(ctx, 0, failedLimit)
		if err != nil {
			return statusReport{}, err
		}
		for _, f := range failed {
			rep.Failed.Tenants = append(rep.Failed.Tenants, failedTenantJSON{
				ID:                f.ID,
				MigrationsVersion: f.MigrationsVersion,
				MigrationsStatus:  string(f.MigrationsStatus),
				LastError:         f.LastError,
				UpdatedAt:         f.UpdatedAt,
			})
		}
	}
	if n, err := orch.Remaining(ctx); err == nil {
		rep.Remaining = &n
	}
	list, err := orch.ListServers(ctx)
	if err != nil {
		return statusReport{}, err
	}
	rep.Servers = make([]httpapi.ServerJSON, len(list))
	for i, sv := range list {
		rep.Servers[i] = httpapi.ServerToJSON(sv)
	}
	r, err := orch.CurrentRollout(ctx)
	if err != nil {
		return statusReport{}, err
	}
	if r != nil {
		rj := httpapi.RolloutToJSON(r)
		rep.Rollout = &rj
	}
	return rep, nil
}

// printStatus prints the report as aligned tables.
func printStatus(w io.Writer, rep statusReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if rep.LatestVersion != nil {
		fmt.Fprintf(tw, "latest version:\t%d\n", *rep.LatestVersion)
		if rep.TargetPinned != nil {
			fmt.Fprintf(tw, "fleet target:\t%d (pinned; tenantmigrate target clear lets the fleet reach %d)\n", *rep.TargetPinned, *rep.LatestVersion)
			fmt.Fprintf(tw, "tenants:\t%d (%d at the target, %d behind)\n", rep.Total, *rep.AtLatest, *rep.Behind)
		} else {
			fmt.Fprintf(tw, "tenants:\t%d (%d at the latest version, %d behind)\n", rep.Total, *rep.AtLatest, *rep.Behind)
		}
	} else {
		fmt.Fprintf(tw, "latest version:\tunknown (give --migrations to count the tenants behind it)\n")
		fmt.Fprintf(tw, "tenants:\t%d\n", rep.Total)
	}
	if rep.Remaining != nil {
		fmt.Fprintf(tw, "queued jobs:\t%d\n", *rep.Remaining)
	} else {
		fmt.Fprintf(tw, "queued jobs:\tunknown (the job queue cannot be read)\n")
	}
	if r := rep.Rollout; r != nil {
		fmt.Fprintf(tw, "rollout:\t%d to version %d, %s: %d of %d completed, %d failed, wave %d of %d", r.ID, r.TargetVersion, r.State,
			r.Completed, r.Total, r.Failed, r.CurrentWave, len(r.Waves))
		if r.ETA != nil {
			fmt.Fprintf(tw, ", eta %s", timeText(*r.ETA))
		}
		fmt.Fprintln(tw)
		if r.State == string(tenantmigrate.RolloutHalted) {
			fmt.Fprintf(tw, "halted:\t%s\n", oneLine(r.HaltReason, 300))
			fmt.Fprintf(tw, "\tafter a fix: tenantmigrate rollout resume %d (details: rollout show %d)\n", r.ID, r.ID)
		}
	}
	_ = tw.Flush()
	if rep.Total == 0 {
		fmt.Fprintln(w, "\n(no tenants: add one with tenantmigrate tenants add ID URL)")
		return
	}

	fmt.Fprintln(w)
	var maxCount int64
	for _, vc := range rep.ByVersion {
		maxCount = max(maxCount, vc.Count)
	}
	fmt.Fprintln(tw, "VERSION\tTENANTS")
	for _, vc := range rep.ByVersion {
		label := versionText(vc.Version)
		switch {
		case vc.Version == nil:
			label = "- (never)"
		case rep.LatestVersion != nil && *vc.Version >= *rep.LatestVersion:
			label += " (latest)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", label, vc.Count, histogramBar(vc.Count, maxCount))
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(tw, "STATUS\tTENANTS")
	for _, s := range []string{string(tenantmigrate.StatusCompleted), string(tenantmigrate.StatusFailed), string(tenantmigrate.StatusFailedStale), neverMigratedKey} {
		label := s
		if s == neverMigratedKey {
			label = "- (never migrated)"
		}
		fmt.Fprintf(tw, "%s\t%d\n", label, rep.ByStatus[s])
	}
	_ = tw.Flush()

	printServers(w, rep.Servers)

	if rep.Failed.Count == 0 {
		return
	}
	fmt.Fprintln(w)
	if n := int64(len(rep.Failed.Tenants)); n < rep.Failed.Count {
		fmt.Fprintf(w, "failed tenants: %d (the first %d)\n", rep.Failed.Count, n)
	} else {
		fmt.Fprintf(w, "failed tenants: %d\n", rep.Failed.Count)
	}
	if len(rep.Failed.Tenants) == 0 {
		return
	}
	fmt.Fprintln(tw, "ID\tSTATUS\tVERSION\tUPDATED\tLAST ERROR")
	for _, f := range rep.Failed.Tenants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.ID, f.MigrationsStatus, versionText(f.MigrationsVersion),
			timeText(f.UpdatedAt), oneLine(f.LastError, 120))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "retry them: tenantmigrate migrate --all (FAILED_STALE ones too with --include-stale), or --tenant ID")
}

// printServers prints the database servers, DOWN ones with their last
// error.
func printServers(w io.Writer, list []httpapi.ServerJSON) {
	if len(list) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER	STATE	SINCE	RUNNING	MAX	WAITING	TENANTS	LAST ERROR")
	for _, s := range list {
		lastErr := ""
		if s.LastError != nil {
			lastErr = oneLine(*s.LastError, 80)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.Server, s.State, timeText(s.Since),
			s.Running, s.MaxConcurrent, s.Waiting, s.Tenants, lastErr)
	}
	_ = tw.Flush()
}

// histogramBar is a bar of n against the largest count, at least one block
// for a non-zero count.
func histogramBar(n, maxCount int64) string {
	if n <= 0 || maxCount <= 0 {
		return ""
	}
	blocks := max(int(n*histogramWidth/maxCount), 1)
	return strings.Repeat("█", blocks)
}
