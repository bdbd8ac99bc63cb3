package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var exists bool
	err := connect(t, pgtest.ServerURL(t)).QueryRow(t.Context(),
		"SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	require.NoError(t, err)
	return exists
}

// useNewDatabase creates a database and checks that it is new, named after the test, and
// usable.
func useNewDatabase(t *testing.T) {
	url := pgtest.NewDatabase(t)
	conn := connect(t, url)

	var name string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
	wantPrefix := "t_" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "_") + "_"
	require.True(t, strings.HasPrefix(name, wantPrefix), "%s does not start with %s", name, wantPrefix)
	require.LessOrEqual(t, len(name), 63)

	var tables int
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables))
	require.Zero(t, tables, "new database is not empty")

	_, err := conn.Exec(t.Context(), "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2)")
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM items").Scan(&n))
	require.Equal(t, 2, n)
}

func TestNewDatabaseA(t *testing.T) {
	t.Parallel()
	useNewDatabase(t)
}

func TestNewDatabaseB(t *testing.T) {
	t.Parallel()
	useNewDatabase(t)
}

func TestNewDatabaseManyParallel(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			useNewDatabase(t)
		})
	}
}

func TestNewDatabaseDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("Inner", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		// An open session does not keep the database from being dropped: this one is
		// closed by a cleanup that runs after the drop.
		conn, err := pgx.Connect(t.Context(), url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
		require.True(t, databaseExists(t, name))
	})
	require.NotEmpty(t, name)
	require.False(t, databaseExists(t, name), "database %s not dropped", name)
}

func TestNewDatabaseLongTestNameWithSymbols(t *testing.T) {
	t.Parallel()
	t.Run("with spaces/and-slashes ÄÖ "+strings.Repeat("x", 80), func(t *testing.T) {
		t.Parallel()
		url := pgtest.NewDatabase(t)
		var name string
		require.NoError(t, connect(t, url).QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
		require.Len(t, name, 63)
		require.Regexp(t, `^t_testnewdatabaselongtestnamewithsymbols_with_[a-z]*_[0-9a-f]{12}$`, name)
	})
}

func TestServerURLIsSuperuser(t *testing.T) {
	t.Parallel()
	var super string
	require.NoError(t, connect(t, pgtest.ServerURL(t)).QueryRow(t.Context(), "SHOW is_superuser").Scan(&super))
	require.Equal(t, "on", super)
}

func TestServer(t *testing.T) {
	t.Parallel()
	s := pgtest.Server(t)
	if os.Getenv(pgtest.EnvURL) != "" {
		require.Nil(t, s)
		return
	}
	require.NotNil(t, s)
	require.Equal(t, s.URL("postgres"), pgtest.ServerURL(t))
	require.Same(t, s, pgtest.Server(t), "one cluster per test binary")
}

func TestNewServer(t *testing.T) {
	t.Parallel()
	s := pgtest.NewServer(t, map[string]string{"work_mem": "8MB"})
	conn := connect(t, s.URL("postgres"))
	var workMem string
	require.NoError(t, conn.QueryRow(t.Context(), "SHOW work_mem").Scan(&workMem))
	require.Equal(t, "8MB", workMem)
	require.NoError(t, s.Restart(t.Context()))
	connect(t, s.URL("postgres"))
	if os.Getenv(pgtest.EnvURL) == "" {
		require.NotEqual(t, pgtest.Server(t).Port(), s.Port())
	}
}

// helperEnv makes TestHelperPrintServerURL run.
const helperEnv = "PGTEST_HELPER_PROCESS"

// TestHelperPrintServerURL is not a test: TestSharedAcrossProcesses runs it in child
// processes.
func TestHelperPrintServerURL(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestSharedAcrossProcesses")
	}
	fmt.Println("URL=" + pgtest.ServerURL(t))
}

// TestSharedAcrossProcesses runs two copies of this test binary under one parent, as go
// test runs the binaries of several packages, and checks that they share one cluster that
// goes away once the parent has exited.
func TestSharedAcrossProcesses(t *testing.T) {
	t.Parallel()
	if _, err := pgserver.FindBinDir(); err != nil && os.Getenv(pgtest.EnvURL) != "" {
		t.Skip("PostgreSQL is not installed; tests use TEST_DATABASE_URL")
	}

	// The parent shell runs both children at once and exits when both have.
	run := `"$0" -test.run='^TestHelperPrintServerURL$' -test.count=1 & "$0" -test.run='^TestHelperPrintServerURL$' -test.count=1 & wait`
	cmd := exec.CommandContext(t.Context(), "/bin/sh", "-c", run, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", pgtest.EnvURL+"=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	urls := regexp.MustCompile(`(?m)^URL=(\S+)$`).FindAllStringSubmatch(string(out), -1)
	require.Len(t, urls, 2, "%s", out)
	require.Equal(t, urls[0][1], urls[1][1], "children used different clusters")
	if os.Getenv(pgtest.EnvURL) == "" {
		require.NotEqual(t, pgtest.ServerURL(t), urls[0][1], "a different go test run shares the cluster")
	}

	// The parent has exited: the watchdog stops the cluster and deletes its directory.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tenantmigrate-pgtest-%d", cmd.Process.Pid))
	require.Eventually(t, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	}, time.Minute, 100*time.Millisecond, "%s not removed", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, urls[0][1])
	if err == nil {
		_ = conn.Close(ctx)
	}
	require.Error(t, err, "shared cluster still running after its owner exited")
}
