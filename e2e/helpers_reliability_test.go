package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
)

// This file holds the helpers of the reliability tests (RELIABILITY.md):
// one-shot commands run as processes, and readers of what the tenant
// databases and the control plane hold.

// cmdProc is one run of a one-shot tenantmigrate command (migrate, tenants,
// ...), its stdout and stderr collected together.
type cmdProc struct {
	name    string
	cmd     *exec.Cmd
	out     fleettest.SyncBuffer
	exited  chan struct{} // closed once the process has exited
	waitErr error         // set before exited is closed
}

// startCommand starts `tenantmigrate ARGS...` with only the given
// environment (and PATH). A process still running at cleanup is killed; its
// output is shown if the test failed.
func startCommand(t *testing.T, name string, env []string, args ...string) *cmdProc {
	t.Helper()
	p := &cmdProc{name: name, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}, append(preRolloutEnv, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = dieWithParent()
	require.NoError(t, p.cmd.Start())
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", p.name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *cmdProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s:\n%s", p.name, timeout, p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (p *cmdProc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	<-p.exited
}

// databaseNames returns the names of the databases the tenants live in,
// without repeats.
func databaseNames(t *testing.T, tenants []fleettest.SchemaTenant) []string {
	t.Helper()
	var names []string
	for _, tn := range tenants {
		u, err := url.Parse(tn.URL)
		require.NoError(t, err)
		if name := strings.TrimPrefix(u.Path, "/"); !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// tenantContent is what one tenant's schema holds.
type tenantContent struct {
	// maxVersion is the highest version in goose_db_version; 0 when the
	// table does not exist or is empty.
	maxVersion int64
	// tables tells, for each table asked about, whether it exists.
	tables map[string]bool
}

// readTenants reads each tenant's schema: its highest applied version and
// whether each of tables exists in it.
func readTenants(t *testing.T, tenants []fleettest.SchemaTenant, tables ...string) map[string]tenantContent {
	t.Helper()
	out := make(map[string]tenantContent, len(tenants))
	fleettest.ForEachTenant(t, tenants, func(tn fleettest.SchemaTenant, conn *pgx.Conn) {
		c := tenantContent{tables: map[string]bool{}}
		var hasVersions bool
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL",
			pgx.Identifier{tn.Schema, "goose_db_version"}.Sanitize()).Scan(&hasVersions))
		if hasVersions {
			require.NoError(t, conn.QueryRow(t.Context(), "SELECT coalesce(max(version_id), 0) FROM "+
				pgx.Identifier{tn.Schema, "goose_db_version"}.Sanitize()).Scan(&c.maxVersion))
		}
		for _, table := range tables {
			var exists bool
			require.NoError(t, conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL",
				pgx.Identifier{tn.Schema, table}.Sanitize()).Scan(&exists))
			c.tables[table] = exists
		}
		out[tn.ID] = c
	})
	return out
}

// cpTenant is a tenant's row in the control plane.
type cpTenant struct {
	Version *int64
	Status  *string
}

func (c cpTenant) String() string {
	v, s := "null", "null"
	if c.Version != nil {
		v = fmt.Sprint(*c.Version)
	}
	if c.Status != nil {
		s = *c.Status
	}
	return v + "/" + s
}

// controlPlaneTenants reads every tenant's version and status.
func controlPlaneTenants(t *testing.T, cp *pgxpool.Pool) map[string]cpTenant {
	t.Helper()
	rows, err := cp.Query(t.Context(), "SELECT id, migrations_version, migrations_status FROM tenantmigrate.tenants")
	require.NoError(t, err)
	out := map[string]cpTenant{}
	var id string
	var c cpTenant
	_, err = pgx.ForEachRow(rows, []any{&id, &c.Version, &c.Status}, func() error {
		out[id] = c
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireControlPlaneTruthful checks that the control plane records no
// tenant at a version its database does not have.
func requireControlPlaneTruthful(t *testing.T, cp *pgxpool.Pool, tenants []fleettest.SchemaTenant) {
	t.Helper()
	states := controlPlaneTenants(t, cp)
	contents := readTenants(t, tenants)
	for _, tn := range tenants {
		st := states[tn.ID]
		if st.Version != nil {
			require.LessOrEqual(t, *st.Version, contents[tn.ID].maxVersion,
				"tenant %s: the control plane says %s, its goose_db_version goes up to %d", tn.ID, st, contents[tn.ID].maxVersion)
		}
	}
}

// statusCounts counts the tenants per "version/status".
func statusCounts(states map[string]cpTenant) string {
	counts := map[string]int{}
	for _, st := range states {
		counts[st.String()]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, counts[k])
	}
	return strings.Join(parts, " ")
}

// tenantBackends counts the sessions on the given databases of the server
// at serverURL whose application_name is appName.
func tenantBackends(t *testing.T, server *pgxpool.Pool, dbs []string, appName string) int {
	t.Helper()
	var n int
	require.NoError(t, server.QueryRow(t.Context(), `
		SELECT count(*) FROM pg_stat_activity
		WHERE datname = ANY($1) AND application_name = $2 AND pid <> pg_backend_pid()`,
		dbs, appName).Scan(&n))
	return n
}

// health is the status of GET /health, or 0 when the request failed.
func (s *server) health(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/health", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// alive reports whether the process still runs.
func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// backendSampler samples, every few milliseconds, the sessions on the
// tenant databases per application_name, and keeps the maxima.
//
// A session counts for a process only while the process still holds its
// socket: pg_stat_activity lists a session until its backend has exited,
// which can be a few milliseconds after the client closed the connection,
// so the server alone would count a closed connection and its successor
// together. Each sample therefore keeps, of the sessions of a watched
// process (by application_name), those whose client port is the local port
// of a TCP socket the process has open (read from /proc).
type backendSampler struct {
	stop chan struct{}
	done chan struct{}
	pids map[string]int // application_name -> process id

	// Set when done is closed.
	samples int
	// maxHeld is the most sessions a watched process held at once.
	maxHeld map[string]int
	// maxListed is the most sessions pg_stat_activity listed at once per
	// application_name, closing ones included.
	maxListed map[string]int
	// maxTotal is the most sessions on the databases at once, closing ones
	// included.
	maxTotal int
	err      error
}

// sampleBackends starts sampling the sessions on dbs of the server pool
// connects to, until finish is called. pids maps the application_name of
// each watched process to its process id.
func sampleBackends(t *testing.T, server *pgxpool.Pool, dbs []string, pids map[string]int) *backendSampler {
	t.Helper()
	s := &backendSampler{
		stop: make(chan struct{}), done: make(chan struct{}), pids: pids,
		maxHeld: map[string]int{}, maxListed: map[string]int{},
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := s.sample(server, dbs); err != nil {
				s.err = err
				return
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { s.finish(t) })
	return s
}

func (s *backendSampler) sample(server *pgxpool.Pool, dbs []string) error {
	rows, err := server.Query(context.Background(), `
		SELECT application_name, coalesce(client_port, -1) FROM pg_stat_activity
		WHERE datname = ANY($1) AND pid <> pg_backend_pid()`, dbs)
	if err != nil {
		return err
	}
	ports := map[string][]int{}
	total := 0
	var app string
	var port int
	if _, err := pgx.ForEachRow(rows, []any{&app, &port}, func() error {
		ports[app] = append(ports[app], port)
		total++
		return nil
	}); err != nil {
		return err
	}
	s.maxTotal = max(s.maxTotal, total)
	established := establishedPorts()
	for app, ps := range ports {
		s.maxListed[app] = max(s.maxListed[app], len(ps))
		pid, ok := s.pids[app]
		if !ok {
			continue
		}
		open, err := openLocalPorts(pid, established)
		if err != nil {
			continue // the process has exited
		}
		held := 0
		for _, p := range ps {
			if open[p] {
				held++
			}
		}
		s.maxHeld[app] = max(s.maxHeld[app], held)
	}
	s.samples++
	return nil
}

// finish stops sampling; the maxima are final after it.
func (s *backendSampler) finish(t *testing.T) {
	t.Helper()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	require.NoError(t, s.err, "sampling pg_stat_activity")
}

// establishedPorts maps the inode of every established TCP socket of this
// network namespace to its local port, from /proc/net/tcp and tcp6.
func establishedPorts() map[string]int {
	ports := map[string]int{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "01" {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports[f[9]] = int(p)
			}
		}
	}
	return ports
}

// openLocalPorts returns the local ports of the established TCP
// connections process pid has open, given establishedPorts.
func openLocalPorts(pid int, established map[string]int) (map[int]bool, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	ports := map[int]bool{}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			if p, ok := established[strings.TrimSuffix(inode, "]")]; ok {
				ports[p] = true
			}
		}
	}
	return ports, nil
}

// logStatuses records, in public.status_log of the control plane, every
// status written to a tenant row, so a test can assert what was never
// written rather than catch a state by polling.
func logStatuses(t *testing.T, cp *pgxpool.Pool) {
	t.Helper()
	_, err := cp.Exec(t.Context(), `
		CREATE TABLE public.status_log (seq bigserial PRIMARY KEY, tenant_id text NOT NULL, version bigint, status text);
		CREATE FUNCTION public.log_status() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.status_log (tenant_id, version, status) VALUES (NEW.id, NEW.migrations_version, NEW.migrations_status);
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_status AFTER UPDATE ON tenantmigrate.tenants
			FOR EACH ROW EXECUTE FUNCTION public.log_status();`)
	require.NoError(t, err)
}

// statusesWritten counts the status writes per status in public.status_log.
func statusesWritten(t *testing.T, cp *pgxpool.Pool) map[string]int {
	t.Helper()
	return fleettest.Counts(t, cp, "SELECT coalesce(status, 'NULL'), count(*)::int FROM public.status_log GROUP BY 1")
}
