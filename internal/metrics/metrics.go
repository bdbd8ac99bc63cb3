// Package metrics exposes tenantmigrate's Prometheus metrics. Every series is
// prefixed tenantmigrate_. Fleet gauges are read from the control plane on
// scrape, at most once per refresh interval, so scrapes stay cheap.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// Source is where fleet gauges come from.
type Source interface {
	Stats(ctx context.Context) (controlplane.Stats, error)
	Remaining(ctx context.Context) (int64, error)
	Latest() int64
}

// RolloutSource is a Source that also has rollouts; the rollout gauges
// (tenantmigrate_rollout_tenants{state}, tenantmigrate_rollout_halted) are
// read from the current rollout (the active one, else the last) when the
// Source implements it.
type RolloutSource interface {
	CurrentRollout(ctx context.Context) (*rollouts.Rollout, error)
}

// Config configures Metrics.
type Config struct {
	// Source feeds the fleet gauges. Nil leaves them out.
	Source Source
	// RefreshInterval is the least time between two reads of the fleet
	// gauges. Defaults to 5s.
	RefreshInterval time.Duration
	// Logger receives errors reading the gauges. Defaults to discard.
	Logger *slog.Logger
}

// Metrics holds the registry and the instruments the rest of the program
// updates.
type Metrics struct {
	registry *prometheus.Registry
	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	gate     *prometheus.CounterVec
}

// New registers all metrics, Go runtime and process metrics included, in a
// new registry.
func New(cfg Config) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantmigrate_migration_runs_total",
			Help: "Migration runs of one tenant, by result (completed, failed) and strategy.",
		}, []string{"result", "strategy"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tenantmigrate_migration_run_duration_seconds",
			Help:    "Duration of migration runs of one tenant.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"strategy"}),
		gate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantmigrate_gate_decisions_total",
			Help: "Decisions of the request gate: up_to_date, migrated_inline, enqueued, stale_retry, behind, failed.",
		}, []string{"decision"}),
	}
	m.registry.MustRegister(m.runs, m.duration, m.gate,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if cfg.Source != nil {
		logger := cfg.Logger
		if logger == nil {
			logger = slog.New(slog.DiscardHandler)
		}
		interval := cfg.RefreshInterval
		if interval <= 0 {
			interval = 5 * time.Second
		}
		m.registry.MustRegister(&fleetCollector{src: cfg.Source, interval: interval, logger: logger})
		if ss, ok := cfg.Source.(ServersSource); ok {
			m.registry.MustRegister(&serverCollector{src: ss, interval: interval, logger: logger})
		}
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ObserveRun records one migration run.
func (m *Metrics) ObserveRun(strategy, result string, d time.Duration) {
	m.runs.WithLabelValues(result, strategy).Inc()
	m.duration.WithLabelValues(strategy).Observe(d.Seconds())
}

// ObserveGate records one gate decision.
func (m *Metrics) ObserveGate(decision string) {
	m.gate.WithLabelValues(decision).Inc()
}

var (
	tenantsDesc   = prometheus.NewDesc("tenantmigrate_tenants", "Tenants by migrations_status (none = never migrated).", []string{"status"}, nil)
	behindDesc    = prometheus.NewDesc("tenantmigrate_tenants_behind", "Tenants not at the latest version.", nil, nil)
	versionDesc   = prometheus.NewDesc("tenantmigrate_tenants_by_version", "Tenants by migrations_version (none = never migrated).", []string{"version"}, nil)
	latestDesc    = prometheus.NewDesc("tenantmigrate_latest_version", "Highest version in the migration source.", nil, nil)
	targetDesc    = prometheus.NewDesc("tenantmigrate_target_version", "Version tenants are migrated to: the pinned fleet target, or the latest version.", nil, nil)
	pinnedDesc    = prometheus.NewDesc("tenantmigrate_target_pinned", "1 while the fleet target is pinned below the latest version.", nil, nil)
	remainingDesc = prometheus.NewDesc("tenantmigrate_queue_remaining", "Live migrate_tenant jobs (available, scheduled, retryable, running, pending).", nil, nil)
	upDesc        = prometheus.NewDesc("tenantmigrate_control_plane_up", "1 when the last read of the fleet gauges succeeded.", nil, nil)
	rolloutDesc   = prometheus.NewDesc("tenantmigrate_rollout_tenants", "Tenants of the current rollout (the active one, else the last) by state in it: pending (not finished), completed, failed, removed; 0 before any rollout.", []string{"state"}, nil)
	haltedDesc    = prometheus.NewDesc("tenantmigrate_rollout_halted", "1 while the current rollout is halted.", nil, nil)
)

// fleetCollector reads the fleet gauges from the control plane on scrape,
// reusing the last reading within the refresh interval.
type fleetCollector struct {
	src      Source
	interval time.Duration
	logger   *slog.Logger

	mu        sync.Mutex
	readAt    time.Time
	stats     controlplane.Stats
	remaining int64
	rollout   *rollouts.Rollout
	ok        bool
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tenantsDesc, behindDesc, versionDesc, latestDesc, targetDesc, pinnedDesc, remainingDesc, upDesc, rolloutDesc, haltedDesc} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.readAt) >= c.interval {
		c.refresh()
	}
	stats, remaining, ok, ro := c.stats, c.remaining, c.ok, c.rollout
	c.mu.Unlock()
	if _, has := c.src.(RolloutSource); has && ok {
		// Without any rollout yet every series is 0, so that dashboards and
		// alert rules find them from the first scrape.
		halted, counts := 0.0, map[string]int64{"pending": 0, "completed": 0, "failed": 0, "removed": 0}
		if ro != nil {
			if ro.State == rollouts.StateHalted {
				halted = 1
			}
			counts = map[string]int64{"pending": ro.Pending, "completed": ro.Completed, "failed": ro.Failed, "removed": ro.Removed}
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(rolloutDesc, prometheus.GaugeValue, float64(n), state)
		}
		ch <- prometheus.MustNewConstMetric(haltedDesc, prometheus.GaugeValue, halted)
	}

	ch <- prometheus.MustNewConstMetric(latestDesc, prometheus.GaugeValue, float64(c.src.Latest()))
	target, pinned := float64(c.src.Latest()), 0.0
	if tr, ok := c.src.(interface {
		Target() int64
		TargetPinned() bool
	}); ok {
		target = float64(tr.Target())
		if tr.TargetPinned() {
			pinned = 1
		}
	}
	ch <- prometheus.MustNewConstMetric(targetDesc, prometheus.GaugeValue, target)
	ch <- prometheus.MustNewConstMetric(pinnedDesc, prometheus.GaugeValue, pinned)
	up := 0.0
	if ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up)
	if !ok {
		return
	}
	for _, s := range []controlplane.Status{controlplane.StatusCompleted, controlplane.StatusFailed, controlplane.StatusFailedStale, ""} {
		label := string(s)
		if label == "" {
			label = "none"
		}
		ch <- prometheus.MustNewConstMetric(tenantsDesc, prometheus.GaugeValue, float64(stats.ByStatus[s]), label)
	}
	for _, vc := range stats.ByVersion {
		label := "none"
		if vc.Version != nil {
			label = strconv.FormatInt(*vc.Version, 10)
		}
		ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(vc.Count), label)
	}
	ch <- prometheus.MustNewConstMetric(behindDesc, prometheus.GaugeValue, float64(stats.Behind))
	ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(remaining))
}

// refresh reads the gauges; c.mu is held.
func (c *fleetCollector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.readAt = time.Now()
	stats, err := c.src.Stats(ctx)
	if err != nil {
		c.ok = false
		c.logger.Warn("read fleet stats for metrics", "err", err)
		return
	}
	remaining, err := c.src.Remaining(ctx)
	if err != nil {
		c.ok = false
		c.logger.Warn("read queue remaining for metrics", "err", err)
		return
	}
	c.stats, c.remaining, c.ok = stats, remaining, true
	if rs, has := c.src.(RolloutSource); has {
		ro, err := rs.CurrentRollout(ctx)
		if err != nil {
			c.ok = false
			c.logger.Warn("read current rollout for metrics", "err", err)
			return
		}
		c.rollout = ro
	}
}
