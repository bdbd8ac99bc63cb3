package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"riverqueue.com/riverui"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/metrics"
)

type serveOpts struct {
	rollout              rolloutOpts
	listen               string
	strategy             string
	adminAPIKeys         string
	tenantHostRegexp     string
	upstream             string
	workers              int
	inlineConcurrency    int
	inlineServerWait     time.Duration
	maxAttempts          int
	retryBackoff         time.Duration
	jobTimeout           time.Duration
	rescueAfter          time.Duration
	instanceTimeout      time.Duration
	fleetRescanInterval  time.Duration
	progressiveInterval  time.Duration
	progressiveBatchSize int
	staleRetryInterval   time.Duration
	historyRetention     time.Duration
	metrics              bool
	riverUI              bool
	shutdownTimeout      time.Duration
	servers              serverOpts
}

func newServeCmd(g *globalOpts) *cobra.Command {
	var o serveOpts
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the tenant gateway, the admin API and the migration workers",
		Long: `serve routes tenant traffic by host name, applies the migration strategy, and
serves the admin API (/admin), /health and /metrics. Several instances may
share one control plane: they coordinate through it. It needs --migrations
(MIGRATIONS_DIR): there is no default set.`,
		Example: `  # On-request migration in front of an app on :3000
  tenantmigrate serve --migrations ./migrations --upstream http://127.0.0.1:3000 --admin-api-keys "$KEY"

  # Migrate the whole fleet in the background at start
  MIGRATIONS_DIR=./migrations tenantmigrate serve --strategy full_fleet --workers 4

  # Hand a dead instance's jobs to the others after 30s of silence
  tenantmigrate serve --migrations ./migrations --strategy full_fleet --instance-timeout 30s

  # At most 3 migrations at once per database server, over all instances
  MAX_PER_SERVER=3 tenantmigrate serve --strategy full_fleet --server-probe-interval 5s

  # Answer 503 with Retry-After when a tenant's database server stays full 2s
  tenantmigrate serve --migrations ./migrations --max-per-server 2 --inline-server-wait 2s

  # Keep a week of run history (tenantmigrate history ID) instead of 30 days
  tenantmigrate serve --migrations ./migrations --history-retention 168h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, &o)
		},
	}
	f := cmd.Flags()
	addRolloutFlags(f, &o.rollout)
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on")
	bindEnv(f, "listen", "LISTEN_ADDR")
	f.StringVar(&o.strategy, "strategy", "on_request", "migration strategy: on_request, full_fleet or progressive")
	bindEnv(f, "strategy", "MIGRATION_STRATEGY")
	f.StringVar(&o.adminAPIKeys, "admin-api-keys", "", "comma-separated admin API keys (none: the admin API is off)")
	bindEnv(f, "admin-api-keys", "ADMIN_API_KEYS")
	f.StringVar(&o.tenantHostRegexp, "tenant-host-regexp", tenantmigrate.DefaultTenantHostRegexp, "regexp on the request host; its first group is the tenant id")
	bindEnv(f, "tenant-host-regexp", "TENANT_HOST_REGEXP")
	f.StringVar(&o.upstream, "upstream", "", "URL of the application to proxy tenant traffic to (none: GET /tenant answers tenant info)")
	bindEnv(f, "upstream", "UPSTREAM_URL")
	f.IntVar(&o.workers, "workers", 0, "migration jobs run at once by this instance (0: the default, 4)")
	bindEnv(f, "workers", "WORKERS")
	f.IntVar(&o.inlineConcurrency, "inline-concurrency", tenantmigrate.DefaultInlineConcurrency, "migrations this instance runs during requests at once (on_request, never-migrated tenants); more cold tenants wait in line")
	bindEnv(f, "inline-concurrency", "INLINE_CONCURRENCY")
	f.DurationVar(&o.inlineServerWait, "inline-server-wait", tenantmigrate.DefaultInlineServerWait, "a request's migration waits this long for a slot of its full database server (--max-per-server), then the request gets 503 with Retry-After and nothing is recorded (0 = wait as long as the request)")
	bindEnv(f, "inline-server-wait", "INLINE_SERVER_WAIT")
	f.IntVar(&o.maxAttempts, "max-attempts", tenantmigrate.DefaultMaxAttempts, "attempts per queued tenant migration before FAILED_STALE")
	bindEnv(f, "max-attempts", "MAX_ATTEMPTS")
	f.DurationVar(&o.retryBackoff, "retry-backoff", tenantmigrate.DefaultRetryBackoff, "wait before the second attempt, doubling after")
	bindEnv(f, "retry-backoff", "RETRY_BACKOFF")
	f.DurationVar(&o.jobTimeout, "job-timeout", 0, "opt-in limit on one migration attempt, queued or inline (0: none; dead instances are found by their heartbeats, not by a timeout)")
	bindEnv(f, "job-timeout", "JOB_TIMEOUT")
	f.DurationVar(&o.rescueAfter, "rescue-after", 0, "a job running this long on a process that does not heartbeat (an older release) is run again; with --job-timeout, also one that outlived its timeout (0: job timeout + 1m, or 1h)")
	bindEnv(f, "rescue-after", "RESCUE_AFTER")
	f.DurationVar(&o.instanceTimeout, "instance-timeout", tenantmigrate.DefaultInstanceTimeout, "an instance silent this long (10 heartbeats missed) is dead: its jobs go back to the queue without using an attempt")
	bindEnv(f, "instance-timeout", "INSTANCE_TIMEOUT")
	f.DurationVar(&o.fleetRescanInterval, "fleet-rescan-interval", tenantmigrate.DefaultFleetRescanInterval, "full_fleet: repeat the fleet scan this often (0 = off)")
	bindEnv(f, "fleet-rescan-interval", "FLEET_RESCAN_INTERVAL")
	f.DurationVar(&o.progressiveInterval, "progressive-interval", tenantmigrate.DefaultProgressiveInterval, "progressive: enqueue collected tenants this often")
	bindEnv(f, "progressive-interval", "PROGRESSIVE_INTERVAL")
	f.IntVar(&o.progressiveBatchSize, "progressive-batch-size", tenantmigrate.DefaultProgressiveBatchSize, "progressive: enqueue as soon as this many tenants are collected")
	bindEnv(f, "progressive-batch-size", "PROGRESSIVE_BATCH_SIZE")
	f.DurationVar(&o.staleRetryInterval, "stale-retry-interval", tenantmigrate.DefaultStaleRetryInterval, "progressive: least time between background retries of a FAILED_STALE tenant")
	bindEnv(f, "stale-retry-interval", "STALE_RETRY_INTERVAL")
	f.DurationVar(&o.historyRetention, "history-retention", tenantmigrate.DefaultHistoryRetention, "keep each tenant run in the history this long (tenantmigrate history, GET /admin/tenants/{id}/runs); older runs are deleted in the background (0 = keep forever)")
	bindEnv(f, "history-retention", "HISTORY_RETENTION")
	f.BoolVar(&o.metrics, "metrics", true, "serve Prometheus metrics at /metrics")
	bindEnv(f, "metrics", "METRICS")
	f.BoolVar(&o.riverUI, "river-ui", true, "serve the River job dashboard at /admin/riverui/ (behind the admin key)")
	bindEnv(f, "river-ui", "RIVER_UI")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long requests, jobs and inline migrations in flight get to finish; those still running are then cancelled and requeued without using an attempt")
	bindEnv(f, "shutdown-timeout", "SHUTDOWN_TIMEOUT")
	addServerFlags(f, &o.servers, false)
	return cmd
}

func (o *serveOpts) validate() error {
	switch {
	case o.maxAttempts < 1:
		return usageErr("--max-attempts must be at least 1")
	case o.workers < 0:
		return usageErr("--workers must not be negative")
	case o.inlineConcurrency < 1:
		return usageErr("--inline-concurrency must be at least 1")
	case o.progressiveBatchSize < 1:
		return usageErr("--progressive-batch-size must be at least 1")
	case o.progressiveInterval <= 0:
		return usageErr("--progressive-interval must be positive")
	case o.retryBackoff < 0, o.jobTimeout < 0, o.inlineServerWait < 0, o.rescueAfter < 0, o.fleetRescanInterval < 0, o.staleRetryInterval < 0:
		return usageErr("durations must not be negative")
	case o.instanceTimeout <= 0:
		return usageErr("--instance-timeout must be positive")
	case o.shutdownTimeout < 0:
		return usageErr("--shutdown-timeout must not be negative")
	case o.historyRetention < 0:
		return usageErr("--history-retention must not be negative (0 keeps every run)")
	}
	return o.servers.validate()
}

func runServe(ctx context.Context, g *globalOpts, o *serveOpts) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	cfg, err := g.config(logger)
	if err != nil {
		return err
	}
	if err := g.requireMigrations(); err != nil {
		return err
	}
	if cfg.Strategy, err = tenantmigrate.ParseStrategy(o.strategy); err != nil {
		return usageErr("--strategy: %v", err)
	}
	var upstream *url.URL
	if o.upstream != "" {
		if upstream, err = url.Parse(o.upstream); err != nil || (upstream.Scheme != "http" && upstream.Scheme != "https") || upstream.Host == "" {
			return usageErr("--upstream must be an http(s) URL, got %q", o.upstream)
		}
	}
	cfg.TenantHostRegexp = o.tenantHostRegexp
	cfg.Queue.Workers = o.workers
	cfg.Limits.InlineConcurrency = o.inlineConcurrency
	cfg.Limits.InlineServerWait = o.inlineServerWait
	if o.inlineServerWait == 0 {
		cfg.Limits.InlineServerWait = -1 // no bound
	}
	cfg.Queue.MaxAttempts = o.maxAttempts
	cfg.Queue.RetryBackoff = o.retryBackoff
	cfg.Queue.JobTimeout = o.jobTimeout
	cfg.Queue.RescueAfter = o.rescueAfter
	cfg.Queue.InstanceTimeout = o.instanceTimeout
	cfg.Queue.FleetRescanInterval = o.fleetRescanInterval
	if cfg.Queue.FleetRescanInterval == 0 {
		cfg.Queue.FleetRescanInterval = -1 // the flag's 0 means off
	}
	cfg.Progressive.Interval = o.progressiveInterval
	cfg.Progressive.BatchSize = o.progressiveBatchSize
	cfg.Progressive.StaleRetryInterval = o.staleRetryInterval
	o.servers.apply(&cfg)
	cfg.History.Retention = o.historyRetention
	if cfg.History.Retention == 0 {
		cfg.History.Retention = -1 // the flag's 0 keeps runs forever; the Config's zero means the default
	}
	cfg.RunWorkers = true
	if err := o.rollout.apply(&cfg); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return usageErr("--listen: %v", err)
	}
	defer ln.Close()

	// The hooks run only after Start, by which time m is set.
	var m *metrics.Metrics
	if o.metrics {
		cfg.Hooks = tenantmigrate.Hooks{
			OnGateDecision: func(d tenantmigrate.GateDecision) { m.ObserveGate(string(d)) },
			OnMigrationRun: func(s tenantmigrate.Strategy, result string, d time.Duration) { m.ObserveRun(string(s), result, d) },
		}
	}
	orch, err := tenantmigrate.New(ctx, cfg)
	if err != nil {
		return g.newErr(err)
	}
	defer orch.Close()
	var metricsHandler http.Handler
	if o.metrics {
		m = metrics.New(metrics.Config{Source: orch, Logger: logger})
		metricsHandler = m.Handler()
	}
	if err := orch.Start(ctx); err != nil {
		return failedErr(err)
	}

	// River UI's background services stop with ctx, when shutdown starts.
	var riverUI http.Handler
	if o.riverUI {
		ui, err := riverui.NewHandler(&riverui.HandlerOpts{
			Endpoints: riverui.NewEndpoints(orch.RiverClient(), nil),
			Logger:    logger,
			Prefix:    httpapi.RiverUIPrefix,
		})
		if err != nil {
			return failedErr(fmt.Errorf("river ui: %w", err))
		}
		if err := ui.Start(ctx); err != nil {
			return failedErr(fmt.Errorf("start river ui: %w", err))
		}
		riverUI = ui
	}

	handler, err := httpapi.NewHandler(httpapi.Config{
		Service:             orch,
		AdminAPIKeys:        splitKeys(o.adminAPIKeys),
		Upstream:            upstream,
		Logger:              logger,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		Metrics:             metricsHandler,
		RiverUI:             riverUI,
	})
	if err != nil {
		return failedErr(err)
	}
	srv := httpapi.NewServer(o.listen, handler)
	logger.Info("listening", "addr", ln.Addr().String(), "strategy", string(cfg.Strategy), "latest_version", orch.Latest())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return failedErr(fmt.Errorf("serve: %w", err))
		}
		return nil
	case <-ctx.Done():
	}
	// The HTTP server and the Orchestrator drain side by side within one
	// --shutdown-timeout: no new jobs are fetched from now on, and requests,
	// jobs and inline migrations in flight get until the deadline to finish.
	// At the deadline the Orchestrator cancels the migrations still running:
	// they roll back, their jobs go back to the queue without using an
	// attempt, and nothing is recorded for their tenants.
	logger.Info("shutting down", "shutdown_timeout_ms", o.shutdownTimeout.Milliseconds())
	started := time.Now()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Error("http shutdown", "err", err)
		}
	})
	wg.Go(func() {
		if err := orch.Stop(shutdownCtx); err != nil {
			logger.Error("stop orchestrator", "err", err)
		}
	})
	wg.Wait()
	logger.Info("stopped", "duration_ms", time.Since(started).Milliseconds())
	return nil
}

func splitKeys(s string) []string {
	var keys []string
	for k := range strings.SplitSeq(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}
