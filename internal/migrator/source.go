package migrator

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing/fstest"

	"github.com/pressly/goose/v3"
)

// GoChecksum is the SourceMigration.Checksum of every Go migration. Go code is compiled into the
// binary and has no file to hash, so a Go migration is only checked for presence (and for still
// being a Go migration): an edit of its code goes unnoticed.
const GoChecksum = "go"

// checksumPrefix names the hash of a SQL migration's checksum, so another one can follow.
const checksumPrefix = "sha256:"

// SourceMigration is one migration of the source, as New loaded it.
type SourceMigration struct {
	// Version is the migration's version.
	Version int64
	// Name is the file name of a SQL migration ("00003_add_index.sql"), or "go migration N" for a
	// Go migration.
	Name string
	// Checksum identifies the migration's content: "sha256:" and the hexadecimal SHA-256 of the
	// file's bytes, exactly as read (no line-ending or whitespace normalisation), for a SQL
	// migration; GoChecksum for a Go migration.
	Checksum string
	// Envsub reports a SQL migration that turns on goose's environment substitution
	// ("-- +goose ENVSUB ON"): goose replaces ${VAR} in it from the environment of the process
	// that applies it, so the SQL run can differ from the file Checksum covers.
	Envsub bool
	// DownName is the file name of the version's down migration in a golang-migrate source
	// ("00003_add_index.down.sql"), loaded and kept but never applied; "" for goose sources and
	// versions without one.
	DownName string
}

// usesEnvsub reports whether a SQL migration file has a "-- +goose ENVSUB ON" annotation, read
// the way goose v3's parser reads annotations (internal/sqlparser, which cannot be imported): a
// line that starts with "--" after spaces and contains "+goose"; without the dashes and the first
// "+goose", and trimmed, it equals "ENVSUB ON" ignoring case. goose rejects such a line with
// leading whitespace at parse time, so flagging it too is only cautious. An annotation in the Down
// section counts too: the file then still depends on the environment.
func usesEnvsub(data []byte) bool {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(strings.TrimSpace(line), "--") || !strings.Contains(line, "+goose") {
			continue
		}
		cmd := strings.Replace(strings.ReplaceAll(line, "--", ""), "+goose", "", 1)
		if strings.EqualFold(strings.TrimSpace(cmd), "ENVSUB ON") {
			return true
		}
	}
	return false
}

// IsGo reports whether m is a Go migration.
func (m SourceMigration) IsGo() bool { return m.Checksum == GoChecksum }

// sqlChecksum is the Checksum of a SQL migration file with contents data.
func sqlChecksum(data []byte) string {
	sum := sha256.Sum256(data)
	return checksumPrefix + hex.EncodeToString(sum[:])
}

// goMigrationName is the SourceMigration.Name of the Go migration with version v.
func goMigrationName(v int64) string { return "go migration " + strconv.FormatInt(v, 10) }

// source is the migration set as loaded once by New.
type source struct {
	format     Format
	gm         []gmMigration // golang-migrate sources only, in version order
	fsys       fs.FS         // goose sources only; nil if there are no SQL files
	versions   []int64
	migrations []SourceMigration // in version order
	maxConns   int
}

// loadSource reads the source in its format (forced, or recognised from the file names, see
// detectFormat).
func loadSource(fsys fs.FS, goMigrations []*goose.Migration, forced Format) (*source, error) {
	files, err := listSourceFiles(fsys)
	if err != nil {
		return nil, err
	}
	format, err := detectFormat(forced, files, len(goMigrations))
	if err != nil {
		return nil, err
	}
	if format == FormatGolangMigrate {
		return loadGolangMigrateSource(fsys, files.gm)
	}
	return loadGooseSource(fsys, goMigrations)
}

// loadGooseSource copies the versioned SQL files at the root of fsys into memory, checks the whole set
// with goose (duplicate versions, Go migrations built properly) and parses every SQL file with
// goose's own parser.
func loadGooseSource(fsys fs.FS, goMigrations []*goose.Migration) (*source, error) {
	mem, err := copySQLFiles(fsys)
	if err != nil {
		return nil, err
	}
	var memFS fs.FS // stays nil (not an empty MapFS) when there are no SQL files
	if len(mem) > 0 {
		memFS = mem
	}

	// goose.NewProvider collects and merges the files and Go migrations without touching the
	// database, so a connection that never connects is enough for it.
	db := sql.OpenDB(dryRunConnector{})
	defer db.Close()

	all, err := goose.NewProvider(goose.DialectPostgres, db, memFS,
		goose.WithGoMigrations(goMigrations...),
		goose.WithDisableGlobalRegistry(true),
	)
	if errors.Is(err, goose.ErrNoMigrations) {
		return nil, fmt.Errorf("no versioned .sql files at the root of the source and no go migrations: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	var (
		versions   []int64
		migrations []SourceMigration
	)
	for _, s := range all.ListSources() {
		versions = append(versions, s.Version)
		sm := SourceMigration{Version: s.Version, Name: goMigrationName(s.Version), Checksum: GoChecksum}
		if s.Type == goose.TypeSQL {
			name := path.Base(s.Path)
			f, ok := mem[name]
			if !ok {
				return nil, fmt.Errorf("load migrations: no file %s for version %d", name, s.Version)
			}
			sm = SourceMigration{Version: s.Version, Name: name, Checksum: sqlChecksum(f.Data), Envsub: usesEnvsub(f.Data)}
		}
		migrations = append(migrations, sm)
	}

	if memFS != nil {
		if err := parseSQLFiles(db, memFS); err != nil {
			return nil, err
		}
	}

	// goose runs SQL migrations and transactional Go migrations on the connection that holds the
	// advisory lock, but non-transactional Go migrations on the *sql.DB: they need a second
	// connection (and goose refuses to run them with a pool of one).
	maxConns := 1
	for _, m := range goMigrations {
		if m.UpFnContext == nil {
			maxConns = 2
		}
	}

	return &source{format: FormatGoose, fsys: memFS, versions: versions, migrations: migrations, maxConns: maxConns}, nil
}

// copySQLFiles returns the files at the root of fsys that goose treats as SQL migrations.
func copySQLFiles(fsys fs.FS) (fstest.MapFS, error) {
	mem := fstest.MapFS{}
	if fsys == nil {
		return mem, nil
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		if _, err := goose.NumericComponent(name); err != nil {
			continue // not a migration, goose ignores it too
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		mem[name] = &fstest.MapFile{Data: data}
	}
	return mem, nil
}

// parseSQLFiles makes goose parse every SQL file by "applying" them, with versioning disabled,
// to a connection that accepts every statement without running it. goose has no public parser,
// and this way a file is valid here exactly when goose can run it later.
func parseSQLFiles(db *sql.DB, fsys fs.FS) error {
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableVersioning(true),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := p.Up(context.Background()); err != nil {
		// goose's message names the file: "failed to parse 00003_x.sql: ...".
		return fmt.Errorf("invalid migration: %w", err)
	}
	return nil
}

// dryRunConnector is a database/sql connector whose connections accept every statement and
// transaction and do nothing. It only serves parseSQLFiles; it answers no queries.
type dryRunConnector struct{}

func (dryRunConnector) Connect(context.Context) (driver.Conn, error) { return dryRunConn{}, nil }
func (dryRunConnector) Driver() driver.Driver                        { return dryRunDriver{} }

type dryRunDriver struct{}

func (dryRunDriver) Open(string) (driver.Conn, error) { return dryRunConn{}, nil }

type dryRunConn struct{}

var errDryRun = errors.New("dry-run connection answers no queries")

func (dryRunConn) Prepare(string) (driver.Stmt, error) { return nil, errDryRun }
func (dryRunConn) Close() error                        { return nil }
func (dryRunConn) Begin() (driver.Tx, error)           { return dryRunTx{}, nil }

func (dryRunConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return dryRunTx{}, nil
}

func (dryRunConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(0), nil
}

type dryRunTx struct{}

func (dryRunTx) Commit() error   { return nil }
func (dryRunTx) Rollback() error { return nil }
