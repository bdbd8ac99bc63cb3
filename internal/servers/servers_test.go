package servers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

func TestOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url    string
		labels map[string]string
		want   string
	}{
		{"postgres://u:p@DB1.Example.com/app", nil, "db1.example.com:5432"},
		{"postgres://u@db1.example.com:6432/app?sslmode=disable", nil, "db1.example.com:6432"},
		{"postgresql://u@127.0.0.1:5433/x", nil, "127.0.0.1:5433"},
		{"postgres://u@[::1]:5433/x", nil, "[::1]:5433"},
		{"postgres://u@h1:5001,h2:5002/x", nil, "h1:5001"},
		{"postgres://u@db1/app", map[string]string{"server": " PgBouncer-A "}, "pgbouncer-a"},
		{"postgres://u@db1/app", map[string]string{"server": ""}, "db1:5432"},
		{"postgres://u@db1/app", map[string]string{"team": "x"}, "db1:5432"},
		{"not a url ://", nil, ""},
	} {
		require.Equal(t, c.want, servers.Of(c.url, c.labels), c.url)
	}
}

func TestIsConnectionError(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	// Real connect errors: a closed port, and TLS asked of a server that
	// refuses it (the server answered: the tenant's configuration).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, dialErr := pgconn.Connect(t.Context(), "postgres://u@"+closedPort+"/x?sslmode=disable&connect_timeout=5")
	require.Error(t, dialErr)
	noTLS, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer noTLS.Close()
	go func() {
		for {
			c, err := noTLS.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 8)
			_, _ = io.ReadFull(c, buf) // the SSLRequest
			_, _ = c.Write([]byte("N"))
			_ = c.Close()
		}
	}()
	_, tlsErr := pgconn.Connect(t.Context(), "postgres://u@"+noTLS.Addr().String()+"/x?sslmode=require&connect_timeout=5")
	require.ErrorContains(t, tlsErr, "server refused TLS connection")
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", fmt.Errorf("migrate: %w", dialErr), true},
		{"TLS refused", fmt.Errorf("migrate: %w", tlsErr), false},
		{"net", refused, true},
		{"57P03", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, true},
		{"57P01", &pgconn.PgError{Code: "57P01"}, true},
		{"auth", &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, false},
		{"no database", &pgconn.PgError{Code: "3D000"}, false},
		{"syntax", &pgconn.PgError{Code: "42601"}, false},
		{"canceled", context.Canceled, false},
		{"run deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"other", errors.New("boom"), false},
	} {
		require.Equal(t, c.want, servers.IsConnectionError(c.err), c.name)
	}
	require.Equal(t, "57P03: the database system is starting up",
		servers.Summary(&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}))
	require.Equal(t, refused.Error(), servers.Summary(fmt.Errorf("connect u:secret@x: %w", refused)))
}

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), fleettest.NewControlPlane(t, ""))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func newManager(t *testing.T, cfg servers.Config) *servers.Manager {
	t.Helper()
	m := servers.New(cfg)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// TestCapAcrossManagers: two managers (two processes' worth of slot
// connections) share the cap of a server; a released slot, or one whose
// session ended, is free again; an override changes the cap for both.
func TestCapAcrossManagers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	a := newManager(t, servers.Config{Pool: pool, MaxPerServer: 2})
	b := newManager(t, servers.Config{Pool: pool, MaxPerServer: 2})

	s1, err := a.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	s2, err := b.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	_, err = a.Take(ctx, "db1:5432", false)
	require.ErrorIs(t, err, servers.ErrFull)
	_, err = b.Take(ctx, "db1:5432", false)
	require.ErrorIs(t, err, servers.ErrFull)
	other, err := b.Take(ctx, "db2:5432", false) // another server has its own slots
	require.NoError(t, err)
	other.Release(ctx)

	list := listByName(t, a)
	require.Equal(t, 2, list["db1:5432"].Running)
	require.Equal(t, 0, list["db2:5432"].Running)
	require.Equal(t, tenanttype.ServerUp, list["db1:5432"].State)

	s1.Release(ctx)
	s1.Release(ctx) // twice is fine
	s3, err := b.Take(ctx, "db1:5432", false)
	require.NoError(t, err)

	// b's session ends (its process died): both of its slots are free.
	// PostgreSQL drops a closed session's locks when its backend has
	// exited, a moment after the client closed it: poll.
	b.Close(ctx)
	var s4, s5 *servers.Slot
	require.Eventually(t, func() bool {
		if s4 == nil {
			s4, _ = a.Take(ctx, "db1:5432", false)
		}
		if s4 != nil && s5 == nil {
			s5, _ = a.Take(ctx, "db1:5432", false)
		}
		return s5 != nil
	}, 10*time.Second, 10*time.Millisecond, "b's slots are free once its session ended")
	_ = s2
	_ = s3

	// Cap 1 for db1: a holds 2; nothing more until it is below 1.
	one := 1
	require.NoError(t, a.SetMaxConcurrent(ctx, "db1:5432", &one))
	s4.Release(ctx)
	_, err = a.Take(ctx, "db1:5432", false)
	require.ErrorIs(t, err, servers.ErrFull)
	s5.Release(ctx)
	s6, err := a.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	list = listByName(t, a)
	require.Equal(t, 1, list["db1:5432"].MaxConcurrent)
	require.True(t, list["db1:5432"].MaxConcurrentOverride)
	s6.Release(ctx)

	bad := 0
	require.Error(t, a.SetMaxConcurrent(ctx, "db1:5432", &bad))
	require.NoError(t, a.SetMaxConcurrent(ctx, "db1:5432", nil))
	require.Equal(t, 2, listByName(t, a)["db1:5432"].MaxConcurrent)
}

// TestTakeWaits: a waiting Take gets the slot released by another, and one
// whose context ends gives up with ErrFull.
func TestTakeWaits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	a := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})
	b := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})
	held, err := a.Take(ctx, "db1:5432", false)
	require.NoError(t, err)

	got := make(chan error, 1)
	go func() {
		s, err := b.Take(ctx, "db1:5432", true)
		s.Release(ctx)
		got <- err
	}()
	held.Release(ctx)
	require.NoError(t, <-got)

	held, err = a.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	defer held.Release(ctx)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Take(cctx, "db1:5432", true)
	require.ErrorIs(t, err, servers.ErrFull)
	require.ErrorIs(t, err, context.Canceled)
}

// TestTakeWaitEndsInsideALook: a wait that ends while Take is reading the
// control plane (here its servers table is locked, so the read blocks past
// the deadline) ends as a full server, ErrFull with the deadline, not as
// the read's error: the request gets its 503 with Retry-After, not "request
// ended" (TestFullServerHoldsOnlyItsOwnRequests failed so once under load).
func TestTakeWaitEndsInsideALook(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	m := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})
	s, err := m.Take(ctx, "db1:5432", false) // the server's row exists
	require.NoError(t, err)
	s.Release(ctx)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, `LOCK TABLE tenantmigrate.servers IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = m.Take(wctx, "db1:5432", true)
	require.ErrorIs(t, err, servers.ErrFull)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Without a wait, the read's error is the answer, as before.
	nctx, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	_, err = m.Take(nctx, "db1:5432", false)
	require.Error(t, err)
	require.NotErrorIs(t, err, servers.ErrFull)
}

// TestWaitingRunGoesFirst: while a run of a process waits for its server
// (a request), the queue's jobs of that process take no slot of it, even a
// free one, so the slot a release frees goes to the waiting run; the
// server's other processes and other servers are not held back.
func TestWaitingRunGoesFirst(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	a := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})
	other := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})
	held, err := other.Take(ctx, "db1:5432", false)
	require.NoError(t, err)

	got := make(chan *servers.Slot, 1)
	go func() {
		s, err := a.Take(ctx, "db1:5432", true)
		assert.NoError(t, err)
		got <- s
	}()
	// A job of a finds the server full while the request waits, and keeps
	// finding it so once the slot is free, until the request has it.
	require.Eventually(t, func() bool {
		_, err := a.Take(ctx, "db1:5432", false)
		return errors.Is(err, servers.ErrFull) && errors.Is(err, servers.ErrRequestWaits) &&
			strings.Contains(err.Error(), "a request of this process waits")
	}, 10*time.Second, 5*time.Millisecond)
	held.Release(ctx)
	_, err = a.Take(ctx, "db1:5432", false)
	require.ErrorIs(t, err, servers.ErrFull, "the freed slot is the waiting request's")
	s := <-got
	require.NotNil(t, s)
	// Another server of a is not held back.
	s2, err := a.Take(ctx, "db2:5432", false)
	require.NoError(t, err)
	s2.Release(ctx)
	s.Release(ctx)
	s3, err := a.Take(ctx, "db1:5432", false)
	require.NoError(t, err, "no request waits any more")
	s3.Release(ctx)
}

// TestDownAndUp: the third connection-level failure within the window makes
// a server DOWN for every manager; Take refuses it; a probe that reaches it
// makes it UP and calls OnUp.
func TestDownAndUp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	reachable := make(chan bool, 1)
	reachable <- false
	upCalls := make(chan string, 4)
	a := newManager(t, servers.Config{Pool: pool, ProbeInterval: 1, // due at once
		Probe: func(context.Context, string) error {
			ok := <-reachable
			reachable <- ok
			if ok {
				return nil
			}
			return &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}
		},
		OnUp: func(_ context.Context, s string) { upCalls <- s },
	})
	b := newManager(t, servers.Config{Pool: pool})
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}

	for i := 1; i <= 2; i++ {
		down, err := a.ReportFailure(ctx, "db1:5432", refused)
		require.NoError(t, err)
		require.False(t, down, "failure %d", i)
	}
	// A success in between clears the count.
	require.NoError(t, b.ReportReachable(ctx, "db1:5432"))
	for i := 1; i <= 3; i++ {
		down, err := b.ReportFailure(ctx, "db1:5432", refused)
		require.NoError(t, err)
		require.Equal(t, i == 3, down, "failure %d", i)
	}
	_, err := a.Take(ctx, "db1:5432", true)
	var de *servers.DownError
	require.ErrorAs(t, err, &de)
	require.Equal(t, "db1:5432", de.Server)
	require.Contains(t, de.Error(), "connection refused")
	info := listByName(t, b)["db1:5432"]
	require.Equal(t, tenanttype.ServerDown, info.State)
	require.Contains(t, info.LastError, "connection refused")

	probed, err := a.ProbeIfDue(ctx, "db1:5432")
	require.NoError(t, err)
	require.True(t, probed)
	require.Equal(t, tenanttype.ServerDown, listByName(t, b)["db1:5432"].State, "still starting up")
	require.Contains(t, listByName(t, b)["db1:5432"].LastError, "57P03")

	<-reachable
	reachable <- true
	fleettest.Poll(t, 10*time.Millisecond, 10*time.Second, "probed UP", func() bool {
		_, err := a.ProbeIfDue(ctx, "db1:5432")
		require.NoError(t, err)
		return listByName(t, b)["db1:5432"].State == tenanttype.ServerUp
	})
	require.Equal(t, "db1:5432", <-upCalls)
	s, err := b.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	s.Release(ctx)
}

func listByName(t *testing.T, m *servers.Manager) map[string]tenanttype.Server {
	t.Helper()
	list, err := m.List(t.Context())
	require.NoError(t, err)
	out := map[string]tenanttype.Server{}
	for _, s := range list {
		out[s.Server] = s
	}
	return out
}

// TestFreeCountsEveryProcess: Free is the server's cap less the slots held
// by every process, and what OnFree sees after a release: both slots when
// the other one was released already (two runs ending together each wake
// as many jobs as can start, not one each).
func TestFreeCountsEveryProcess(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	freeAtRelease := make(chan int, 2)
	var a *servers.Manager
	a = newManager(t, servers.Config{Pool: pool, MaxPerServer: 2, OnFree: func(ctx context.Context, server string) {
		n, err := a.Free(ctx, server)
		require.NoError(t, err)
		freeAtRelease <- n
	}})
	b := newManager(t, servers.Config{Pool: pool, MaxPerServer: 2})

	free := func(m *servers.Manager) int {
		n, err := m.Free(ctx, "db1:5432")
		require.NoError(t, err)
		return n
	}
	require.Equal(t, 2, free(a), "a server never used")
	s1, err := a.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	require.Equal(t, 1, free(b))
	s2, err := b.Take(ctx, "db1:5432", false)
	require.NoError(t, err)
	require.Equal(t, 0, free(a))
	require.Equal(t, 0, free(b))

	s2.Release(ctx)
	s1.Release(ctx)
	require.Equal(t, 2, <-freeAtRelease, "a's release after b's sees both slots free")
}
