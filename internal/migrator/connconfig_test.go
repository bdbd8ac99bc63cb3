package migrator

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A tenant host that accepts connections and never answers fails the run
// after the connect timeout, rather than holding a worker for the job's
// whole timeout.
func TestConnectTimeoutDefault(t *testing.T) {
	t.Parallel()
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n"})})
	cfg, err := m.connConfig(Target{DatabaseURL: "postgres://u@127.0.0.1:5/db"})
	require.NoError(t, err)
	require.Equal(t, defaultConnectTimeout, cfg.ConnectTimeout)
	cfg, err = m.connConfig(Target{DatabaseURL: "postgres://u@127.0.0.1:5/db?connect_timeout=3"})
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, cfg.ConnectTimeout, "the URL's connect_timeout wins")

	// A silent host: accept and never speak.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	start := time.Now()
	res, err := m.Migrate(t.Context(), Target{DatabaseURL: "postgres://u@" + ln.Addr().String() + "/db?connect_timeout=1&sslmode=disable"})
	require.Error(t, err)
	require.True(t, IsRetryable(err), "a connect timeout is retryable: %v", err)
	require.Equal(t, int64(-1), res.Version)
	require.Less(t, time.Since(start), 30*time.Second)
}
