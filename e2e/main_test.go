// Package e2e tests the tenantmigrate binary as it runs in production:
// several `serve` processes on one control plane, talked to over HTTP and
// checked through SQL. TestMain builds the binary once per test run.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
)

const (
	encryptionKey = "e2e-encryption-key-0123456789"
	adminKey      = "e2e-admin-key-0123456789abcdef"
)

// binary is the tenantmigrate binary TestMain built.
var binary string //nolint:gochecknoglobals // set once by TestMain

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tenantmigrate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "tenantmigrate")
	build := exec.Command(goTool(), "build", "-o", binary, "github.com/tenantmigrate/tenantmigrate/cmd/tenantmigrate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build tenantmigrate:", err)
		return 1
	}
	return m.Run()
}

// goTool is the go command: the one on PATH, else $GOROOT/bin/go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// server is one running `tenantmigrate serve` process.
type server struct {
	name string
	cmd  *exec.Cmd
	// URL is http://ADDR, from the process's "listening" log line.
	URL string

	logs    fleettest.SyncBuffer
	addr    chan string
	exited  chan struct{} // closed once the process has exited
	waitErr error         // set before exited is closed
}

// startServer starts `tenantmigrate serve --listen 127.0.0.1:0 ARGS...`
// with only the given environment (and PATH), without waiting for it to
// listen: call waitListening. The process is stopped (SIGTERM, then SIGKILL) at cleanup,
// and its logs are shown if the test failed.
func startServer(t *testing.T, name string, env []string, args ...string) *server {
	t.Helper()
	s := &server{name: name, addr: make(chan string, 1), exited: make(chan struct{})}
	s.cmd = exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	s.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}, append(preRolloutEnv, env...)...)
	s.cmd.Stdout = &s.logs
	s.cmd.SysProcAttr = dieWithParent()
	stderr, err := s.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, s.cmd.Start())

	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = s.logs.Write(append(slices.Clone(line), '\n'))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
				select {
				case s.addr <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(&s.logs, stderr) // after an over-long line: keep draining
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	t.Cleanup(func() {
		s.stop(t, 30*time.Second)
		if t.Failed() {
			t.Logf("logs of %s (pid %d):\n%s", s.name, s.cmd.Process.Pid, s.logs.String())
		}
	})
	return s
}

// waitListening waits for the process's "listening" log line.
func (s *server) waitListening(t *testing.T) {
	t.Helper()
	select {
	case addr := <-s.addr:
		s.URL = "http://" + addr
	case <-s.exited:
		t.Fatalf("%s exited before listening (%v):\n%s", s.name, s.waitErr, s.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not log \"listening\" within 60s:\n%s", s.name, s.logs.String())
	}
}

// stop ends the process gracefully (SIGTERM), killing it if it has not
// exited within timeout, and returns its exit code.
func (s *server) stop(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(timeout):
		t.Errorf("%s did not exit within %s of SIGTERM; killing it", s.name, timeout)
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	return s.cmd.ProcessState.ExitCode()
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (s *server) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, s.cmd.Process.Kill())
	<-s.exited
}

// admin sends an admin API request with the admin key and decodes the JSON
// answer into out (when not nil). It returns the status.
func (s *server) admin(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(raw, out), "%s %s: %s", method, path, raw)
	}
	return resp.StatusCode
}

// remaining is GET /admin/migrations.
type remaining struct {
	Remaining     int64 `json:"remaining"`
	LatestVersion int64 `json:"latestVersion"`
}

// ownsRiverID reports whether id is the River client id of the process:
// the queue's default id is HOST_PID_RANDOM.
func (s *server) ownsRiverID(id string) bool {
	parts := strings.Split(id, "_")
	return len(parts) >= 3 && parts[len(parts)-2] == strconv.Itoa(s.cmd.Process.Pid)
}

// preRolloutEnv makes the rollout of every process one wave that never
// halts, as the fleet behaved before rollouts: the tests written before
// them are about other things, and their failing tenants must neither halt
// the fleet nor wait behind a first wave. A test about rollouts sets WAVES
// and HALT_FAILURE_RATE in its env, which comes later and wins.
var preRolloutEnv = []string{"WAVES=100%", "HALT_FAILURE_RATE=100%"}

// serveEnv is the environment shared by the processes of one test.
func serveEnv(controlPlane, migrationsDir, strategy string, extra ...string) []string {
	return append([]string{
		"DATABASE_URL=" + controlPlane,
		"ENCRYPTION_KEY=" + encryptionKey,
		"ADMIN_API_KEYS=" + adminKey,
		"MIGRATIONS_DIR=" + migrationsDir,
		"MIGRATION_STRATEGY=" + strategy,
		"RIVER_UI=false",
		"LOG_LEVEL=info",
	}, extra...)
}

// writeMigrations writes goose files, version i+1 running ups[i], to a new
// directory.
func writeMigrations(t *testing.T, ups ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, f := range fleettest.Migrations(ups...) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), f.Data, 0o600))
	}
	return dir
}

// registerTenants creates dbs databases and registers perDB schema tenants
// in each, prefix-000, prefix-001, ..., through the library (which also
// creates the control plane's schema).
func registerTenants(t *testing.T, controlPlane, prefix string, dbs, perDB int) []fleettest.SchemaTenant {
	t.Helper()
	o, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: controlPlane, EncryptionKey: encryptionKey, ReadOnly: true})
	require.NoError(t, err)
	defer o.Close()
	return fleettest.NewSchemaTenants(t, prefix, dbs, perDB, func(tn fleettest.SchemaTenant) {
		_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: tn.ID, DatabaseURL: tn.URL, Schema: tn.Schema})
		require.NoError(t, err)
	})
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// pollEvery is how often waitFor checks its condition.
const pollEvery = 50 * time.Millisecond

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	fleettest.Poll(t, pollEvery, timeout, what, cond)
}

// waitAllLatest waits until the control plane lists every tenant as
// COMPLETED at version latest.
func waitAllLatest(t *testing.T, cp *pgxpool.Pool, tenants []fleettest.SchemaTenant, latest int64, timeout time.Duration) {
	t.Helper()
	fleettest.WaitAllCompleted(t, cp, fleettest.IDs(tenants), latest, pollEvery, timeout)
}

// waitNoneRemaining polls GET /admin/migrations on s until no job remains.
func waitNoneRemaining(t *testing.T, s *server, latest int64) {
	t.Helper()
	waitFor(t, 30*time.Second, s.name+" reporting no remaining jobs", func() bool {
		var r remaining
		require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/admin/migrations", "", &r))
		require.Equal(t, latest, r.LatestVersion)
		return r.Remaining == 0
	})
}
