package migrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// Pending reports the target's current version (the highest recorded in its version table, see
// Config.VersionTable) and the versions Migrate would apply, without changing anything: it
// creates neither the schema nor the version table and takes no lock, and its session is
// read-only (default_transaction_read_only). A target without a version table (or without its
// schema) is
// at version 0 with every migration pending.
//
// Like Migrate, it returns an error if the target misses versions below its current one
// (out-of-order migrations), because Migrate would refuse to run.
func (m *Migrator) Pending(ctx context.Context, t Target) (current int64, pending []int64, err error) {
	current, pending, err = m.pending(ctx, t)
	if err != nil {
		return 0, nil, redact.Error(err, t.DatabaseURL)
	}
	return current, pending, nil
}

func (m *Migrator) pending(ctx context.Context, t Target) (int64, []int64, error) {
	if m.format == FormatGolangMigrate {
		st, _, err := m.readGMTarget(ctx, t)
		if err != nil {
			return 0, nil, err
		}
		if st.dirty {
			return st.current(), nil, &DirtyError{Version: st.version}
		}
		return st.current(), m.gmPendingVersions(st.version), nil
	}
	applied, _, err := m.readApplied(ctx, t)
	if err != nil {
		return 0, nil, err
	}
	if applied == nil {
		return 0, m.Versions(), nil
	}
	return upVersions(m.versions, applied, m.allowMissing)
}

// Applied returns the versions recorded in the target's version table, sorted ascending, each
// once, without goose's initial version 0: the versions goose considers applied. A target
// without a version table (or without its schema) has none. Like Pending, it changes nothing,
// takes no lock and reads in a read-only session. Unlike Pending, it does not compare the
// versions with the source: versions the source lacks and gaps are the caller's to judge. An
// ambiguous version table is a *VersionTableConflictError.
func (m *Migrator) Applied(ctx context.Context, t Target) ([]int64, error) {
	in, err := m.Inspect(ctx, t)
	if err != nil {
		return nil, err
	}
	if in.Conflict != nil {
		return nil, in.Conflict
	}
	return in.Applied, nil
}

// Inspection is what Inspect read of a target's version table.
type Inspection struct {
	// Table is the target's version table (see Config.VersionTable); zero when Conflict is set.
	Table VersionTable
	// Exists reports whether Table exists.
	Exists bool
	// Applied are the versions recorded in Table, ascending, each once, without goose's 0.
	Applied []int64
	// Duplicates are the versions recorded more than once: the trace of a migration that ran
	// twice. goose records a version once per run that applies it.
	Duplicates []int64
	// Conflict is set when the version table is ambiguous (more than one table); nothing else
	// is then read.
	Conflict *VersionTableConflictError
	// Dirty reports a golang-migrate tenant whose schema_migrations row is dirty at
	// DirtyVersion: that migration failed or was interrupted, and Applied stops below it.
	Dirty bool
	// DirtyVersion is the version a dirty tenant is dirty at; 0 when not Dirty.
	DirtyVersion int64
}

// Inspect reads the target's version table as it is, in a read-only session, without taking
// the tenant's lock: which table it is, the versions recorded and the ones recorded more than
// once. An ambiguous version table is reported in Inspection.Conflict, not as an error: the
// target could be read. The error is for a target that could not be read.
func (m *Migrator) Inspect(ctx context.Context, t Target) (Inspection, error) {
	in, err := m.inspect(ctx, t)
	if err != nil {
		return Inspection{}, redact.Error(err, t.DatabaseURL)
	}
	return in, nil
}

func (m *Migrator) inspect(ctx context.Context, t Target) (Inspection, error) {
	if m.format == FormatGolangMigrate {
		return m.inspectGolangMigrate(ctx, t)
	}
	rows, table, err := m.readApplied(ctx, t)
	var conflict *VersionTableConflictError
	if errors.As(err, &conflict) {
		return Inspection{Conflict: conflict}, nil
	}
	if err != nil {
		return Inspection{}, err
	}
	in := Inspection{Table: table, Exists: rows != nil, Applied: []int64{}}
	seen := make(map[int64]int, len(rows))
	for _, v := range rows {
		if v <= 0 {
			continue
		}
		if seen[v]++; seen[v] == 2 {
			in.Duplicates = append(in.Duplicates, v)
		}
		if seen[v] == 1 {
			in.Applied = append(in.Applied, v)
		}
	}
	slices.Sort(in.Applied)
	slices.Sort(in.Duplicates)
	return in, nil
}

// inspectGolangMigrate is Inspect for a golang-migrate source: schema_migrations holds one
// version, so Applied is every source version up to it (see gmApplied) and never has
// Duplicates.
func (m *Migrator) inspectGolangMigrate(ctx context.Context, t Target) (Inspection, error) {
	st, table, err := m.readGMTarget(ctx, t)
	var conflict *VersionTableConflictError
	if errors.As(err, &conflict) {
		return Inspection{Conflict: conflict}, nil
	}
	if err != nil {
		return Inspection{}, err
	}
	in := Inspection{Table: table, Exists: st.exists, Applied: m.gmApplied(st), Dirty: st.dirty}
	if st.dirty {
		in.DirtyVersion = st.version
	}
	return in, nil
}

// readApplied returns the rows of the target's version table, as they are (version 0
// included), or nil when there is no version table, and the table. It connects in a read-only
// session.
func (m *Migrator) readApplied(ctx context.Context, t Target) ([]int64, VersionTable, error) {
	connCfg, err := m.connConfig(t)
	if err != nil {
		return nil, VersionTable{}, err
	}
	connCfg.RuntimeParams["default_transaction_read_only"] = "on"

	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return nil, VersionTable{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	table, exists, err := resolveVersionTable(ctx, conn.QueryRow, t.Schema, m.versionTable, goose.DefaultTablename)
	if err != nil || !exists {
		return nil, table, err
	}
	rows, err := conn.Query(ctx, "SELECT version_id FROM "+table.String())
	if err != nil {
		return nil, table, fmt.Errorf("list applied versions: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, table, fmt.Errorf("list applied versions: %w", err)
	}
	if applied == nil {
		applied = []int64{} // a version table without rows still exists
	}
	return applied, table, nil
}

// upVersions mirrors goose's choice of versions to apply: every row of the version table counts
// as applied, current is the highest, the source versions above it are pending, and source
// versions below it that were never applied are an error (goose refuses out-of-order
// migrations by default), or, with allowMissing, pending too, before the others (goose
// applies out-of-order migrations first).
func upVersions(source, applied []int64, allowMissing bool) (current int64, pending []int64, err error) {
	done := make(map[int64]bool, len(applied))
	for _, v := range applied {
		done[v] = true
		current = max(current, v)
	}
	var missing []int64
	for _, v := range source {
		switch {
		case done[v]:
		case v < current:
			missing = append(missing, v)
		default:
			pending = append(pending, v)
		}
	}
	if len(missing) > 0 && allowMissing {
		return current, append(missing, pending...), nil
	}
	if len(missing) > 0 {
		strs := make([]string, len(missing))
		for i, v := range missing {
			strs[i] = strconv.FormatInt(v, 10)
		}
		return current, nil, fmt.Errorf("target is at version %d but misses lower versions %s (out-of-order migrations are applied only with AllowMissing)",
			current, strings.Join(strs, ","))
	}
	slices.Sort(pending)
	return current, pending, nil
}
