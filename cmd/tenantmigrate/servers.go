package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantmigrate/tenantmigrate"
)

// serverOpts are the flags of the per-server cap and of server outages,
// shared by serve and migrate.
type serverOpts struct {
	maxPerServer  int
	probeInterval time.Duration
	downTimeout   time.Duration // migrate only
}

// addServerFlags adds the flags of serverOpts to f; --server-down-timeout
// only with downTimeout (migrate: serve waits for a DOWN server as long as
// it takes).
func addServerFlags(f *pflag.FlagSet, o *serverOpts, downTimeout bool) {
	f.IntVar(&o.maxPerServer, "max-per-server", tenantmigrate.DefaultMaxPerServer,
		"migrations at once against one database server (host:port), across every serve and migrate process on the control plane; PUT /admin/servers/{server} overrides it per server")
	bindEnv(f, "max-per-server", "MAX_PER_SERVER")
	f.DurationVar(&o.probeInterval, "server-probe-interval", tenantmigrate.DefaultServerProbeInterval,
		"how often a DOWN database server is probed until it answers")
	bindEnv(f, "server-probe-interval", "SERVER_PROBE_INTERVAL")
	if downTimeout {
		f.DurationVar(&o.downTimeout, "server-down-timeout", tenantmigrate.DefaultServerDownTimeout,
			"how long the tenants of a DOWN database server wait before the run gives them up (exit 1, naming the server)")
		bindEnv(f, "server-down-timeout", "SERVER_DOWN_TIMEOUT")
	}
}

func (o *serverOpts) validate() error {
	switch {
	case o.maxPerServer < 1 || o.maxPerServer > tenantmigrate.MaxServerConcurrency:
		return usageErr("--max-per-server must be from 1 to %d", tenantmigrate.MaxServerConcurrency)
	case o.probeInterval <= 0:
		return usageErr("--server-probe-interval must be positive")
	case o.downTimeout < 0:
		return usageErr("--server-down-timeout must not be negative")
	}
	return nil
}

// apply sets Config.Servers from the flags.
func (o *serverOpts) apply(cfg *tenantmigrate.Config) {
	cfg.Servers.MaxPerServer = o.maxPerServer
	cfg.Servers.ProbeInterval = o.probeInterval
	cfg.Servers.DownTimeout = o.downTimeout
	if o.downTimeout == 0 {
		cfg.Servers.DownTimeout = time.Nanosecond // the flag's 0: give up at once
	}
}
