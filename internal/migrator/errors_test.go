package migrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
)

func TestIsRetryableWithServerErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := serverURL(t)
	conn := connect(t, dbURL)

	// raise returns the error the server sends for RAISE with the SQLSTATE and message.
	raise := func(code, msg string) error {
		_, err := conn.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = '%s'; END $$`, code, msg))
		require.Error(t, err)
		return err
	}
	for _, tc := range []struct {
		code, msg string
		want      bool
	}{
		{"40001", "could not serialize access", true},
		{"40P01", "deadlock detected", true},
		{"55P03", "canceling statement due to lock timeout", true},
		{"53300", "too many connections", true},
		{"57P01", "terminating connection due to administrator command", true},
		{"57P02", "crash shutdown", true},
		{"57P03", "the database system is starting up", true},
		{"08006", "connection failure", true},
		{"XX000", "tuple concurrently updated", true},
		{"XX000", "cache lookup failed for relation 1", false},
		{"42P07", "relation already exists", false},
		{"57014", "canceling statement due to statement timeout", false},
		{"23505", "duplicate key value", false},
	} {
		err := raise(tc.code, tc.msg)
		require.Equal(t, tc.want, IsRetryable(err), "%s %s", tc.code, tc.msg)
		// Wrapped the way Migrate wraps a failed migration.
		wrapped := fmt.Errorf("apply migration 3 (00003_x.sql): %w", &goose.PartialError{Failed: &goose.MigrationResult{Source: &goose.Source{}}, Err: err})
		require.Equal(t, tc.want, IsRetryable(wrapped), "wrapped %s %s", tc.code, tc.msg)
	}

	// Errors the server produces on its own.
	_, err := conn.Exec(ctx, `SELEC 1`)
	require.Error(t, err)
	require.False(t, IsRetryable(err), "syntax error")

	_, err = conn.Exec(ctx, `CREATE TEMP TABLE dup (id int); CREATE TEMP TABLE dup (id int)`)
	require.Error(t, err)
	require.False(t, IsRetryable(err), "42P07")

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SET LOCAL statement_timeout = '10ms'`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_sleep(1)`)
	require.Error(t, err)
	require.False(t, IsRetryable(err), "statement timeout")
	require.NoError(t, tx.Rollback(ctx))
}

func TestIsRetryableLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	holder := connect(t, dbURL)
	waiter := connect(t, dbURL)
	exec(t, holder, `CREATE TABLE locked (id int)`)

	tx, err := holder.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	_, err = tx.Exec(ctx, `LOCK TABLE locked IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	exec(t, waiter, `SET lock_timeout = '50ms'`)
	_, err = waiter.Exec(ctx, `SELECT * FROM locked`)
	require.Error(t, err)
	require.True(t, IsRetryable(err), "lock_timeout: %v", err)
}

func TestIsRetryableTerminatedConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := serverURL(t)
	victim := connect(t, dbURL)
	killer := connect(t, dbURL)

	pid := victim.PgConn().PID()
	require.True(t, queryBool(t, killer, `SELECT pg_terminate_backend($1)`, pid))
	waitFor(t, 10*time.Second, "backend to exit", func() bool {
		return !queryBool(t, killer, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid)
	})

	_, err := victim.Exec(ctx, `SELECT 1`)
	require.Error(t, err)
	require.True(t, IsRetryable(err), "terminated connection: %v", err)
}

func TestIsRetryableConnectError(t *testing.T) {
	t.Parallel()
	_, err := pgx.Connect(t.Context(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	require.Error(t, err)
	require.True(t, IsRetryable(err), "connect error: %v", err)
	require.True(t, IsRetryable(fmt.Errorf("goose up: %w", err)))
}

func TestIsRetryableOtherErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"Plain", errors.New("boom"), false},
		{"LockTimeout", fmt.Errorf("%w (waited 1m0s)", ErrLockTimeout), true},
		{"EOF", fmt.Errorf("read: %w", io.EOF), true},
		{"UnexpectedEOF", io.ErrUnexpectedEOF, true},
		{"NetError", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true},
		{"Canceled", fmt.Errorf("goose up: %w", context.Canceled), false},
		{"DeadlineExceeded", context.DeadlineExceeded, false},
		{"GooseNoMigrations", goose.ErrNoMigrations, false},
	} {
		require.Equal(t, tc.want, IsRetryable(tc.err), tc.name)
	}
}
