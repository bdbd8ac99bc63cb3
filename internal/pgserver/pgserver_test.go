package pgserver_test

import (
	"context"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
)

// newDir returns a fresh directory under os.TempDir(), deleted at cleanup. Not t.TempDir:
// when the tests run as root, the postgres OS user must be able to reach the directory.
func newDir(t *testing.T) string {
	t.Helper()
	if _, err := pgserver.FindBinDir(); err != nil {
		t.Fatalf("pgserver tests need PostgreSQL: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgserver-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// start starts a server in a fresh directory and removes it at cleanup.
func start(t *testing.T, cfg pgserver.Config) *pgserver.Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = newDir(t)
	}
	s, err := pgserver.Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Remove()) })
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	require.NoError(t, conn.QueryRow(t.Context(), sql).Scan(&s))
	return s
}

// requireDown asserts that nothing accepts connections at url.
func requireDown(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		_ = conn.Close(ctx)
	}
	require.Error(t, err, "server at %s still accepts connections", url)
}

func TestStartRestartStopRemove(t *testing.T) {
	t.Parallel()
	s := start(t, pgserver.Config{Settings: map[string]string{"shared_buffers": "64MB", "work_mem": "8MB"}})
	url := s.URL("postgres")
	require.Contains(t, url, "127.0.0.1:"+strconv.Itoa(s.Port())+"/postgres")

	// The URL reaches a superuser session with the default settings, overridden and
	// extended by Config.Settings.
	conn := connect(t, url)
	require.Equal(t, "postgres", queryString(t, conn, "SELECT current_user"))
	require.Equal(t, "on", queryString(t, conn, "SHOW is_superuser"))
	require.Equal(t, "500", queryString(t, conn, "SHOW max_connections"))
	require.Equal(t, "off", queryString(t, conn, "SHOW fsync"))
	require.Equal(t, "off", queryString(t, conn, "SHOW synchronous_commit"))
	require.Equal(t, "off", queryString(t, conn, "SHOW full_page_writes"))
	require.Equal(t, "64MB", queryString(t, conn, "SHOW shared_buffers"))
	require.Equal(t, "8MB", queryString(t, conn, "SHOW work_mem"))
	require.Equal(t, "127.0.0.1", queryString(t, conn, "SHOW listen_addresses"))
	require.FileExists(t, filepath.Join(s.Dir(), ".s.PGSQL."+strconv.Itoa(s.Port())))

	_, err := conn.Exec(t.Context(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	require.NoError(t, err)

	// Restart: open connections break, data and port stay.
	port := s.Port()
	require.NoError(t, s.Restart(t.Context()))
	require.Error(t, conn.Ping(t.Context()))
	require.Equal(t, port, s.Port())
	conn = connect(t, url)
	require.Equal(t, "42", queryString(t, conn, "SELECT v::text FROM kept"))

	// Stop, twice.
	require.NoError(t, s.Stop(t.Context()))
	require.NoError(t, s.Stop(t.Context()))
	requireDown(t, url)

	// Restart starts a stopped server.
	require.NoError(t, s.Restart(t.Context()))
	conn = connect(t, url)
	require.Equal(t, "42", queryString(t, conn, "SELECT v::text FROM kept"))

	// Remove, twice.
	require.NoError(t, s.Remove())
	require.NoError(t, s.Remove())
	requireDown(t, url)
	require.NoDirExists(t, s.Dir())
}

func TestAttach(t *testing.T) {
	t.Parallel()
	s := start(t, pgserver.Config{})

	attached, err := pgserver.Attach(s.Dir())
	require.NoError(t, err)
	require.Equal(t, s.Port(), attached.Port())
	require.Equal(t, s.URL("postgres"), attached.URL("postgres"))
	conn := connect(t, attached.URL("postgres"))
	require.Equal(t, "postgres", queryString(t, conn, "SELECT current_database()"))

	// The attached Server controls the same cluster.
	require.NoError(t, attached.Stop(t.Context()))
	requireDown(t, s.URL("postgres"))
	require.NoError(t, s.Restart(t.Context()))
	connect(t, attached.URL("postgres"))

	// Start refuses a directory that holds a cluster, and leaves the cluster alone.
	_, err = pgserver.Start(t.Context(), pgserver.Config{Dir: s.Dir()})
	require.ErrorContains(t, err, "already holds a cluster")
	connect(t, s.URL("postgres"))

	_, err = pgserver.Attach(newDir(t))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()

	t.Run("DirRequired", func(t *testing.T) {
		t.Parallel()
		_, err := pgserver.Start(t.Context(), pgserver.Config{})
		require.ErrorContains(t, err, "Config.Dir is required")
	})

	t.Run("PortTaken", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		dir := newDir(t)

		_, err = pgserver.Start(t.Context(), pgserver.Config{Dir: dir, Port: l.Addr().(*net.TCPAddr).Port})
		// The error holds the end of the server log, and the failed cluster is gone.
		require.ErrorContains(t, err, "Address already in use")
		require.NoDirExists(t, filepath.Join(dir, "data"))
	})

}

func TestRemoveAfterExit(t *testing.T) {
	t.Parallel()
	s := start(t, pgserver.Config{})
	owner := exec.Command("sleep", "600")
	require.NoError(t, owner.Start())
	t.Cleanup(func() { _ = owner.Process.Kill() })

	require.NoError(t, pgserver.RemoveAfterExit(s.Dir(), owner.Process.Pid))
	connect(t, s.URL("postgres"))

	require.NoError(t, owner.Process.Kill())
	_ = owner.Wait()
	require.Eventually(t, func() bool {
		_, err := os.Stat(s.Dir())
		return os.IsNotExist(err)
	}, 60*time.Second, 100*time.Millisecond, "watchdog did not delete %s", s.Dir())
	requireDown(t, s.URL("postgres"))
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	dir, err := pgserver.FindBinDir()
	if err != nil {
		require.ErrorIs(t, err, pgserver.ErrNoBinaries)
		t.Fatalf("pgserver tests need PostgreSQL: %v", err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		require.FileExists(t, filepath.Join(dir, name))
	}
	require.Contains(t, pgserver.ErrNoBinaries.Error(), "apt-get install postgresql")
}
