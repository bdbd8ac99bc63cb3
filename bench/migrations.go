package main

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pressly/goose/v3"
)

// migrationsFS is the benchmark's migration set: a realistic SaaS schema in
// goose format (see bench/migrations/*.sql).
//
//go:embed migrations/*.sql
var embedded embed.FS

// migrationsFS returns the migration files at the root of an fs.FS.
func migrationsFS() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// migrationFile is one goose SQL migration, reduced to what psql needs.
type migrationFile struct {
	version int64
	name    string
	noTx    bool   // -- +goose NO TRANSACTION
	up      string // the Up section, goose annotations removed
}

// loadMigrations reads and splits the migration set.
func loadMigrations() ([]migrationFile, error) { return loadMigrationsFrom(migrationsFS()) }

// loadMigrationsFrom reads and splits the goose SQL files at the root of fsys.
func loadMigrationsFrom(fsys fs.FS) ([]migrationFile, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []migrationFile
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		m := migrationFile{version: v, name: name}
		m.up, m.noTx = upSection(string(data))
		out = append(out, m)
	}
	return out, nil
}

// upSection returns the text between "-- +goose Up" and "-- +goose Down" with
// the goose annotations dropped (psql splits statements itself, dollar
// quotes included), and whether the file says NO TRANSACTION.
func upSection(src string) (up string, noTx bool) {
	var b strings.Builder
	inUp := false
	for line := range strings.SplitSeq(src, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "-- +goose") {
			switch strings.TrimSpace(strings.TrimPrefix(t, "-- +goose")) {
			case "Up":
				inUp = true
			case "Down":
				inUp = false
			case "NO TRANSACTION":
				noTx = true
			}
			continue
		}
		if inUp {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String(), noTx
}

// doneMarker is what the psql script prints after each migration.
const doneMarker = "@@done "

// psqlScript is the migration set from index from on as one psql script:
// each transactional file between BEGIN and COMMIT, each NO TRANSACTION file
// as it is, and after each a line "@@done <version>" on stdout.
func psqlScript(ms []migrationFile, from int) string {
	var b strings.Builder
	for _, m := range ms[from:] {
		fmt.Fprintf(&b, "-- %s\n", m.name)
		if !m.noTx {
			b.WriteString("BEGIN;\n")
		}
		b.WriteString(m.up)
		if !m.noTx {
			b.WriteString("COMMIT;\n")
		}
		fmt.Fprintf(&b, "\\echo %s%d\n", doneMarker, m.version)
	}
	return b.String()
}

// writeMigrationsDir copies the migration set into a new directory under
// dir, for the tenantmigrate binary's --migrations.
func writeMigrationsDir(dir string) (string, error) {
	return writeMigrationsDirFrom(dir, "migrations", migrationsFS())
}

// writeMigrationsDirFrom copies the files at the root of fsys into the new
// directory dir/name.
func writeMigrationsDirFrom(dir, name string, fsys fs.FS) (string, error) {
	out := filepath.Join(dir, name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, path), data, 0o644)
	})
	return out, err
}
