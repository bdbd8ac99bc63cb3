package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// ServersSource lists the database servers; a Source that implements it
// (the Orchestrator does) adds the per-server gauges.
type ServersSource interface {
	ListServers(ctx context.Context) ([]tenanttype.Server, error)
}

var (
	serverUpDesc      = prometheus.NewDesc("tenantmigrate_server_up", "1 while a database server is UP, 0 while it is DOWN (its tenants wait).", []string{"server"}, nil)
	serverRunningDesc = prometheus.NewDesc("tenantmigrate_server_running", "Migrations holding a slot of a database server, in every process.", []string{"server"}, nil)
	serverWaitingDesc = prometheus.NewDesc("tenantmigrate_server_waiting", "Queued migrate_tenant jobs of a database server's tenants not running.", []string{"server"}, nil)
)

// serverCollector reads the servers on scrape, reusing the last reading
// within the refresh interval.
type serverCollector struct {
	src      ServersSource
	interval time.Duration
	logger   *slog.Logger

	mu     sync.Mutex
	readAt time.Time
	list   []tenanttype.Server
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serverUpDesc
	ch <- serverRunningDesc
	ch <- serverWaitingDesc
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.readAt) >= c.interval {
		c.readAt = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := c.src.ListServers(ctx)
		cancel()
		if err != nil {
			c.logger.Warn("read database servers for metrics", "err", err)
		} else {
			c.list = list
		}
	}
	list := c.list
	c.mu.Unlock()
	for _, s := range list {
		up := 0.0
		if s.State == tenanttype.ServerUp {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(serverUpDesc, prometheus.GaugeValue, up, s.Server)
		ch <- prometheus.MustNewConstMetric(serverRunningDesc, prometheus.GaugeValue, float64(s.Running), s.Server)
		ch <- prometheus.MustNewConstMetric(serverWaitingDesc, prometheus.GaugeValue, float64(s.Waiting), s.Server)
	}
}
