package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// This file runs migrations backwards (Down) and caps a run at a version below the source's
// latest (Target.UpTo): the way back, for rollbacks and a pinned fleet target.
//
//   - goose sources: the "-- +goose Down" section of each SQL file, the down function of a Go
//     migration, through goose's Provider.DownTo under the tenant's lock, newest first; goose
//     deletes each version's goose_db_version row in the transaction of its Down.
//   - golang-migrate sources: the .down.sql files, as golang-migrate's `migrate down` runs
//     them: before each, the tenant is marked dirty at the version below; after it, clean there.
//     A failed one leaves the tenant dirty, as golang-migrate would.
//
// A version whose Down is empty or missing is never run backwards: goose would delete its row
// and leave its tables, and the source would then lie about the tenant. WithoutDown names them so
// that a caller refuses before it touches any tenant, and Down refuses such a tenant too.

// ErrNoDown is wrapped by the *NoDownError of WithoutDown's callers and of Down: a version to
// undo has no Down section.
var ErrNoDown = errors.New("migrations without a Down section")

// NoDownError names the migrations that have no Down (or an empty one). It wraps ErrNoDown.
type NoDownError struct {
	// Files are the migrations' file names (or "go migration N"), in version order.
	Files []string
}

func (e *NoDownError) Error() string {
	return fmt.Sprintf("%s: %s; nothing was undone (write their Down sections, or repair by hand and use force)",
		ErrNoDown, strings.Join(e.Files, ", "))
}

// Unwrap returns ErrNoDown.
func (e *NoDownError) Unwrap() error { return ErrNoDown }

// upToVersion is the version goose's UpTo takes for Target.UpTo.
func upToVersion(upTo int64) int64 {
	if upTo > 0 {
		return upTo
	}
	return goose.MaxVersion
}

// capPending keeps the golang-migrate migrations at or below upTo (all when upTo is 0).
func capPending(pending []gmMigration, upTo int64) []gmMigration {
	if upTo <= 0 {
		return pending
	}
	for i, g := range pending {
		if g.version > upTo {
			return pending[:i]
		}
	}
	return pending
}

// WithoutDown returns the names of the source's migrations above version above and at most
// upTo whose Down is empty or missing, in version order. It reads the source only.
func (m *Migrator) WithoutDown(above, upTo int64) ([]string, error) {
	var out []string
	in := func(v int64) bool { return v > above && v <= upTo }
	if m.format == FormatGolangMigrate {
		for _, g := range m.gm {
			if in(g.version) && strings.TrimSpace(string(g.down)) == "" {
				name := g.downName
				if name == "" {
					name = strings.TrimSuffix(g.upName, ".up.sql") + ".down.sql (missing)"
				}
				out = append(out, name)
			}
		}
		return out, nil
	}
	empty := map[int64]string{}
	for _, g := range m.goMigrations {
		if in(g.Version) && g.DownFnContext == nil && g.DownFnNoTxContext == nil {
			empty[g.Version] = goMigrationName(g.Version)
		}
	}
	if m.fsys != nil {
		// goose parses a file's Down section when it runs it: run every one, unversioned, on a
		// connection that accepts every statement and runs nothing, and read goose's own verdict.
		db := sql.OpenDB(dryRunConnector{})
		defer db.Close()
		p, err := goose.NewProvider(goose.DialectPostgres, db, m.fsys,
			goose.WithDisableVersioning(true), goose.WithDisableGlobalRegistry(true))
		if err != nil {
			return nil, fmt.Errorf("read down sections: %w", err)
		}
		results, err := p.DownTo(context.Background(), 0)
		if err != nil {
			return nil, fmt.Errorf("read down sections: %w", err)
		}
		for _, r := range results {
			if r.Empty && in(r.Source.Version) {
				empty[r.Source.Version] = path.Base(r.Source.Path)
			}
		}
	}
	for _, v := range m.versions {
		if name, ok := empty[v]; ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// Down runs backwards, newest first, every migration applied to the target above version to,
// under the tenant's lock, and returns what it did: Result.Applied are the versions undone, in
// order, and Result.Version the version after the run (on failure, the version where it stopped:
// the failed migration's own). A target without a version table has nothing to undo.
//
// A version to undo without a Down is a *NoDownError and nothing is undone. A Down that fails
// is an *ApplyError naming the version and its file, as in Migrate; the versions undone before
// it stay undone.
func (m *Migrator) Down(ctx context.Context, t Target, to int64) (Result, error) {
	start := time.Now()
	if to < 0 {
		return Result{Version: -1}, fmt.Errorf("roll back to version %d: must not be negative", to)
	}
	down := m.downGoose
	if m.format == FormatGolangMigrate {
		down = m.downGolangMigrate
	}
	res, err := down(ctx, t, to)
	res.Duration = time.Since(start)
	if err != nil {
		return res, redact.Error(err, t.DatabaseURL)
	}
	return res, nil
}

func (m *Migrator) downGoose(ctx context.Context, t Target, to int64) (res Result, err error) {
	res.Version = -1
	db, target, err := m.openTarget(ctx, t, false)
	if err != nil {
		return res, err
	}
	defer db.Close()

	table, exists, err := resolveVersionTable(ctx, db.QueryRowContext, t.Schema, m.versionTable, goose.DefaultTablename)
	if err != nil {
		return res, err
	}
	if !exists {
		res.Version = 0
		return res, nil
	}
	p, err := m.newProvider(db, t.Schema, table, func(ctx context.Context, conn *sql.Conn) error {
		// Under the lock, before goose undoes anything: every version to undo has a Down.
		return m.checkDown(ctx, conn, table, to)
	})
	if err != nil {
		return res, err
	}
	results, downErr := p.DownTo(ctx, to)
	var partial *goose.PartialError
	if errors.As(downErr, &partial) {
		results = partial.Applied
	}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Version)
		m.logger.DebugContext(ctx, "migration undone", target,
			slog.Int64("version", r.Source.Version), slog.String("source", path.Base(r.Source.Path)),
			slog.Int64("duration_ms", r.Duration.Milliseconds()))
	}
	if err := versionAfter(ctx, p, downErr, &res); err != nil {
		return res, err
	}
	if res.Version < 0 && partial != nil {
		// The target could not be read after the failure (it went away): the versions undone
		// are gone, and the failed migration's Down rolled back with its transaction. -1 would
		// leave the caller with the version the target had before the run, which it may lack.
		res.Version = partial.Failed.Source.Version
	}
	if downErr == nil {
		return res, nil
	}
	return res, m.runError("down", downErr, partial)
}

// checkDown refuses, with a *NoDownError, to undo versions of table above to that have no Down.
func (m *Migrator) checkDown(ctx context.Context, conn *sql.Conn, table VersionTable, to int64) error {
	var top int64
	if err := conn.QueryRowContext(ctx, "SELECT coalesce(max(version_id), 0) FROM "+table.String()).Scan(&top); err != nil {
		return fmt.Errorf("read version: %w", err)
	}
	files, err := m.WithoutDown(to, top)
	if err != nil {
		return err
	}
	if len(files) > 0 {
		return &NoDownError{Files: files}
	}
	return nil
}

// downGolangMigrate is Down for a golang-migrate source; see the comment at the top of the file.
func (m *Migrator) downGolangMigrate(ctx context.Context, t Target, to int64) (res Result, err error) {
	res.Version = -1
	conn, target, closeAll, err := m.openSession(ctx, t, false)
	if err != nil {
		return res, err
	}
	defer closeAll()

	table, exists, err := resolveVersionTable(ctx, conn.QueryRowContext, t.Schema, m.versionTable, GolangMigrateTable)
	if err != nil {
		return res, err
	}
	if !exists {
		res.Version = 0
		return res, nil
	}
	unlock, err := m.gmLock(ctx, conn, t.Schema, table)
	if err != nil {
		return res, err
	}
	defer unlock()
	st, err := readGMState(ctx, conn.QueryRowContext, table, true)
	if err != nil {
		return res, err
	}
	res.Version = st.current()
	if st.dirty {
		return res.dirtyAt(m, st)
	}
	if files, err := m.WithoutDown(to, st.version); err != nil || len(files) > 0 {
		if err == nil {
			err = &NoDownError{Files: files}
		}
		return res, err
	}
	for st.version > to {
		i := m.gmIndex(st.version)
		if i < 0 {
			return res, fmt.Errorf("undo version %d: the source has no migration %d (a newer release applied it)", st.version, st.version)
		}
		g := m.gm[i]
		prev := int64(-1) // golang-migrate's NilVersion: nothing applied
		if i > 0 {
			prev = m.gm[i-1].version
		}
		began := time.Now()
		if err := setGMVersion(ctx, conn, table, prev, true); err != nil {
			return res, fmt.Errorf("mark version %d dirty before undoing %d: %w", prev, g.version, err)
		}
		if _, err := conn.ExecContext(ctx, string(g.down)); err != nil {
			return res, &ApplyError{Version: g.version, Name: g.downName, Err: &leftDirtyError{err: err, dirty: &DirtyError{Version: prev}}}
		}
		if err := setGMVersionClean(ctx, conn, table, prev); err != nil {
			return res, &ApplyError{Version: g.version, Name: g.downName,
				Err: &leftDirtyError{err: fmt.Errorf("mark clean after undoing: %w", err), dirty: &DirtyError{Version: prev}}}
		}
		res.Applied = append(res.Applied, g.version)
		res.Version = max(prev, 0)
		st.version = prev
		m.logger.DebugContext(ctx, "migration undone", target,
			slog.Int64("version", g.version), slog.String("source", g.downName),
			slog.Int64("duration_ms", time.Since(began).Milliseconds()))
	}
	return res, nil
}

// gmIndex is the index of version in m.gm, -1 when the source lacks it.
func (m *Migrator) gmIndex(version int64) int {
	for i, g := range m.gm {
		if g.version == version {
			return i
		}
	}
	return -1
}

// setGMVersionClean records version clean, as golang-migrate's SetVersion does: NilVersion (-1)
// leaves the table empty.
func setGMVersionClean(ctx context.Context, conn *sql.Conn, table VersionTable, version int64) error {
	if version >= 0 {
		return setGMVersion(ctx, conn, table, version, false)
	}
	_, err := conn.ExecContext(ctx, "TRUNCATE "+table.String())
	return err
}
