package migrator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrLockTimeout is returned, wrapped, by [Migrator.Migrate] when another run (in this or another
// process) holds the tenant's migration lock for longer than Config.LockTimeout. Nothing was
// applied; the run can be retried later ([IsRetryable] reports true).
var ErrLockTimeout = errors.New("timed out waiting for the tenant migration lock")

// ApplyError is returned by [Migrator.Migrate] when a migration failed: it names the
// migration, as goose's PartialError does, and wraps the database error. The versions applied
// before it are in Result.Applied.
type ApplyError struct {
	// Version is the failed migration's version.
	Version int64
	// Name is its file's base name ("00002_add_plan.sql"), or "go migration" for a goose Go
	// migration without a file.
	Name string
	// Err is the error of the failed statement.
	Err error
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("apply migration %d (%s): %v", e.Version, e.Name, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// ErrDirty is wrapped by the *DirtyError that Migrate and Pending return for a golang-migrate
// tenant whose schema_migrations row is dirty: a migration failed or was interrupted there, by
// golang-migrate or by Migrate, and nobody knows how much of it ran. Nothing is applied to it
// until someone repairs the database and clears the flag. It is not retryable.
var ErrDirty = errors.New("tenant is dirty")

// DirtyError names the version a golang-migrate tenant is dirty at. It wraps ErrDirty.
type DirtyError struct {
	// Version is the version in the tenant's schema_migrations: the migration that failed or
	// was interrupted.
	Version int64
}

func (e *DirtyError) Error() string {
	return fmt.Sprintf("dirty at version %d: fix it, then `tenantmigrate force` "+
		"(or golang-migrate's `migrate force %d` once the migration is complete, `migrate force %d` with the previous version if it is undone); "+
		"a migration failed or was interrupted there and nothing is applied until the flag is cleared",
		e.Version, e.Version, e.Version-1)
}

// Unwrap returns ErrDirty.
func (e *DirtyError) Unwrap() error { return ErrDirty }

// leftDirtyError is the Err of the *ApplyError of a failed golang-migrate migration: the
// database's error, and the tenant now dirty at that version, as golang-migrate leaves it.
type leftDirtyError struct {
	err   error
	dirty *DirtyError
}

func (e *leftDirtyError) Error() string {
	return fmt.Sprintf("%v; the tenant is left %v", e.err, e.dirty)
}

func (e *leftDirtyError) Unwrap() []error { return []error{e.err, e.dirty} }

// IsRetryable reports whether err, returned by Migrate or Pending, is likely transient, so the
// same run may succeed later without anyone changing the migrations or the tenant:
//
//   - ErrLockTimeout;
//   - connection failures: *pgconn.ConnectError, network errors, io.EOF and
//     io.ErrUnexpectedEOF, closed connections, and errors pgconn marks as safe to retry;
//   - PostgreSQL errors with SQLSTATE 40001 (serialization_failure), 40P01 (deadlock_detected),
//     55P03 (lock_not_available, from lock_timeout), 53300 (too_many_connections), 57P01, 57P02
//     and 57P03 (shutdown / cannot connect now), class 08 (connection exception), XX000 when
//     the message is "tuple concurrently updated" (concurrent catalog updates), and 23505 on an
//     index of pg_catalog (concurrent creation of one catalog row, e.g. a role). Migrate itself
//     retries these last two a few times before it returns them.
//
// An error wrapping ErrDirty is permanent whatever else it wraps. Every other error is permanent: SQL errors in a migration (syntax, 42P07 duplicate table, ...),
// statement_timeout (57014), an invalid schema name or URL, out-of-order migrations. A canceled
// or expired context is not retryable either: the caller chose to stop.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrDirty) {
		return false // a retry meets the dirty flag, whatever the database said
	}
	if errors.Is(err, ErrLockTimeout) {
		return true
	}
	// A server error decides on its own, even if closing the connection failed afterwards.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return retryableSQLState(pgErr)
	}
	// A connect that timed out (connect_timeout) is a connection failure like
	// any other; a cancelled context is the caller giving up.
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) && !errors.Is(err, context.Canceled) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return isConnectionError(err)
}

// isConnectionError reports whether err says the connection failed or broke, rather than the
// server rejecting a statement.
func isConnectionError(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone)
}

func retryableSQLState(pgErr *pgconn.PgError) bool {
	switch pgErr.Code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03", // lock_not_available
		"53300", // too_many_connections
		"57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03": // cannot_connect_now
		return true
	case "XX000", "23505":
		return isCatalogConflictState(pgErr)
	}
	return strings.HasPrefix(pgErr.Code, "08") // connection_exception class
}

// isCatalogConflict reports whether err is a collision with a concurrent session on a row of
// PostgreSQL's catalogs: "tuple concurrently updated" (two sessions updating one row, e.g. two
// tenant databases running ALTER ROLE ... SET at once), or a unique violation on a pg_catalog
// index (two sessions creating one role, or one settings row, at once). The transaction rolled
// back; running it again succeeds or meets the other session's result.
func isCatalogConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && isCatalogConflictState(pgErr)
}

func isCatalogConflictState(pgErr *pgconn.PgError) bool {
	switch pgErr.Code {
	case "XX000": // internal_error, raised for concurrent catalog updates of the same row
		return strings.Contains(pgErr.Message, "tuple concurrently updated")
	case "23505": // unique_violation
		return pgErr.SchemaName == "pg_catalog"
	}
	return false
}
