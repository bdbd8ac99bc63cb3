package tenantmigrate_test

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// freezingProxy relays TCP connections to a PostgreSQL server. freeze
// makes the listener's connections open at that moment go silent, as a network that
// drops its packets does (a NAT or firewall that forgot the flow, a
// partition): nothing is relayed any more and nothing is closed. Later
// connections pass.
type freezingProxy struct {
	ln      net.Listener
	network string
	addr    string

	mu     sync.Mutex
	conns  []*frozenFlag
	closed chan struct{}
}

type frozenFlag struct {
	mu       sync.Mutex
	frozen   bool
	listener bool // its startup message names the listener's application_name
}

func (f *frozenFlag) get() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.frozen }

func newFreezingProxy(t *testing.T, network, addr string) *freezingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &freezingProxy{ln: ln, network: network, addr: addr, closed: make(chan struct{})}
	t.Cleanup(func() { close(p.closed); _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *freezingProxy) serve(c net.Conn) {
	up, err := net.Dial(p.network, p.addr)
	if err != nil {
		_ = c.Close()
		return
	}
	f := &frozenFlag{}
	p.mu.Lock()
	p.conns = append(p.conns, f)
	p.mu.Unlock()
	relay := func(dst, src net.Conn) {
		buf := make([]byte, 32*1024)
		for first := src == c; ; first = false {
			n, err := src.Read(buf)
			if first && strings.Contains(string(buf[:n]), controlplane.ListenerApplicationName) {
				f.mu.Lock()
				f.listener = true
				f.mu.Unlock()
			}
			if f.get() {
				<-p.closed // silent: neither relayed nor closed
				return
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = dst.Close()
				return
			}
		}
	}
	go relay(up, c)
	go relay(c, up)
}

func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.conns {
		f.mu.Lock()
		f.frozen = f.listener
		f.mu.Unlock()
	}
}

// viaProxy returns connString with its host and port replaced by the
// proxy's, and the proxy dialling the original server.
func viaProxy(t *testing.T, connString string) (string, *freezingProxy) {
	cfg, err := pgconn.ParseConfig(connString)
	require.NoError(t, err)
	network, addr := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	p := newFreezingProxy(t, network, addr)
	u := url.URL{Scheme: "postgres", Host: p.ln.Addr().String(), Path: "/" + cfg.Database, RawQuery: "sslmode=disable"}
	if cfg.Password != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	} else {
		u.User = url.User(cfg.User)
	}
	return u.String(), p
}

// TestGateDistrustsCacheWhenListenerGoesSilent: the listener's connection
// stops delivering anything without being closed (its packets dropped).
// Another instance then removes a cached tenant and registers it again on
// an empty database. The listener must find out that it no longer hears
// anything, within moments, and the gate must then read the tenant and
// migrate the empty database before serving it, instead of passing it
// through from the cache until TCP keepalive gives up minutes later.
func TestGateDistrustsCacheWhenListenerGoesSilent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	proxied, proxy := viaProxy(t, cp)
	o := startOrchestrator(t, tenantmigrate.Config{DatabaseURL: proxied, Migrations: fleetMigrations()})
	dbA, dbB := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	addTenantAt(t, o, "acme", dbA, "")
	waitFor(t, 30*time.Second, "the listener", o.Listening)
	waitFor(t, 30*time.Second, "acme cached as up to date", func() bool {
		require.NoError(t, o.EnsureMigrated(ctx, "acme"))
		return o.CachedUpToDate("acme")
	})

	proxy.freeze() // the listener's connection goes silent; the pool's still work
	other := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: fleetMigrations()})
	require.NoError(t, other.DeleteTenant(ctx, "acme"))
	addTenantAt(t, other, "acme", dbB, "")

	deadline := time.Now().Add(45 * time.Second)
	for o.CachedUpToDate("acme") {
		if time.Now().After(deadline) {
			t.Fatalf("45 s after its connection went silent the listener still counts as listening (%v) and acme, "+
				"re-registered on an empty database, is still served from the cache", o.Listening())
		}
		time.Sleep(pollEvery)
	}
	require.NoError(t, o.EnsureMigrated(ctx, "acme"))
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, dbB, ""), "B was migrated before it was served")
}
