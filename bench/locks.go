package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// The locks benchmark measures the trade-off of --transaction-mode tenant:
// a group of migrations holds every lock it takes until it commits. One
// tenant at version locksFrom (its tables hold the sample workspace of
// migration 24) is migrated to the latest version while one session per
// table in locksTables reads that table in a loop, as the application
// would; the figure is the longest one read waited. In file mode an ALTER
// TABLE blocks the table's readers until its own file commits; in tenant
// mode until the last file of its group does.

// locksFrom is the version the tenant is at before the timed run: after the
// NO TRANSACTION 00025, so 26-45 are pending (groups 26-27, 29-34, 36-45).
const locksFrom = 25

// locksTables are the tables read during the run; 26 alters tasks, 29
// projects, tasks and comments, 34 users.
var locksTables = []string{"app.accounts", "app.users", "app.projects", "app.tasks", "app.comments"}

// locksResult is the outcome of the locks benchmark.
type locksResult struct {
	From   int64      `json:"from_version"`
	To     int64      `json:"to_version"`
	Tables []string   `json:"tables"`
	Runs   []locksRun `json:"runs"`
}

// locksRun is one timed migration of the tenant.
type locksRun struct {
	Round int    `json:"round"`
	Mode  string `json:"mode"`
	// MigrateMS is the wall time of Migrate.
	MigrateMS float64 `json:"migrate_ms"`
	// MaxWaitMS is, per table, the longest read of it during the run.
	MaxWaitMS map[string]float64 `json:"max_wait_ms"`
	// Reads is the number of reads done during the run, all tables.
	Reads int `json:"reads"`
}

// worst is the longest read of any table.
func (r locksRun) worst() float64 {
	var w float64
	for _, v := range r.MaxWaitMS {
		w = max(w, v)
	}
	return w
}

func (b *bench) locks(ctx context.Context) error {
	all := migrationsFS()
	upTo, err := filterFS(all, locksFrom)
	if err != nil {
		return err
	}
	before, err := migrator.New(migrator.Config{FS: upTo})
	if err != nil {
		return err
	}
	modes := map[string]*migrator.Migrator{}
	for _, mode := range []migrator.TransactionMode{migrator.TransactionModeFile, migrator.TransactionModeTenant} {
		// No lock_timeout: the figure is how long readers wait, not whether
		// the migration gives up first.
		if modes[string(mode)], err = migrator.New(migrator.Config{FS: all, TransactionMode: mode, TenantLockTimeout: -1}); err != nil {
			return err
		}
	}
	name := b.o.prefix + "_locks"
	defer func() {
		if err := b.srv.dropDBs(context.WithoutCancel(ctx), []string{name}); err != nil {
			b.logf("drop %s: %v", name, err)
		}
	}()
	res := &locksResult{From: locksFrom, To: modes["file"].Latest(), Tables: locksTables}
	b.rep.Locks = res
	for round := 1; round <= b.o.repeat; round++ {
		order := []string{"file", "tenant"}
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, mode := range order {
			if err := b.srv.recreateDBs(ctx, []string{name}, "", 1); err != nil {
				return err
			}
			target := migrator.Target{DatabaseURL: b.srv.dbURL(name)}
			if _, err := before.Migrate(ctx, target); err != nil {
				return fmt.Errorf("migrate to %d: %w", locksFrom, err)
			}
			if err := b.srv.checkpoint(ctx); err != nil {
				return err
			}
			run, err := b.locksRun(ctx, modes[mode], target)
			if err != nil {
				return fmt.Errorf("%s mode: %w", mode, err)
			}
			run.Round, run.Mode = round, mode
			res.Runs = append(res.Runs, run)
			b.logf("locks: %-6s migrate %6.0f ms, longest read %6.1f ms (%d reads)", mode, run.MigrateMS, run.worst(), run.Reads)
		}
	}
	return nil
}

// locksRun migrates target with m while reading every table of locksTables
// in a loop, one session per table.
func (b *bench) locksRun(ctx context.Context, m *migrator.Migrator, target migrator.Target) (locksRun, error) {
	run := locksRun{MaxWaitMS: map[string]float64{}}
	var mu sync.Mutex
	readCtx, stopReads := context.WithCancel(ctx)
	defer stopReads()
	var readers errgroup.Group
	ready := make(chan struct{}, len(locksTables))
	for _, table := range locksTables {
		conn, err := pgx.Connect(ctx, target.DatabaseURL)
		if err != nil {
			return run, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		readers.Go(func() error {
			query := "SELECT count(*) FROM " + table
			var longest time.Duration
			n := 0
			ready <- struct{}{}
			for readCtx.Err() == nil {
				start := time.Now()
				var count int64
				if err := conn.QueryRow(readCtx, query).Scan(&count); err != nil {
					if readCtx.Err() != nil {
						break
					}
					return fmt.Errorf("read %s: %w", table, err)
				}
				longest = max(longest, time.Since(start))
				n++
				// A pause between reads, so the readers do not take a core.
				_ = sleep(readCtx, 2*time.Millisecond)
			}
			mu.Lock()
			run.MaxWaitMS[table] = float64(longest.Microseconds()) / 1000
			run.Reads += n
			mu.Unlock()
			return nil
		})
	}
	for range locksTables {
		<-ready
	}
	start := time.Now()
	_, err := m.Migrate(ctx, target)
	run.MigrateMS = float64(time.Since(start).Microseconds()) / 1000
	stopReads()
	if rerr := readers.Wait(); err == nil {
		err = rerr
	}
	return run, err
}

// filterFS returns the migration files of fsys with versions up to maxVersion.
func filterFS(fsys fs.FS, maxVersion int64) (fstest.MapFS, error) {
	out := fstest.MapFS{}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		if err != nil || v > maxVersion {
			continue
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out[name] = &fstest.MapFile{Data: data}
	}
	return out, nil
}

// writeLocks prints the locks benchmark as Markdown.
func (l *locksResult) write(w io.Writer) {
	fmt.Fprintf(w, "## Locks: one tenant from version %d to %d, readers of existing tables\n\n", l.From, l.To)
	short := make([]string, len(l.Tables))
	for i, t := range l.Tables {
		short[i] = strings.TrimPrefix(t, "app.")
	}
	fmt.Fprintf(w, "| round | mode | migrate ms | longest read ms: %s | worst ms | reads |\n", strings.Join(short, " / "))
	fmt.Fprintln(w, "| ---: | --- | ---: | --- | ---: | ---: |")
	for _, r := range l.Runs {
		waits := make([]string, len(l.Tables))
		for i, t := range l.Tables {
			waits[i] = fmt.Sprintf("%.1f", r.MaxWaitMS[t])
		}
		fmt.Fprintf(w, "| %d | %s | %.0f | %s | %.1f | %d |\n", r.Round, r.Mode, r.MigrateMS, strings.Join(waits, " / "), r.worst(), r.Reads)
	}
	fmt.Fprintln(w)
}
