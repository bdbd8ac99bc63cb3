package servers_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// envHolder makes the test binary the slot holder of TestSlotFreeAfterKill9.
const envHolder = "TENANTMIGRATE_TEST_SLOT_HOLDER"

// TestSlotHolderProcess is the child of TestSlotFreeAfterKill9: it takes
// the one slot of db1 and holds it until it is killed.
func TestSlotHolderProcess(t *testing.T) {
	url := os.Getenv(envHolder)
	if url == "" {
		t.Skip("run by TestSlotFreeAfterKill9")
	}
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	m := servers.New(servers.Config{Pool: pool, MaxPerServer: 1})
	_, err = m.Take(context.Background(), "db1:5432", false)
	require.NoError(t, err)
	os.Stdout.WriteString("HELD\n")
	select {}
}

// TestSlotFreeAfterKill9: a slot held by a process killed with SIGKILL is
// free again as soon as PostgreSQL sees its connection close.
func TestSlotFreeAfterKill9(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t)
	m := newManager(t, servers.Config{Pool: pool, MaxPerServer: 1})

	cmd := exec.Command(os.Args[0], "-test.run=^TestSlotHolderProcess$")
	cmd.Env = append(os.Environ(), envHolder+"="+pool.Config().ConnString())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	held := false
	for lines.Scan() {
		if strings.TrimSpace(lines.Text()) == "HELD" {
			held = true
			break
		}
	}
	require.True(t, held, "the child took the slot")
	_, err = m.Take(ctx, "db1:5432", false)
	require.ErrorIs(t, err, servers.ErrFull)
	require.Equal(t, 1, listByName(t, m)["db1:5432"].Running)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "slot free after kill -9", func() bool {
		s, err := m.Take(ctx, "db1:5432", false)
		if err != nil {
			require.ErrorIs(t, err, servers.ErrFull)
			return false
		}
		s.Release(ctx)
		return true
	})
}
