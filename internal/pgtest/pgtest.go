// Package pgtest provides a real PostgreSQL server to tests, and a fresh database per
// test. Import it from _test.go files only.
//
// The server is the one at TEST_DATABASE_URL if that is set. Otherwise it is a throwaway
// cluster started with pgserver and shared by every test binary of one go test run: the
// binaries are separate processes, children of the same go command, so the cluster is
// keyed by the parent process id. The first binary to need it starts it under a file lock
// in os.TempDir(); the others attach to it. A detached watchdog (pgserver.RemoveAfterExit)
// stops the cluster and deletes its directory once the go command has exited. A test
// binary run by hand shares its cluster with the other children of its shell, and the
// cluster lives until that shell exits.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
)

// EnvURL names the environment variable that points the tests at an existing server: a
// superuser (or CREATEDB) connection string to its "postgres" database.
const EnvURL = "TEST_DATABASE_URL"

// setupTimeout bounds starting or attaching to the shared cluster.
const setupTimeout = 2 * time.Minute

// sharedServer starts or attaches to the cluster shared by this go test run, once per
// test binary. Process-wide by necessity: the cluster outlives every single test.
var sharedServer = sync.OnceValues(startShared)

// ServerURL returns a superuser URL to the "postgres" database of the test server:
// TEST_DATABASE_URL if set, else the cluster shared by this go test run, which it starts if
// needed. It fails the test if there is neither TEST_DATABASE_URL nor PostgreSQL installed.
func ServerURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvURL); url != "" {
		return url
	}
	return Server(t).URL("postgres")
}

// Server returns the cluster shared by this go test run, starting it if needed, or nil
// when TEST_DATABASE_URL is set. Every test package of the run uses this cluster at the
// same time: a test that stops or restarts PostgreSQL should use NewServer instead.
func Server(t testing.TB) *pgserver.Server {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		return nil
	}
	s, err := sharedServer()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return s
}

// NewServer starts a cluster of t's own, with settings added to pgserver's defaults, and
// removes it at cleanup (or, should the test binary die first, when the binary exits). It
// suits tests that stop or restart PostgreSQL. It needs PostgreSQL installed even when
// TEST_DATABASE_URL is set, and fails the test otherwise.
func NewServer(t testing.TB, settings map[string]string) *pgserver.Server {
	t.Helper()
	if _, err := pgserver.FindBinDir(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// Not t.TempDir(): when the tests run as root, the postgres OS user must reach the
	// directory, and t.TempDir() is private to root.
	dir, err := os.MkdirTemp("", "tenantmigrate-pgtest-own-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := pgserver.RemoveAfterExit(dir, os.Getpid()); err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("pgtest: %v", err)
	}
	s, err := pgserver.Start(t.Context(), pgserver.Config{Dir: dir, Settings: settings})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Remove(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// startShared returns the cluster of this go test run, starting it if no other test
// binary of the run has.
func startShared() (*pgserver.Server, error) {
	if _, err := pgserver.FindBinDir(); err != nil {
		return nil, fmt.Errorf("no PostgreSQL to test against: set %s, or %w", EnvURL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	// The go command that runs the test binaries owns the cluster. Without a real parent
	// (a binary run as a container's init child), this process owns it.
	owner := os.Getppid()
	if owner <= 1 {
		owner = os.Getpid()
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tenantmigrate-pgtest-%d", owner))

	// Whoever creates the directory starts the watchdog that deletes it.
	switch err := os.Mkdir(dir, 0o700); {
	case err == nil:
		if err := pgserver.RemoveAfterExit(dir, owner); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("shared cluster: %w", err)
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("shared cluster: %w", err)
	}

	// One binary at a time attaches or starts.
	unlock, err := lock(filepath.Join(dir, "pgtest.lock"))
	if err != nil {
		return nil, fmt.Errorf("shared cluster: %w", err)
	}
	defer unlock()

	s, err := pgserver.Attach(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if s, err = pgserver.Start(ctx, pgserver.Config{Dir: dir}); err != nil {
			return nil, fmt.Errorf("shared cluster: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("shared cluster: %w", err)
	case ping(ctx, s.URL("postgres")) != nil:
		// Started by another binary of this run, since stopped or crashed.
		if err := s.Restart(ctx); err != nil {
			return nil, fmt.Errorf("shared cluster: %w", err)
		}
	}
	return s, nil
}

// lock takes an exclusive flock on path, creating it if needed, and returns the function
// that releases it.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}
