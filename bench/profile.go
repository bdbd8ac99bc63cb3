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
	// ServerCPUMS is the cluster's CPU time per tenant (own cluster only).
	ServerCPUMS  float64 `json:"server_cpu_ms_per_tenant"`
	TenantConns  float64 `json:"tenant_conns"`
	TenantRTs    float64 `json:"tenant_round_trips"`
	TenantKB     float64 `json:"tenant_kb"`
	ControlConns float64 `json:"control_conns"`
	ControlRTs   float64 `json:"control_round_trips"`
}

// wireCounter is a TCP proxy to the PostgreSQL server that counts
// connections, round trips and bytes. Clients must not negotiate SSL or GSS
// encryption (sslmode=disable, gssencmode=disable), so that every message
// from the server is a typed one.
type wireCounter struct {
	ln                 net.Listener
	target             string
	conns, rts, nbytes atomic.Int64
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
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			n, _ := io.Copy(s, c)
			w.nbytes.Add(n)
			_ = s.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer w.wg.Done()
			defer c.Close()
			defer s.Close()
			w.serverToClient(s, c)
		}()
	}
}

// serverToClient forwards the server's messages, counting ReadyForQuery.
func (w *wireCounter) serverToClient(s, c net.Conn) {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(s, hdr[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
		if hdr[0] == 'Z' {
			w.rts.Add(1)
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

func (w *wireCounter) snapshot() [3]int64 {
	return [3]int64{w.conns.Load(), w.rts.Load(), w.nbytes.Load()}
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
	for i := 1; i <= tenants; i++ {
		e.tenants = append(e.tenants, fmt.Sprintf("%s_p%02d", b.o.prefix, i))
	}
	if e.psql, err = exec.LookPath("psql"); err != nil {
		return err
	}
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), append(e.tenants, e.control)); err != nil {
			b.logf("drop profile databases: %v", err)
		}
	}()
	if err := e.primeRole(ctx); err != nil {
		return err
	}
	res := &profileResult{Tenants: tenants}
	b.rep.Profile = res
	_ = os.Setenv("PGGSSENCMODE", "disable") // psql: plain protocol for the proxy

	measure := func(what string, control bool, fn func(ctx context.Context, name string) error) error {
		if err := e.reset(ctx, control); err != nil {
			return err
		}
		t0, c0 := tenantWire.snapshot(), controlWire.snapshot()
		start, cpu0 := time.Now(), b.srv.cpuTime()
		for _, name := range e.tenants {
			if err := fn(ctx, name); err != nil {
				return fmt.Errorf("%s: %s: %w", what, name, err)
			}
		}
		elapsed, cpu := time.Since(start), b.srv.cpuTime()-cpu0
		t1, c1 := tenantWire.snapshot(), controlWire.snapshot()
		per := func(a, b int64) float64 { return float64(b-a) / float64(tenants) }
		row := profileRow{What: what, MSPerTenant: ms(elapsed) / float64(tenants), ServerCPUMS: ms(cpu) / float64(tenants),
			TenantConns: per(t0[0], t1[0]), TenantRTs: per(t0[1], t1[1]), TenantKB: per(t0[2], t1[2]) / 1024,
			ControlConns: per(c0[0], c1[0]), ControlRTs: per(c0[1], c1[1])}
		res.Rows = append(res.Rows, row)
		b.logRow(row)
		return nil
	}

	// (a) psql, the raw limit's client.
	if err := measure("psql script", false, func(ctx context.Context, name string) error {
		_, _, err := e.psqlTenant(ctx, tenantWire.url(e.srv.dbURL(name)))
		return err
	}); err != nil {
		return err
	}
	// (d) goose's provider, as the naive loop runs it.
	if err := measure("goose provider (naive loop)", false, func(ctx context.Context, name string) error {
		return gooseUp(ctx, tenantWire.url(e.srv.dbURL(name)))
	}); err != nil {
		return err
	}
	// The migrator alone, as the root package configures it by default:
	// what tenantmigrate adds to goose on the tenant side.
	mig, err := migrator.New(migrator.Config{FS: migrationsFS()})
	if err != nil {
		return err
	}
	if err := measure("migrator.Migrate (no control plane)", false, func(ctx context.Context, name string) error {
		_, err := mig.Migrate(ctx, migrator.Target{DatabaseURL: tenantWire.url(e.srv.dbURL(name))})
		return err
	}); err != nil {
		return err
	}
	// (b, c) tenantmigrate: the control plane lists the tenants through the
	// proxy, and Orchestrator.MigrateTenant is what migrate --all and a
	// queued job run per tenant (the job reads the tenant once more).
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
		for _, name := range e.tenants {
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
	if err := e.srv.recreateDBs(ctx, e.tenants, "", 4); err != nil {
		return err
	}
	if err := setup(ctx); err != nil {
		return err
	}
	if err := measure("tenantmigrate (Orchestrator.MigrateTenant)", false, migrateOne); err != nil {
		return err
	}
	// Nothing pending: what a run costs on a tenant that is up to date
	// but not recorded so (reset the control plane, keep the databases).
	if err := setup(ctx); err != nil {
		return err
	}
	t0, c0 := tenantWire.snapshot(), controlWire.snapshot()
	start, cpu0 := time.Now(), b.srv.cpuTime()
	for _, name := range e.tenants {
		if err := migrateOne(ctx, name); err != nil {
			return err
		}
	}
	elapsed, cpu := time.Since(start), b.srv.cpuTime()-cpu0
	t1, c1 := tenantWire.snapshot(), controlWire.snapshot()
	per := func(a, b int64) float64 { return float64(b-a) / float64(tenants) }
	row := profileRow{What: "tenantmigrate, nothing pending", MSPerTenant: ms(elapsed) / float64(tenants), ServerCPUMS: ms(cpu) / float64(tenants),
		TenantConns: per(t0[0], t1[0]), TenantRTs: per(t0[1], t1[1]), TenantKB: per(t0[2], t1[2]) / 1024,
		ControlConns: per(c0[0], c1[0]), ControlRTs: per(c0[1], c1[1])}
	res.Rows = append(res.Rows, row)
	b.logRow(row)
	return nil
}

func (b *bench) logRow(row profileRow) {
	b.logf("profile: %-44s %7.1f ms/tenant (server CPU %6.1f ms)  tenant: %4.1f conns %6.1f round trips %7.1f KB  control plane: %4.1f conns %5.1f round trips",
		row.What, row.MSPerTenant, row.ServerCPUMS, row.TenantConns, row.TenantRTs, row.TenantKB, row.ControlConns, row.ControlRTs)
}
