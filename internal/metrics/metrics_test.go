package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/metrics"
)

// fleet is a Source with fixed figures that counts its reads.
type fleet struct {
	reads atomic.Int64
	fail  atomic.Bool
}

func (f *fleet) Stats(context.Context) (controlplane.Stats, error) {
	f.reads.Add(1)
	if f.fail.Load() {
		return controlplane.Stats{}, errors.New("control plane down")
	}
	v2, v3 := int64(2), int64(3)
	return controlplane.Stats{
		Total:     6,
		Behind:    3,
		ByVersion: []controlplane.VersionCount{{Version: nil, Count: 1}, {Version: &v2, Count: 2}, {Version: &v3, Count: 3}},
		ByStatus:  map[controlplane.Status]int64{controlplane.StatusCompleted: 4, controlplane.StatusFailedStale: 1, "": 1},
	}, nil
}

func (f *fleet) Remaining(context.Context) (int64, error) { return 2, nil }
func (f *fleet) Latest() int64                            { return 3 }

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(body)
}

func TestMetricsExposeFleetAndEvents(t *testing.T) {
	t.Parallel()
	src := &fleet{}
	m := metrics.New(metrics.Config{Source: src, RefreshInterval: time.Hour})
	m.ObserveRun("full_fleet", "completed", 150*time.Millisecond)
	m.ObserveRun("full_fleet", "failed", time.Second)
	m.ObserveGate("up_to_date")
	m.ObserveGate("up_to_date")

	out := scrape(t, m)
	for _, want := range []string{
		`tenantmigrate_migration_runs_total{result="completed",strategy="full_fleet"} 1`,
		`tenantmigrate_migration_runs_total{result="failed",strategy="full_fleet"} 1`,
		`tenantmigrate_migration_run_duration_seconds_count{strategy="full_fleet"} 2`,
		`tenantmigrate_gate_decisions_total{decision="up_to_date"} 2`,
		`tenantmigrate_tenants{status="COMPLETED"} 4`,
		`tenantmigrate_tenants{status="FAILED_STALE"} 1`,
		`tenantmigrate_tenants{status="FAILED"} 0`,
		`tenantmigrate_tenants{status="none"} 1`,
		`tenantmigrate_tenants_by_version{version="none"} 1`,
		`tenantmigrate_tenants_by_version{version="3"} 3`,
		`tenantmigrate_tenants_behind 3`,
		`tenantmigrate_queue_remaining 2`,
		`tenantmigrate_latest_version 3`,
		`tenantmigrate_control_plane_up 1`,
		`go_goroutines`,
	} {
		require.Contains(t, out, want)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		require.True(t, strings.HasPrefix(line, "tenantmigrate_") || strings.HasPrefix(line, "go_") || strings.HasPrefix(line, "process_"), line)
	}

	// Scrapes within the refresh interval reuse the last reading.
	scrape(t, m)
	scrape(t, m)
	require.Equal(t, int64(1), src.reads.Load())
}

func TestMetricsControlPlaneDown(t *testing.T) {
	t.Parallel()
	src := &fleet{}
	src.fail.Store(true)
	out := scrape(t, metrics.New(metrics.Config{Source: src}))
	require.Contains(t, out, "tenantmigrate_control_plane_up 0")
	require.NotContains(t, out, "tenantmigrate_tenants_behind")
}
