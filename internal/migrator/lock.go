package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/pressly/goose/v3/lock"
)

// lockNamespace seeds every advisory lock key, so the keys do not collide with other users of
// PostgreSQL advisory locks (goose's own default key included).
const lockNamespace = "tenantmigrate/migrator"

// unlockTimeout bounds releasing the advisory lock after a run. If it expires the lock is
// released anyway when the connection closes, which follows immediately.
const unlockTimeout = 10 * time.Second

// lockKey returns the session advisory lock key for a target: FNV-64a of the namespace and the
// schema name. Advisory locks are per database, so database-per-tenant targets (schema "") can
// all share one key, while tenants sharing a database (one schema each) get one key per schema
// and never serialize each other.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte(lockNamespace))
	h.Write([]byte{0})
	h.Write([]byte(schema))
	return int64(h.Sum64()) //nolint:gosec // any 64-bit pattern is a valid key
}

// newTenantLocker returns a goose session locker for one run on the target with schema.
// afterLock, if not nil, runs on the locked session as soon as the lock is taken, before goose
// lists and applies migrations; its error releases the lock and ends the run.
func (m *Migrator) newTenantLocker(schema string, afterLock func(context.Context, *sql.Conn) error) (*tenantLocker, error) {
	key := m.dbLockKey
	if schema != "" {
		key = lockKey(schema)
	}
	inner, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(key),
		// goose polls pg_try_advisory_lock once per period; lockWait is whole seconds.
		lock.WithLockTimeout(1, uint64(m.lockWait/time.Second)),
		lock.WithUnlockTimeout(1, 1),
	)
	if err != nil {
		return nil, fmt.Errorf("create session locker: %w", err)
	}
	return &tenantLocker{inner: inner, wait: m.lockWait, afterLock: afterLock}, nil
}

// tenantLocker wraps goose's PostgreSQL session locker to report an exhausted wait as
// ErrLockTimeout, to bound the unlock and to run checks under the lock.
type tenantLocker struct {
	inner     lock.SessionLocker
	wait      time.Duration
	afterLock func(context.Context, *sql.Conn) error
}

var _ lock.SessionLocker = (*tenantLocker)(nil)

// SessionLock implements lock.SessionLocker.
func (l *tenantLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	err := l.inner.SessionLock(ctx, conn)
	if err == nil {
		if l.afterLock == nil {
			return nil
		}
		if err := l.afterLock(ctx, conn); err != nil {
			// goose does not unlock when SessionLock fails; the connection goes back to the run's
			// pool, which still holds the lock until it is closed.
			if uerr := l.SessionUnlock(ctx, conn); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return &lockedCheckError{err: err}
		}
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	// goose returns its query errors wrapped ("failed to execute pg_try_advisory_lock: %w") and,
	// once its retries are exhausted, a bare error: the lock is still held by someone else.
	if errors.Unwrap(err) != nil {
		return fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	return fmt.Errorf("%w (waited %s)", ErrLockTimeout, l.wait)
}

// SessionUnlock implements lock.SessionLocker. goose calls it with a context detached from the
// run's cancellation; it adds a timeout of its own.
func (l *tenantLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
	defer cancel()
	if err := l.inner.SessionUnlock(ctx, conn); err != nil {
		return fmt.Errorf("release tenant migration lock: %w", err)
	}
	return nil
}
