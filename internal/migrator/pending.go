package migrator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// Pending reports the target's current version (the highest recorded in goose_db_version) and
// the versions Migrate would apply, without changing anything: it creates neither the schema nor
// the version table and takes no lock, and its session is read-only
// (default_transaction_read_only). A target without a version table (or without its schema) is
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
	applied, err := m.readApplied(ctx, t)
	if err != nil {
		return 0, nil, err
	}
	if applied == nil {
		return 0, m.Versions(), nil
	}
	return upVersions(m.versions, applied)
}

// Applied returns the versions recorded in the target's goose_db_version, sorted ascending,
// each once, without goose's initial version 0: the versions goose considers applied. A target
// without a version table (or without its schema) has none. Like Pending, it changes nothing,
// takes no lock and reads in a read-only session. Unlike Pending, it does not compare the
// versions with the source: versions the source lacks and gaps are the caller's to judge.
func (m *Migrator) Applied(ctx context.Context, t Target) ([]int64, error) {
	applied, err := m.readApplied(ctx, t)
	if err != nil {
		return nil, redact.Error(err, t.DatabaseURL)
	}
	out := make([]int64, 0, len(applied))
	for _, v := range applied {
		if v > 0 {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// readApplied returns the rows of the target's version table, as they are (version 0
// included), or nil when there is no version table. It connects in a read-only session.
func (m *Migrator) readApplied(ctx context.Context, t Target) ([]int64, error) {
	connCfg, err := m.connConfig(t)
	if err != nil {
		return nil, err
	}
	connCfg.RuntimeParams["default_transaction_read_only"] = "on"

	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	exists, err := versionTableExists(ctx, conn.QueryRow, t.Schema)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, nil
	}

	table := goose.DefaultTablename // found through search_path, as goose does
	if t.Schema != "" {
		table = pgx.Identifier{t.Schema, goose.DefaultTablename}.Sanitize()
	}
	rows, err := conn.Query(ctx, "SELECT version_id FROM "+table)
	if err != nil {
		return nil, fmt.Errorf("list applied versions: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("list applied versions: %w", err)
	}
	if applied == nil {
		applied = []int64{} // a version table without rows still exists
	}
	return applied, nil
}

// upVersions mirrors goose's choice of versions to apply: every row of the version table counts
// as applied, current is the highest, the source versions above it are pending, and source
// versions below it that were never applied are an error (goose refuses out-of-order
// migrations by default).
func upVersions(source, applied []int64) (current int64, pending []int64, err error) {
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
	if len(missing) > 0 {
		strs := make([]string, len(missing))
		for i, v := range missing {
			strs[i] = strconv.FormatInt(v, 10)
		}
		return current, nil, fmt.Errorf("target is at version %d but misses lower versions %s (out-of-order migrations are not applied)",
			current, strings.Join(strs, ","))
	}
	slices.Sort(pending)
	return current, pending, nil
}
