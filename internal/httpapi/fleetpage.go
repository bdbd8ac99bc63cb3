package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// The fleet page, GET /admin/: one screen for an operator, behind the admin
// key or a browser session. It shows what GET /admin/stats, GET
// /admin/migrations/failed and the current rollout (GET /admin/rollouts)
// answer, and reloads itself every fleetPageRefresh.

const (
	// fleetPageRefresh is the page's reload interval, in seconds.
	fleetPageRefresh = 10
	// fleetPageFailed is how many failed tenants the page lists.
	fleetPageFailed = 20
	// fleetPageErrorRunes bounds each error shown; the admin API has them
	// whole.
	fleetPageErrorRunes = 2000
)

// fleetPage serves the fleet page.
type fleetPage struct {
	svc     Service
	riverUI bool
}

// fleetData is the data of the "fleet" template.
type fleetData struct {
	pageFrame
	Latest int64
	// Target is the version tenants are migrated to; Pinned when it is a
	// pinned fleet target.
	Target      int64
	Pinned      bool
	Total       int64
	Behind      int64
	Remaining   int64
	FailedTotal int64
	Versions    []versionBar
	Statuses    []statusCount
	Failed      []failedRow
	// FailedMore: more tenants failed than Failed lists.
	FailedMore bool
	// Durations are the p50 and p95 of the recent tenant runs that applied
	// migrations ("1.2s / 3.4s"), "–" without any; DurationRuns counts them.
	Durations    string
	DurationRuns int
	// Rollout is the active rollout, else the last; nil when there was
	// none.
	Rollout   *rolloutView
	RiverUI   bool
	Generated string
}

// rolloutView is the rollout section of the fleet page.
type rolloutView struct {
	ID                                int64
	TargetVersion                     int64
	State                             string
	HaltReason                        string
	Total, Completed, Failed, Pending int64
	// CurrentWave is 1-based.
	CurrentWave int
	Waves       []waveRow
	StartedAt   string
	// Ended is the finish time, "" while active.
	Ended string
	// ETA is when it should finish ("2026-01-02 15:04:05 UTC, in 3m20s"),
	// "–" when there is none (not running, or nothing finished yet).
	ETA string
	// ETABasis says what the ETA comes from ("run history p50 1.2s per
	// tenant, 8.0 at once"), "" without an ETA.
	ETABasis string
	// AvgDuration is the mean duration of its completed tenant runs, "–"
	// without any.
	AvgDuration string
	FirstErrors []failedRow
}

// waveRow is one wave of a rolloutView.
type waveRow struct {
	Number                           int
	Size, Completed, Failed, Pending int64
	State                            string
	// Width is the CSS width of the finished part, in percent of the size.
	Width string
	// ETA is when the wave should end ("in 3m20s"), "–" without one.
	ETA string
}

// versionBar is one bar of the version histogram.
type versionBar struct {
	// Key is the version, or "never" for tenants never migrated.
	Key   string
	Label string
	Count int64
	// Width is the bar's CSS width in percent of the longest bar.
	Width string
	// Latest marks the latest version.
	Latest bool
	// Class colours the bar: "latest", "never" or "".
	Class string
}

// statusCount is one row of the status table.
type statusCount struct {
	// Key is the status, or neverMigratedKey.
	Key   string
	Label string
	Count int64
}

// failedRow is one failed tenant.
type failedRow struct {
	ID        string
	Status    string
	Version   string
	Error     string
	UpdatedAt string
}

func (f *fleetPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, err := f.load(r.Context())
	if err != nil {
		status, msg := serviceErrorStatus(err)
		setLogError(r, err)
		renderPage(w, r, status, "error", errorPage{
			pageFrame: pageFrame{Title: "Error", Refresh: fleetPageRefresh},
			Error:     "The fleet could not be read: " + msg + ".",
		})
		return
	}
	renderPage(w, r, http.StatusOK, "fleet", data)
}

// load reads the fleet summary, the queue and the first failed tenants.
func (f *fleetPage) load(ctx context.Context) (fleetData, error) {
	st, err := f.svc.Stats(ctx)
	if err != nil {
		return fleetData{}, fmt.Errorf("fleet page: stats: %w", err)
	}
	remaining, err := f.svc.Remaining(ctx)
	if err != nil {
		return fleetData{}, fmt.Errorf("fleet page: queue: %w", err)
	}
	failed, _, err := f.svc.ListFailed(ctx, 0, fleetPageFailed)
	if err != nil {
		return fleetData{}, fmt.Errorf("fleet page: failed tenants: %w", err)
	}
	durations, err := f.svc.RunDurations(ctx, time.Now().Add(-history.DurationWindow))
	if err != nil {
		return fleetData{}, fmt.Errorf("fleet page: run durations: %w", err)
	}
	ro, err := f.svc.CurrentRollout(ctx)
	if err != nil {
		return fleetData{}, fmt.Errorf("fleet page: rollout: %w", err)
	}

	latest := f.svc.Latest()
	target, pinned := targetOf(f.svc)
	d := fleetData{
		pageFrame: pageFrame{Title: "Fleet", Refresh: fleetPageRefresh},
		Latest:    latest,
		Target:    target,
		Pinned:    pinned,
		Total:     st.Total,
		Behind:    st.Behind,
		Remaining: remaining,
		Versions:  versionBars(st.ByVersion, latest),
		Statuses:  statusCounts(st.ByStatus),
		RiverUI:   f.riverUI,
		Generated: time.Now().UTC().Format("2006-01-02 15:04:05 UTC"),

		Durations:    "–",
		DurationRuns: durations.Runs,
		Rollout:      newRolloutView(ro, time.Now()),
	}
	if durations.Runs > 0 {
		d.Durations = roundDuration(durations.P50).String() + " / " + roundDuration(durations.P95).String()
	}
	d.FailedTotal = st.ByStatus[controlplane.StatusFailed] + st.ByStatus[controlplane.StatusFailedStale]
	for _, s := range failed {
		d.Failed = append(d.Failed, failedRow{
			ID:        s.ID,
			Status:    string(s.MigrationsStatus),
			Version:   versionLabel(s.MigrationsVersion, "–"),
			Error:     truncateRunes(s.LastError, fleetPageErrorRunes),
			UpdatedAt: s.UpdatedAt.UTC().Format("2006-01-02 15:04:05"),
		})
	}
	// Stats and ListFailed are two reads: tenants may fail in between.
	d.FailedTotal = max(d.FailedTotal, int64(len(d.Failed)))
	d.FailedMore = d.FailedTotal > int64(len(d.Failed))
	return d, nil
}

// newRolloutView is the page's form of r (nil: nil).
func newRolloutView(r *rollouts.Rollout, now time.Time) *rolloutView {
	if r == nil {
		return nil
	}
	const layout = "2006-01-02 15:04:05 UTC"
	v := &rolloutView{
		ID: r.ID, TargetVersion: r.TargetVersion, State: string(r.State), HaltReason: r.HaltReason,
		Total: r.Total, Completed: r.Completed, Failed: r.Failed, Pending: r.Pending,
		CurrentWave: r.CurrentWave + 1,
		StartedAt:   r.StartedAt.UTC().Format(layout),
		ETA:         "–",
		AvgDuration: "–",
	}
	if r.FinishedAt != nil {
		v.Ended = r.FinishedAt.UTC().Format(layout)
	}
	if r.ETA != nil {
		v.ETA = r.ETA.UTC().Format(layout) + ", in " + roundDuration(max(r.ETA.Sub(now), 0)).String()
	}
	switch r.ETABasis {
	case rollouts.ETAFromHistory:
		v.ETABasis = "run history p50 " + roundDuration(r.ETAPerTenant).String() + " per tenant, " +
			strconv.FormatFloat(r.ETAParallelism, 'f', 1, 64) + " at once"
	case rollouts.ETAFromPace:
		v.ETABasis = "the pace since the start"
	}
	if r.AvgDuration > 0 {
		v.AvgDuration = roundDuration(r.AvgDuration).String()
	}
	for i, w := range r.Waves {
		row := waveRow{Number: i + 1, Size: w.Size, Completed: w.Completed, Failed: w.Failed, Pending: w.Pending, State: w.State, Width: "0", ETA: "–"}
		if w.ETA != nil {
			row.ETA = "in " + roundDuration(max(w.ETA.Sub(now), 0)).String()
		}
		if w.Size > 0 {
			row.Width = strconv.FormatFloat(float64(min(w.Completed+w.Failed+w.Removed, w.Size))*100/float64(w.Size), 'f', 1, 64)
		}
		v.Waves = append(v.Waves, row)
	}
	for _, e := range r.FirstErrors {
		version := "–"
		if e.FailedVersion > 0 {
			version = strconv.FormatInt(e.FailedVersion, 10)
		}
		v.FirstErrors = append(v.FirstErrors, failedRow{ID: e.TenantID, Version: version, Error: truncateRunes(e.Error, fleetPageErrorRunes)})
	}
	return v
}

// versionBars turns the per-version counts into bars whose widths are
// proportional to the counts, the longest at 100%.
func versionBars(counts []controlplane.VersionCount, latest int64) []versionBar {
	var most int64
	for _, vc := range counts {
		most = max(most, vc.Count)
	}
	bars := make([]versionBar, 0, len(counts))
	for _, vc := range counts {
		b := versionBar{
			Key:   "never",
			Label: versionLabel(vc.Version, "never migrated"),
			Count: vc.Count,
			Width: "0",
			Class: "never",
		}
		if vc.Version != nil {
			b.Key = strconv.FormatInt(*vc.Version, 10)
			b.Latest = *vc.Version == latest
			b.Class = ""
			if b.Latest {
				b.Class = "latest"
			}
		}
		if most > 0 {
			b.Width = strconv.FormatFloat(float64(vc.Count)*100/float64(most), 'f', 1, 64)
		}
		bars = append(bars, b)
	}
	return bars
}

// statusLabels are the statuses the page always lists, in order.
var statusLabels = []struct {
	status controlplane.Status
	key    string
	label  string
}{
	{controlplane.StatusCompleted, string(controlplane.StatusCompleted), "completed"},
	{controlplane.StatusFailed, string(controlplane.StatusFailed), "failed"},
	{controlplane.StatusFailedStale, string(controlplane.StatusFailedStale), "failed, stale"},
	{"", neverMigratedKey, "never migrated"},
}

// statusCounts lists the tenants per status: the known statuses always (0
// when none), then any other, by name.
func statusCounts(byStatus map[controlplane.Status]int64) []statusCount {
	out := make([]statusCount, 0, len(statusLabels))
	known := make(map[controlplane.Status]bool, len(statusLabels))
	for _, s := range statusLabels {
		known[s.status] = true
		out = append(out, statusCount{Key: s.key, Label: s.label, Count: byStatus[s.status]})
	}
	var others []statusCount
	for s, n := range byStatus {
		if !known[s] {
			others = append(others, statusCount{Key: string(s), Label: string(s), Count: n})
		}
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Key < others[j].Key })
	return append(out, others...)
}

// roundDuration keeps a duration's display short: ms below a second, tenths
// of a second above.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// versionLabel formats a version, or none when it is nil.
func versionLabel(v *int64, none string) string {
	if v == nil {
		return none
	}
	return strconv.FormatInt(*v, 10)
}

// truncateRunes cuts s to n runes, marking the cut.
func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos] + "…"
		}
		i++
	}
	return s
}
