// Package pgserver starts and stops a throwaway local PostgreSQL cluster from the
// PostgreSQL programs installed on this machine (initdb, pg_ctl, postgres).
//
// A cluster lives in one directory, Config.Dir, that holds its data directory, server log,
// Unix socket and a state file from which Attach can find it again. The server listens on
// 127.0.0.1 only and trusts every local connection: it is for tests and demos, never for data
// that matters.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Names inside Config.Dir.
const (
	dataDirName   = "data"
	logFileName   = "postgres.log"
	stateFileName = "pgserver.json"
	// confFileName is the file, inside the data directory, that holds the settings given
	// by Start. postgresql.conf includes it.
	confFileName = "pgserver.conf"
)

// Superuser is the name of the superuser role that initdb creates.
const Superuser = "postgres"

// maxSocketPathLen is the longest Unix socket path Linux accepts (sun_path less its NUL).
const maxSocketPathLen = 107

// cleanupTimeout bounds the cleanup that runs after a failure or from Remove.
const cleanupTimeout = time.Minute

// Config configures Start.
type Config struct {
	// Dir is the directory for the cluster: its data directory, server log, Unix socket
	// and state file. Required. It is created if missing. When this process is root the
	// server runs as the postgres OS user, so Dir is given to that user and every directory
	// above Dir must be searchable by it (os.TempDir() is; t.TempDir() is not).
	Dir string

	// Port is the TCP port to listen on, on 127.0.0.1. Defaults to a free port picked at
	// start.
	Port int

	// Settings are server settings (as given to postgres -c) that override the defaults:
	// max_connections=500, fsync=off, synchronous_commit=off, full_page_writes=off,
	// shared_buffers=128MB. listen_addresses, port and unix_socket_directories are set
	// by Start and cannot be overridden. Defaults to none.
	Settings map[string]string

	// BinDir is the directory that holds initdb, pg_ctl and postgres. Defaults to
	// FindBinDir().
	BinDir string
}

// Server is a local PostgreSQL cluster started by Start or found by Attach. Its methods
// are safe for concurrent use.
type Server struct {
	dir  string
	port int
	run  runner

	// mu serializes Stop, Restart and Remove.
	mu sync.Mutex
}

// Start creates a cluster in cfg.Dir with initdb (superuser postgres, trust
// authentication) and starts it with pg_ctl, waiting until it accepts connections. It
// fails if cfg.Dir already holds a cluster: use Attach for that. On failure it stops and
// deletes what it created, and the error holds the end of the server log.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start postgres: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if n := len(socketPath(dir, 65535)); n > maxSocketPathLen {
		return nil, fmt.Errorf("start postgres: Config.Dir %s is too long for a Unix socket path (%d > %d bytes)", dir, n, maxSocketPathLen)
	}
	binDir := cfg.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	r, err := newRunner(binDir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{dir: dir, run: r}

	// Create the cluster.
	if err := s.initdb(ctx); err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}

	// Start it. A port we picked may be taken by someone else before the server binds it:
	// then pick another.
	for attempt := 1; ; attempt++ {
		s.port = cfg.Port
		if s.port == 0 {
			if s.port, err = freePort(); err != nil {
				break
			}
		}
		if err = s.writeConf(cfg.Settings); err != nil {
			break
		}
		err = s.start(ctx)
		var se *startError
		if err == nil || cfg.Port != 0 || attempt == 3 ||
			!errors.As(err, &se) || !strings.Contains(se.log, "Address already in use") {
			break
		}
	}
	if err == nil {
		err = s.writeState()
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start postgres in %s: %w", dir, err), s.discard())
	}
	return s, nil
}

// URL returns the URL of database on this server as the postgres superuser.
func (s *Server) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, s.port, url.PathEscape(database))
}

// Port returns the TCP port the server listens on, on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Dir returns the cluster's directory, Config.Dir made absolute.
func (s *Server) Dir() string { return s.dir }

// Stop stops the server with pg_ctl stop -m fast (rolling back open transactions and
// closing connections) and waits until it has exited. It does nothing if the server is
// not running, so it is safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(ctx); err != nil {
		return fmt.Errorf("stop postgres in %s: %w", s.dir, err)
	}
	return nil
}

// Restart stops the server if it is running and starts it again from the same data
// directory on the same port. Clients see their connections close, as in an outage.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(ctx); err != nil {
		return fmt.Errorf("restart postgres in %s: %w", s.dir, err)
	}
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("restart postgres in %s: %w", s.dir, err)
	}
	return nil
}

// Remove stops the server if it is running and deletes its directory. It is safe to call
// twice. It deletes the directory even if the server does not stop; the server then shuts
// itself down when it finds its data directory gone.
func (s *Server) Remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	stopErr := s.stop(ctx)
	if err := errors.Join(stopErr, os.RemoveAll(s.dir)); err != nil {
		return fmt.Errorf("remove postgres in %s: %w", s.dir, err)
	}
	return nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, dataDirName) }
func (s *Server) logPath() string { return filepath.Join(s.dir, logFileName) }

func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}

// initdb creates the data directory and makes postgresql.conf include confFileName.
func (s *Server) initdb(ctx context.Context) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if entries, err := os.ReadDir(s.dataDir()); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s already holds a cluster (use Attach)", s.dataDir())
	}
	if err := s.run.chown(s.dir); err != nil {
		return err
	}
	err := s.run.run(ctx, s.dir, "initdb", "-D", s.dataDir(), "-U", Superuser, "-A", "trust",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	if err != nil {
		if s.run.uid >= 0 {
			err = fmt.Errorf("%w (running as root: every directory above %s must be searchable by the %s OS user)", err, s.dir, osUser)
		}
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "\n# Settings of pgserver.Start.\ninclude '%s'\n", confFileName)
	return errors.Join(err, f.Close())
}

// writeConf writes the server settings: the defaults, then settings, then those that
// Start owns. The last value of a setting wins.
func (s *Server) writeConf(settings map[string]string) error {
	var b strings.Builder
	write := func(name, value string) {
		value = strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(value)
		fmt.Fprintf(&b, "%s = '%s'\n", name, value)
	}
	write("max_connections", "500")
	write("fsync", "off")
	write("synchronous_commit", "off")
	write("full_page_writes", "off")
	write("shared_buffers", "128MB")
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		write(name, settings[name])
	}
	write("listen_addresses", "127.0.0.1")
	write("port", strconv.Itoa(s.port))
	write("unix_socket_directories", s.dir)

	path := filepath.Join(s.dataDir(), confFileName)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return s.run.chown(path)
}

// startError is a failure to start the server, with what the server logged meanwhile.
type startError struct {
	err error
	log string
}

func (e *startError) Error() string {
	return fmt.Sprintf("%v\nserver log (last lines):\n%s", e.err, tail(e.log, 20))
}

func (e *startError) Unwrap() error { return e.err }

// start starts the server and waits until it accepts connections.
func (s *Server) start(ctx context.Context) error {
	offset := fileSize(s.logPath())
	err := s.run.run(ctx, s.dir, "pg_ctl", "start", "-D", s.dataDir(), "-l", s.logPath(), "-w", "-t", "120", "-s")
	if err != nil {
		return &startError{err: err, log: readFrom(s.logPath(), offset)}
	}
	return nil
}

// stop stops the server if it is running.
func (s *Server) stop(ctx context.Context) error {
	running, err := s.running(ctx)
	if err != nil || !running {
		return err
	}
	return s.run.run(ctx, s.dir, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w", "-t", "120", "-s")
}

// running reports whether the server is running, from pg_ctl status.
func (s *Server) running(ctx context.Context) (bool, error) {
	// The data directory may be gone, and then so may s.dir: run from /.
	out, err := s.run.command(ctx, "/", "pg_ctl", "status", "-D", s.dataDir()).CombinedOutput()
	var exitErr interface{ ExitCode() int }
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exitErr) && (exitErr.ExitCode() == 3 || exitErr.ExitCode() == 4):
		// 3: not running; 4: no data directory.
		return false, nil
	default:
		return false, fmt.Errorf("pg_ctl status: %w: %s", err, strings.TrimSpace(string(out)))
	}
}

// discard stops and deletes what a failed Start created, keeping the server log.
func (s *Server) discard() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	err := errors.Join(s.stop(ctx), os.RemoveAll(s.dataDir()))
	if rmErr := os.Remove(filepath.Join(s.dir, stateFileName)); !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	if err != nil {
		return fmt.Errorf("clean up after failed start: %w", err)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on, or "" if it cannot be read.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
