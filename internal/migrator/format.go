package migrator

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pressly/goose/v3"
)

// Format is the layout of a migration source: goose's or golang-migrate's.
type Format string

const (
	// FormatAuto recognises the format from the file names: golang-migrate when every migration
	// file is a {version}_{title}.up.sql or .down.sql, goose otherwise.
	FormatAuto Format = ""
	// FormatGoose is goose v3's: NNN_name.sql files with "-- +goose Up/Down" sections, and Go
	// migrations; versions recorded in goose_db_version.
	FormatGoose Format = "goose"
	// FormatGolangMigrate is golang-migrate's: {version}_{title}.up.sql and
	// {version}_{title}.down.sql; the version recorded in schema_migrations (one row: version,
	// dirty).
	FormatGolangMigrate Format = "golang-migrate"
)

// ParseFormat parses a Config.Format value: "", "auto", "goose" or "golang-migrate".
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case FormatAuto, "auto":
		return FormatAuto, nil
	case FormatGoose, FormatGolangMigrate:
		return Format(s), nil
	}
	return "", fmt.Errorf("invalid migrations format %q: want goose or golang-migrate (or empty to recognise it from the files)", s)
}

// ErrMixedFormats is wrapped by the error New returns for a source that holds both goose
// migration files (NNN_name.sql) and golang-migrate ones (NNN_title.up.sql, NNN_title.down.sql):
// which files are migrations, and which version table records them, would be a guess.
var ErrMixedFormats = errors.New("migrations mix goose and golang-migrate files")

// gmFileRE is golang-migrate's file source pattern (source/parse.go), for SQL files only:
// version, title, direction.
var gmFileRE = regexp.MustCompile(`^([0-9]+)_(.*)\.(down|up)\.sql$`)

// gmMigration is one version of a golang-migrate source: its up file and, if any, its down file.
type gmMigration struct {
	version  int64
	upName   string
	up       []byte
	downName string // "" when the version has no down file
	down     []byte // loaded and kept for a later rollback; never applied
}

// sourceFiles are the files at the root of a source that either tool treats as migrations.
type sourceFiles struct {
	gm    []string // golang-migrate's up and down files
	goose []string // goose's NNN_name.sql files
}

// listSourceFiles sorts the files at the root of fsys into golang-migrate and goose migrations.
func listSourceFiles(fsys fs.FS) (sourceFiles, error) {
	var files sourceFiles
	if fsys == nil {
		return files, nil
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return files, fmt.Errorf("read migrations: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir() || path.Ext(name) != ".sql":
		case gmFileRE.MatchString(name):
			files.gm = append(files.gm, name)
		default:
			if _, err := goose.NumericComponent(name); err == nil {
				files.goose = append(files.goose, name)
			}
		}
	}
	return files, nil
}

// detectFormat returns the format of the source: forced, unless auto. A source with files of
// both formats is refused, forced or not, except when goose is forced: goose then takes every
// NNN_*.sql file, x.up.sql included, as its own (as goose itself does).
func detectFormat(forced Format, files sourceFiles, goMigrations int) (Format, error) {
	if forced == FormatGoose {
		return FormatGoose, nil
	}
	if len(files.gm) > 0 && len(files.goose) > 0 {
		return "", fmt.Errorf("%w: %s are golang-migrate files, %s goose files; keep one format (or force goose with --migrations-format goose, to read them all as goose files)",
			ErrMixedFormats, firstNames(files.gm), firstNames(files.goose))
	}
	if forced == FormatAuto && len(files.gm) == 0 {
		return FormatGoose, nil
	}
	if len(files.gm) == 0 && len(files.goose) > 0 {
		return "", fmt.Errorf("%w: the format is forced to golang-migrate, but %s are goose files (golang-migrate's are NNN_title.up.sql and NNN_title.down.sql)",
			ErrMixedFormats, firstNames(files.goose))
	}
	if goMigrations > 0 {
		return "", fmt.Errorf("%w: go migrations are goose's; a golang-migrate source has SQL files only", ErrMixedFormats)
	}
	return FormatGolangMigrate, nil
}

// firstNames lists up to three names, and how many more there are.
func firstNames(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:3], ", "), len(names)-3)
}

// loadGolangMigrateSource reads the up and down files of a golang-migrate source into memory.
// Each version has exactly one up file and at most one down file, as golang-migrate requires.
// The SQL is not parsed: golang-migrate sends each file to PostgreSQL as it is, and so does
// Migrate, so PostgreSQL is the only parser that decides.
func loadGolangMigrateSource(fsys fs.FS, names []string) (*source, error) {
	byVersion := map[int64]*gmMigration{}
	for _, name := range names {
		parts := gmFileRE.FindStringSubmatch(name)
		v, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("invalid migration %s: version %s is not a 63-bit number", name, parts[1])
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		gm := byVersion[v]
		if gm == nil {
			gm = &gmMigration{version: v}
			byVersion[v] = gm
		}
		existing := &gm.upName
		if parts[3] == "down" {
			existing = &gm.downName
		}
		if *existing != "" {
			return nil, fmt.Errorf("invalid migrations: %s and %s are both the %s migration of version %d", *existing, name, parts[3], v)
		}
		*existing = name
		if parts[3] == "up" {
			gm.up = data
		} else {
			gm.down = data
		}
	}
	if len(byVersion) == 0 {
		return nil, fmt.Errorf("no versioned .sql files at the root of the source and no go migrations: %w", goose.ErrNoMigrations)
	}

	src := &source{format: FormatGolangMigrate, maxConns: 1}
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		gm := byVersion[v]
		if gm.upName == "" {
			return nil, fmt.Errorf("invalid migrations: version %d has a down file, %s, and no up file", v, gm.downName)
		}
		src.versions = append(src.versions, v)
		src.gm = append(src.gm, *gm)
		src.migrations = append(src.migrations, SourceMigration{
			Version: v, Name: gm.upName, Checksum: sqlChecksum(gm.up), DownName: gm.downName,
		})
	}
	return src, nil
}
