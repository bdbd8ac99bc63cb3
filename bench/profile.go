package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// profileResult counts what migrating one tenant costs on the wire, per
// method: connections, round trips (ReadyForQuery messages from the server)
// and bytes, on the tenant database and on the control plane, and the
// wall time of one tenant alone.
type profileResult struct {
	Tenants int          `json:"tenants"` // tenants timed, one after the other
	Rows    []profileRow `json:"rows"`
}

type profileRow struct {
	What        string  `json:"what"`
	MSPerTenant float64 `json:"ms_per_tenant"`
	// ServerCPUMS is the cluster's CPU time per tenant (own cluster only),
	// background processes included.
	ServerCPUMS float64 `json:"server_cpu_ms_per_tenant"`
	// BackendCPUMS is the CPU time of the tenant connections' backends per
	// tenant (see wireCounter).
	BackendCPUMS float64 `json:"tenant_backend_cpu_ms_per_tenant"`
	TenantConns  float64 `json:"tenant_conns"`
	TenantRTs    float64 `json:"tenant_round_trips"`
	TenantKB     float64 `json:"tenant_kb"`
	ControlConns float64 `json:"control_conns"`
	ControlRTs   float64 `json:"control_round_trips"`
}

// wireCounter is a TCP proxy to the PostgreSQL server that counts
// connections, round trips and bytes, and the CPU time of the backends that
// served them. Clients must not negotiate SSL or GSS encryption
// (sslmode=disable, gssencmode=disable), so that every message is a typed
// one.
//
// A backend's CPU time is read from /proc/PID/schedstat (PID from the server's
// BackendKeyData message) when its client sends Terminate, or closes the
// connection, just before the backend exits: the time of the client's own
// backend only, free of what autovacuum, the checkpointer or other sessions
// used meanwhile. It is counted only when the server runs on this machine
// (0 otherwise).
type wireCounter struct {
	ln                 net.Listener
	target             string
	conns, rts, nbytes atomic.Int64
	backendNanos       atomic.Int64
	wg                 sync.WaitGroup
}

func newWireCounter(target string) (*wireCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &wireCounter{ln: ln, target: target}
	go w.accept()
	return w, nil
}

func (w *wireCounter) accept() {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		w.conns.Add(1)
		s, err := net.Dial("tcp", w.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		var pid atomic.Int64
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			w.clientToServer(c, s, &pid)
			_ = s.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer w.wg.Done()
			defer c.Close()
			defer s.Close()
			w.serverToClient(s, c, &pid)
		}()
	}
}

// clientToServer forwards the client's messages: the untyped startup
// message, then typed ones. At Terminate, or at the end of the stream, it
// adds the backend's CPU time so far.
func (w *wireCounter) clientToServer(c, s net.Conn, pid *atomic.Int64) {
	defer w.addBackendCPU(pid)
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:4]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint32(hdr[:4])) - 4
	if _, err := s.Write(hdr[:4]); err != nil {
		return
	}
	if _, err := io.CopyN(s, c, n); err != nil {
		return
	}
	w.nbytes.Add(4 + n)
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if hdr[0] == 'X' {
			w.addBackendCPU(pid)
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
		if _, err := s.Write(hdr[:]); err != nil {
			return
		}
		if _, err := io.CopyN(s, c, n); err != nil {
			return
		}
		w.nbytes.Add(5 + n)
	}
}

// addBackendCPU adds the CPU time of the connection's backend, once.
func (w *wireCounter) addBackendCPU(pid *atomic.Int64) {
	p := pid.Swap(0)
	if p <= 0 {
		return
	}
	// schedstat's first field is the time on CPU in nanoseconds; stat's
	// utime+stime count 10 ms ticks, too coarse for a backend that runs for
	// a few milliseconds.
	f := strings.Fields(readFile("/proc/" + strconv.FormatInt(p, 10) + "/schedstat"))
	if len(f) == 0 {
		return
	}
	if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
		w.backendNanos.Add(ns)
	}
}

// serverToClient forwards the server's messages, counting ReadyForQuery and
// noting the backend's PID from BackendKeyData.
func (w *wireCounter) serverToClient(s, c net.Conn, pid *atomic.Int64) {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(s, hdr[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
		if hdr[0] == 'Z' {
			w.rts.Add(1)
		}
		if hdr[0] == 'K' && n >= 4 {
			var body [4]byte
			if _, err := io.ReadFull(s, body[:]); err != nil {
				return
			}
			pid.Store(int64(binary.BigEndian.Uint32(body[:])))
			if _, err := c.Write(hdr[:]); err != nil {
				return
			}
			if _, err := c.Write(body[:]); err != nil {
				return
			}
			if _, err := io.CopyN(c, s, n-4); err != nil {
				return
			}
			w.nbytes.Add(5 + n)
			continue
		}
		if _, err := c.Write(hdr[:]); err != nil {
			return
		}
		if _, err := io.CopyN(c, s, n); err != nil {
			return
		}
		w.nbytes.Add(5 + n)
	}
}

// snapshot returns the counts so far: connections, round trips, bytes and
// backend CPU nanoseconds.
func (w *wireCounter) snapshot() [4]int64 {
	return [4]int64{w.conns.Load(), w.rts.Load(), w.nbytes.Load(), w.backendNanos.Load()}
}

// url is u pointed at the proxy.
func (w *wireCounter) url(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	pu.Host = w.ln.Addr().String()
	return pu.String()
}

// profile migrates tenants one at a time through counting proxies, by each
// method, and reports per-tenant averages.
func (b *bench) profile(ctx context.Context) error {
	tenants := b.o.profileTenants
	migs, err := loadMigrations()
	if err != nil {
		return err
	}
	su, err := url.Parse(b.srv.url)
	if err != nil {
		return err
	}
	tenantWire, err := newWireCounter(su.Host)
	if err != nil {
		return err
	}
	defer tenantWire.ln.Close()
	controlWire, err := newWireCounter(su.Host)
	if err != nil {
		return err
	}
	defer controlWire.ln.Close()

	e := &fleetEnv{bench: b, migrations: migs, latest: migs[len(migs)-1].version, script: psqlScript(migs, 0)}
	e.control = b.o.prefix + "_pcontrol"
	if e.psql, err = exec.LookPath("psql"); err != nil {
		return err
	}

	// One set of tenant databases per method. The methods take turns, tenant
	// by tenant (psql on its tenant 1, goose on its tenant 1, ..., then
	// tenant 2 with the order rotated), so that the machine's drift over the
	// minutes of the run (a shared VM's speed varies by tens of percent)
	// falls on every method alike instead of on whichever ran last.
	type method struct {
		what    string
		tenants []string
		run     func(ctx context.Context, name string) error
		sum     profileSum
	}
	mig, err := migrator.New(migrator.Config{FS: migrationsFS()})
	if err != nil {
		return err
	}
	tenantMig, err := migrator.New(migrator.Config{FS: migrationsFS(), TransactionMode: migrator.TransactionModeTenant})
	if err != nil {
		return err
	}
	var orch *tenantmigrate.Orchestrator
	defer func() {
		if orch != nil {
			orch.Close()
		}
	}()
	migrateOne := func(ctx context.Context, name string) error {
		_, err := orch.MigrateTenant(ctx, tenantID(name))
		return err
	}
	methods := []*method{
		// (a) psql, the raw limit's client.
		{what: "psql script", run: func(ctx context.Context, name string) error {
			_, _, err := e.psqlTenant(ctx, tenantWire.url(e.srv.dbURL(name)))
			return err
		}},
		// (d) goose's provider, as the naive loop runs it.
		{what: "goose provider (naive loop)", run: func(ctx context.Context, name string) error {
			return gooseUp(ctx, tenantWire.url(e.srv.dbURL(name)))
		}},
		// The migrator alone, as the root package configures it by default:
		// what tenantmigrate adds to goose on the tenant side.
		{what: "migrator.Migrate (no control plane)", run: func(ctx context.Context, name string) error {
			_, err := mig.Migrate(ctx, migrator.Target{DatabaseURL: tenantWire.url(e.srv.dbURL(name))})
			return err
		}},
		// The same in --transaction-mode tenant: its groups go to the server
		// in pipelines, without a round trip per statement.
		{what: "migrator.Migrate, tenant mode", run: func(ctx context.Context, name string) error {
			_, err := tenantMig.Migrate(ctx, migrator.Target{DatabaseURL: tenantWire.url(e.srv.dbURL(name))})
			return err
		}},
		// (b, c) tenantmigrate: Orchestrator.MigrateTenant is what migrate
		// --all and a queued job run per tenant (the job reads the tenant
		// once more), with the control plane behind its own proxy.
		{what: "tenantmigrate (Orchestrator.MigrateTenant)", run: migrateOne},
	}
	var all []string
	for mi, m := range methods {
		for i := 1; i <= tenants; i++ {
			m.tenants = append(m.tenants, fmt.Sprintf("%s_p%d_%02d", b.o.prefix, mi+1, i))
		}
		all = append(all, m.tenants...)
	}
	tm := methods[len(methods)-1]
	e.tenants = tm.tenants // the control plane registers these
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), append(all, e.control)); err != nil {
			b.logf("drop profile databases: %v", err)
		}
	}()
	if err := e.primeRole(ctx); err != nil {
		return err
	}
	res := &profileResult{Tenants: tenants}
	b.rep.Profile = res
	_ = os.Setenv("PGGSSENCMODE", "disable") // psql: plain protocol for the proxy

	// setup registers tm's tenants, never migrated, in a new control plane
	// and opens orch on it through the control-plane proxy.
	setup := func(ctx context.Context) error {
		if orch != nil {
			orch.Close()
		}
		if err := e.resetControlPlane(ctx); err != nil {
			return err
		}
		// Point the tenants at the proxy.
		cipherOrch, err := tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: e.srv.dbURL(e.control), EncryptionKey: encryptionKey, Migrations: migrationsFS()})
		if err != nil {
			return err
		}
		for _, name := range tm.tenants {
			if _, _, err := cipherOrch.UpsertTenant(ctx, tenantmigrate.Tenant{ID: tenantID(name), DatabaseURL: tenantWire.url(e.srv.dbURL(name))}); err != nil {
				cipherOrch.Close()
				return err
			}
		}
		cipherOrch.Close()
		orch, err = tenantmigrate.New(ctx, tenantmigrate.Config{
			DatabaseURL:   controlWire.url(e.srv.dbURL(e.control)),
			EncryptionKey: encryptionKey,
			Migrations:    migrationsFS(),
		})
		return err
	}
	if err := b.srv.recreateDBs(ctx, all, "", 4); err != nil {
		return err
	}
	if err := setup(ctx); err != nil {
		return err
	}
	if err := b.srv.checkpoint(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, b.o.settle); err != nil {
		return err
	}

	// one runs fn on one tenant and adds what it cost to sum.
	one := func(ctx context.Context, sum *profileSum, name string, fn func(ctx context.Context, name string) error) error {
		t0, c0 := tenantWire.snapshot(), controlWire.snapshot()
		start, cpu0 := time.Now(), b.srv.cpuTime()
		if err := fn(ctx, name); err != nil {
			return err
		}
		sum.add(time.Since(start), b.srv.cpuTime()-cpu0, t0, tenantWire.snapshot(), c0, controlWire.snapshot())
		return nil
	}
	for i := range tenants {
		for k := range methods {
			m := methods[(i+k)%len(methods)]
			if err := one(ctx, &m.sum, m.tenants[i], m.run); err != nil {
				return fmt.Errorf("%s: %s: %w", m.what, m.tenants[i], err)
			}
		}
	}
	for _, m := range methods {
		row := m.sum.row(m.what, tenants)
		res.Rows = append(res.Rows, row)
		b.logRow(row)
	}

	// Nothing pending: what a run costs on a tenant that is up to date
	// but not recorded so (reset the control plane, keep the databases).
	if err := setup(ctx); err != nil {
		return err
	}
	var idle profileSum
	for _, name := range tm.tenants {
		if err := one(ctx, &idle, name, migrateOne); err != nil {
			return err
		}
	}
	row := idle.row("tenantmigrate, nothing pending", tenants)
	res.Rows = append(res.Rows, row)
	b.logRow(row)
	return nil
}

// profileSum adds up what one method's runs cost.
type profileSum struct {
	elapsed, cpu time.Duration
	tenant       [4]int64 // connections, round trips, bytes, backend CPU ns
	control      [4]int64
}

func (s *profileSum) add(elapsed, cpu time.Duration, t0, t1, c0, c1 [4]int64) {
	s.elapsed += elapsed
	s.cpu += cpu
	for i := range s.tenant {
		s.tenant[i] += t1[i] - t0[i]
		s.control[i] += c1[i] - c0[i]
	}
}

// row is the per-tenant average of s over n tenants.
func (s *profileSum) row(what string, n int) profileRow {
	per := func(v int64) float64 { return float64(v) / float64(n) }
	return profileRow{What: what, MSPerTenant: ms(s.elapsed) / float64(n), ServerCPUMS: ms(s.cpu) / float64(n),
		BackendCPUMS: ms(time.Duration(s.tenant[3])) / float64(n),
		TenantConns:  per(s.tenant[0]), TenantRTs: per(s.tenant[1]), TenantKB: per(s.tenant[2]) / 1024,
		ControlConns: per(s.control[0]), ControlRTs: per(s.control[1])}
}

func (b *bench) logRow(row profileRow) {
	b.logf("profile: %-44s %7.1f ms/tenant (server CPU %6.1f ms, tenant backend CPU %6.1f ms)  tenant: %4.1f conns %6.1f round trips %7.1f KB  control plane: %4.1f conns %5.1f round trips",
		row.What, row.MSPerTenant, row.ServerCPUMS, row.BackendCPUMS, row.TenantConns, row.TenantRTs, row.TenantKB, row.ControlConns, row.ControlRTs)
}
