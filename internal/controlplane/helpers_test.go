package controlplane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// testSecret is the encryption key of the test stores.
const testSecret = "test-secret-0123456789"

// newTestDB creates an empty database, dropped in t.Cleanup, and returns
// its URL.
func newTestDB(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t)
}

// newTestPool opens a pool on dbURL, closed in t.Cleanup.
func newTestPool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// newTestStore returns a Store with the test cipher on a fresh, migrated
// database.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	pool := newTestPool(t, newTestDB(t))
	require.NoError(t, Migrate(testContext(t), pool))
	return NewStore(pool, testCipher(t))
}

func testCipher(t testing.TB) *Cipher {
	t.Helper()
	c, err := NewCipher(testSecret)
	require.NoError(t, err)
	return c
}

// testContext is a context that ends with the test, or after a minute.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func ptr[T any](v T) *T { return &v }

// currentOrigin returns the RunOrigin of a run that starts now on tenant id
// (the zero RunOrigin when there is no such tenant).
func currentOrigin(t testing.TB, s *Store, id string) RunOrigin {
	t.Helper()
	var (
		o      RunOrigin
		status *string
	)
	err := s.Pool().QueryRow(context.Background(),
		`SELECT target_seq, migrations_version, migrations_status FROM tenantmigrate.tenants WHERE id = $1`, id).
		Scan(&o.TargetSeq, &o.Version, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return RunOrigin{}
	}
	require.NoError(t, err)
	if status != nil {
		o.Status = Status(*status)
	}
	return o
}
