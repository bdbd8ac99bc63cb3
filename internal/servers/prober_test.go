package servers_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// TestProberStartStop: the prober follows the Start/Stop contract. Stop
// before Start and a second Start or Stop do nothing; a started prober
// brings a DOWN server UP; a stopped one starts again, under a context
// detached from the cancelled one it is given.
func TestProberStartStop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	m := newManager(t, servers.Config{Pool: pool, ProbeInterval: 100 * time.Millisecond,
		Probe: func(context.Context, string) error { return nil }})
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	markDown := func() {
		t.Helper()
		for range 3 {
			_, err := m.ReportFailure(ctx, "db1:5432", refused)
			require.NoError(t, err)
		}
		require.Equal(t, tenanttype.ServerDown, listByName(t, m)["db1:5432"].State)
	}
	waitUp := func(what string) {
		t.Helper()
		fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, what, func() bool {
			return listByName(t, m)["db1:5432"].State == tenanttype.ServerUp
		})
	}

	m.Stop() // never started
	markDown()
	m.Start(ctx)
	m.Start(ctx) // running already
	waitUp("the prober brings the server UP")
	m.Stop()
	m.Stop()

	markDown()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	m.Start(cancelled)
	waitUp("the restarted prober brings the server UP")
	m.Stop()
}
