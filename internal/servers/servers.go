// Package servers knows the database servers a fleet's tenants live on, and
// keeps every process on one control plane within two shared rules:
//
//   - a cap: at most MaxConcurrent migrations run at once against one
//     server, counted across every process (Manager.Take);
//   - outages: after repeated connection-level failures within a short
//     window a server is DOWN for everyone, its tenants wait, and one
//     process probes it every ProbeInterval until it answers
//     (Manager.ReportFailure, Manager.ReportReachable, the prober).
//
// A slot is a PostgreSQL session-level advisory lock in the control plane,
// on a connection of the running process that holds nothing else: when the
// process dies, however it dies, PostgreSQL ends the session and the slot is
// free again. No table of leases can leak.
package servers

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// LabelServer is the tenant label that names its server, overriding the
// host and port of its URL (DNS aliases, connection poolers).
const LabelServer = "server"

// defaultPort is the port of a URL that names none.
const defaultPort = "5432"

// Defaults of Config.
const (
	// DefaultMaxPerServer is the default of Config.MaxPerServer.
	DefaultMaxPerServer = 2
	// DefaultProbeInterval is the default of Config.ProbeInterval.
	DefaultProbeInterval = 10 * time.Second
	// DefaultDownTimeout is how long a batch run (migrate --all) waits for a
	// DOWN server's tenants by default.
	DefaultDownTimeout = time.Minute
	// DefaultFailureThreshold is the default of Config.FailureThreshold.
	DefaultFailureThreshold = 3
	// DefaultFailureWindow is the default of Config.FailureWindow.
	DefaultFailureWindow = 30 * time.Second
	// MaxConcurrentLimit is the highest cap of one server (the slot number
	// has 10 bits in the lock key).
	MaxConcurrentLimit = 1000
)

// Of returns the server of a tenant: its "server" label, trimmed and
// lower-cased, when set; else the host and port of databaseURL, lower-case,
// port 5432 when none is given (the first host of a multi-host URL). It
// returns "" for a URL the driver cannot parse.
func Of(databaseURL string, labels map[string]string) string {
	if s := strings.ToLower(strings.TrimSpace(labels[LabelServer])); s != "" {
		return s
	}
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return ""
	}
	port := defaultPort
	if cfg.Port != 0 {
		port = strconv.Itoa(int(cfg.Port))
	}
	return net.JoinHostPort(strings.ToLower(cfg.Host), port)
}
