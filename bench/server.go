package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
)

// server is the PostgreSQL server under test.
type server struct {
	// url is a superuser URL of the server's postgres database.
	url string
	// fileCopy: the server (15+) takes CREATE DATABASE ... STRATEGY
	// FILE_COPY, which is several times faster for the bench's resets than
	// the default WAL_LOG (that writes the template through the WAL).
	fileCopy bool
	own      *pgserver.Server // nil with --database-url
	keep     bool
}

// openServer returns the server at --database-url, or starts a throwaway
// cluster with pgserver's settings (plus --pg-settings).
func openServer(ctx context.Context, o options, logf func(string, ...any)) (*server, error) {
	if o.databaseURL != "" {
		s := &server{url: o.databaseURL}
		if err := s.checkVersion(ctx); err != nil {
			return nil, fmt.Errorf("connect to --database-url: %w", err)
		}
		return s, nil
	}
	dir, err := os.MkdirTemp("", "tenantmigrate-bench-")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	pg, err := pgserver.Start(ctx, pgserver.Config{Dir: dir, Settings: o.pgSettings})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logf("started PostgreSQL in %s (%s)", dir, time.Since(start).Round(time.Millisecond))
	s := &server{url: pg.URL("postgres"), own: pg, keep: o.keepServer}
	if err := s.checkVersion(ctx); err != nil {
		s.close(logf)
		return nil, err
	}
	return s, nil
}

// checkVersion connects and notes what the server supports.
func (s *server) checkVersion(ctx context.Context) error {
	conn, err := s.connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return err
	}
	s.fileCopy = num >= 150000
	return nil
}

// close removes the throwaway cluster, unless it is kept.
func (s *server) close(logf func(string, ...any)) {
	if s.own == nil {
		return
	}
	if s.keep {
		logf("kept PostgreSQL in %s: %s", s.own.Dir(), s.url)
		return
	}
	if err := s.own.Remove(); err != nil {
		logf("remove PostgreSQL: %v", err)
	}
}

// dbURL is the URL of database name on the server, as the same user.
func (s *server) dbURL(name string) string {
	u, err := url.Parse(s.url)
	if err != nil {
		panic(err) // checked when connecting
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// connect opens a connection to database name ("" for postgres).
func (s *server) connect(ctx context.Context, name string) (*pgx.Conn, error) {
	u := s.url
	if name != "" {
		u = s.dbURL(name)
	}
	return pgx.Connect(ctx, u)
}

// exec runs one statement on the postgres database.
func (s *server) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := s.connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// checkpoint writes out the server's dirty buffers (CHECKPOINT), then the
// kernel's (sync), so that every timed run starts from clean buffers, the
// file system's included.
//
// On ext4 without a journal (this bench's VMs), the inode allocator skips
// every free inode deleted less than 60 s ago, or less than 360 s ago while
// its inode-table block is dirty (recently_deleted in fs/ext4/ialloc.c),
// checking each one for every new file. After a large deletion (a dropped
// database of 10,000 schemas is ~430,000 files) the next runs' relation
// files walk past all of them: perf put 47 s of a 5,000-schema
// migrate --all's server CPU there (BENCHMARKS.md section 11.3). The sync
// cleans the blocks, which leaves the 60 s; the files created meanwhile
// dirty them again, so it does not cure it: the schemas bench keeps the
// previous run's database (retireDB) instead of dropping it.
func (s *server) checkpoint(ctx context.Context) error {
	if err := s.exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	syscall.Sync()
	return nil
}

// recreateDB drops database name (ending its sessions) and creates it again,
// from template ("" for the server's default).
func (s *server) recreateDB(ctx context.Context, conn *pgx.Conn, name, template string) error {
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	sql := "CREATE DATABASE " + ident
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if s.fileCopy {
		sql += " STRATEGY FILE_COPY"
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// retireDB renames database name, if it exists, to name_retired<T>_<n> and returns
// the new name, or "" when there was none: the caller drops it once nothing
// is timed any more. Dropping a database deletes its files, and on this
// bench's file system the deletions slow every file created in the next
// minutes (see checkpoint): a rename deletes nothing.
func (s *server) retireDB(ctx context.Context, conn *pgx.Conn, name string, n int) (string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		return "", nil
	}
	retired := fmt.Sprintf("%s_retired%d_%d", name, time.Now().Unix()%1000000, n)
	sql := "ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " RENAME TO " + pgx.Identifier{retired}.Sanitize()
	// A rename, unlike DROP ... WITH (FORCE), waits for no session: end them
	// and try again until they are gone.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name); err != nil {
			return "", err
		}
		_, err := conn.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if err == nil {
			return retired, nil
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return "", fmt.Errorf("retire database %s: %w", name, err)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// recreateDBs recreates the databases names, concurrency at a time.
func (s *server) recreateDBs(ctx context.Context, names []string, template string, concurrency int) error {
	conns := make(chan *pgx.Conn, concurrency)
	defer func() {
		close(conns)
		for c := range conns {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	for range concurrency {
		c, err := s.connect(ctx, "")
		if err != nil {
			return err
		}
		conns <- c
	}
	var eg errgroup.Group
	eg.SetLimit(concurrency)
	for _, name := range names {
		eg.Go(func() error {
			c := <-conns
			defer func() { conns <- c }()
			return s.recreateDB(ctx, c, name, template)
		})
	}
	return eg.Wait()
}

// dropDBs drops the databases names if they exist.
func (s *server) dropDBs(ctx context.Context, names []string) error {
	conn, err := s.connect(ctx, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for _, name := range names {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// machine describes where the figures were taken.
type machine struct {
	Cores      int               `json:"cores"`
	CPU        string            `json:"cpu"`
	Memory     string            `json:"memory"`
	Kernel     string            `json:"kernel"`
	GoVersion  string            `json:"go_version"`
	PGVersion  string            `json:"pg_version"`
	PGServer   string            `json:"pg_server"` // "throwaway (pgserver)" or "--database-url"
	PGSettings map[string]string `json:"pg_settings"`
}

// machineInfo reads the machine and the server's non-default settings.
func machineInfo(ctx context.Context, s *server) (machine, error) {
	m := machine{
		Cores:      runtime.NumCPU(),
		CPU:        cpuModel(),
		Memory:     memTotal(),
		Kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		GoVersion:  runtime.Version(),
		PGServer:   "--database-url",
		PGSettings: map[string]string{},
	}
	if s.own != nil {
		m.PGServer = "throwaway cluster (internal/pgserver)"
	}
	conn, err := s.connect(ctx, "")
	if err != nil {
		return m, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&m.PGVersion); err != nil {
		return m, err
	}
	// Settings from the configuration file or the command line, less the
	// locale and logging ones initdb writes.
	rows, err := conn.Query(ctx, `
		SELECT name, current_setting(name) FROM pg_settings
		WHERE source NOT IN ('default', 'override', 'client', 'session')
		  AND name !~ '^(lc_|log_|datestyle|timezone|default_text_search_config|dynamic_shared_memory_type|unix_socket|listen_addresses|port$)'
		ORDER BY name`)
	if err != nil {
		return m, err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return m, err
		}
		m.PGSettings[k] = v
	}
	return m, rows.Err()
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func cpuModel() string {
	for line := range strings.SplitSeq(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	sc := bufio.NewScanner(strings.NewReader(readFile("/proc/meminfo")))
	for sc.Scan() {
		var kb int64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

// loadAvg is the 1-minute load average (uptime's first figure).
func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
