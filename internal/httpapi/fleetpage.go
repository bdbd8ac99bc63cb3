package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// The fleet page, GET /admin/: one screen for an operator, behind the admin
// key or a browser session. It shows what GET /admin/stats and GET
// /admin/migrations/failed answer, and reloads itself every
// fleetPageRefresh.

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
	RiverUI    bool
	Generated  string
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
