package controlplane

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	testPassword = "Tenant-Pa55word"
	testURL      = "postgres://app:" + testPassword + "@db.internal:5432/acme?sslmode=disable"
)

func TestStoreCRUD(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	created, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	require.Equal(t, "acme", created.ID)
	require.Equal(t, testURL, created.DatabaseURL)
	require.Empty(t, created.Schema)
	require.Nil(t, created.MigrationsVersion)
	require.Equal(t, Status(""), created.MigrationsStatus)
	require.Positive(t, created.CursorID)
	require.False(t, created.CreatedAt.IsZero())

	_, err = s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.ErrorIs(t, err, ErrTenantExists)

	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, created, got)

	withSchema, err := s.Create(ctx, Tenant{ID: "beta", DatabaseURL: testURL, Schema: "tenant_beta"})
	require.NoError(t, err)
	require.Equal(t, "tenant_beta", withSchema.Schema)
	require.Greater(t, withSchema.CursorID, created.CursorID)

	// Patching the same URL keeps the migration state; another URL or schema
	// makes it unknown (never migrated) and gives the tenant a new target.
	require.NoError(t, s.RecordSuccess(ctx, "acme", currentOrigin(t, s, "acme"), 7))
	before, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	same, err := s.Patch(ctx, "acme", TenantPatch{DatabaseURL: &before.DatabaseURL})
	require.NoError(t, err)
	require.Equal(t, before, same)
	newURL := "postgres://app:new-pw@db2.internal/acme"
	patched, err := s.Patch(ctx, "acme", TenantPatch{DatabaseURL: &newURL, Schema: ptr("acme_schema")})
	require.NoError(t, err)
	require.Equal(t, newURL, patched.DatabaseURL)
	require.Equal(t, "acme_schema", patched.Schema)
	require.Nil(t, patched.MigrationsVersion)
	require.Empty(t, patched.MigrationsStatus)
	require.NotEqual(t, before.TargetSeq, patched.TargetSeq)
	got, err = s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, patched, got)

	// Schema "" goes back to database-per-tenant; an empty patch changes nothing.
	patched, err = s.Patch(ctx, "acme", TenantPatch{Schema: ptr("")})
	require.NoError(t, err)
	require.Empty(t, patched.Schema)
	require.Equal(t, newURL, patched.DatabaseURL)
	unchanged, err := s.Patch(ctx, "acme", TenantPatch{})
	require.NoError(t, err)
	require.Equal(t, patched, unchanged)

	// Invalid input.
	_, err = s.Patch(ctx, "acme", TenantPatch{Schema: ptr("pg_catalog")})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = s.Patch(ctx, "acme", TenantPatch{DatabaseURL: ptr("mysql://x")})
	require.ErrorIs(t, err, ErrInvalid)
	for _, bad := range []Tenant{
		{ID: "Bad", DatabaseURL: testURL},
		{ID: "ok", DatabaseURL: "not a url"},
		{ID: "ok", DatabaseURL: testURL, Schema: "1x"},
	} {
		_, err = s.Create(ctx, bad)
		require.ErrorIs(t, err, ErrInvalid)
		require.NotContains(t, err.Error(), testPassword)
	}

	// Delete, then everything addressing the tenant says not found.
	require.NoError(t, s.Delete(ctx, "acme"))
	require.ErrorIs(t, s.Delete(ctx, "acme"), ErrTenantNotFound)
	_, err = s.Get(ctx, "acme")
	require.ErrorIs(t, err, ErrTenantNotFound)
	_, err = s.GetState(ctx, "acme")
	require.ErrorIs(t, err, ErrTenantNotFound)
	_, err = s.Patch(ctx, "acme", TenantPatch{Schema: ptr("x")})
	require.ErrorIs(t, err, ErrTenantNotFound)
	require.ErrorIs(t, s.RecordSuccess(ctx, "acme", currentOrigin(t, s, "acme"), 1), ErrTenantNotFound)
	require.ErrorIs(t, s.RecordFailure(ctx, "acme", currentOrigin(t, s, "acme"), nil, StatusFailed, "boom"), ErrTenantNotFound)

	// Ids that cannot exist are not found, not an error of the database.
	for _, id := range []string{"", "../x", "a;drop", "UPPER"} {
		_, err = s.Get(ctx, id)
		require.ErrorIs(t, err, ErrTenantNotFound, "id %q", id)
		_, err = s.GetState(ctx, id)
		require.ErrorIs(t, err, ErrTenantNotFound, "id %q", id)
		require.ErrorIs(t, s.Delete(ctx, id), ErrTenantNotFound, "id %q", id)
	}

	// The database enforces the id format too.
	_, err = s.Pool().Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url) VALUES ('../x', '\x00')`)
	require.ErrorContains(t, err, "tenants_id_format")
}

func TestStoreUpsert(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	first, created, err := s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, testURL, first.DatabaseURL)
	require.NoError(t, s.RecordFailure(ctx, "acme", currentOrigin(t, s, "acme"), ptr(int64(3)), StatusFailed, "boom"))
	failed, err := s.Get(ctx, "acme")
	require.NoError(t, err)

	// The same values again: nothing is written.
	same, created, err := s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, failed, same)
	require.Equal(t, failed.UpdatedAt, same.UpdatedAt)

	// A new URL and schema make the migration state unknown.
	newURL := "postgres://app:other@db2/acme"
	moved, created, err := s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: newURL, Schema: "acme"})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, newURL, moved.DatabaseURL)
	require.Equal(t, "acme", moved.Schema)
	require.Nil(t, moved.MigrationsVersion)
	require.Empty(t, moved.MigrationsStatus)
	require.Empty(t, moved.LastError)
	require.NotEqual(t, first.TargetSeq, moved.TargetSeq)
	require.Equal(t, first.CursorID, moved.CursorID)
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, moved, got)

	_, _, err = s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: "postgres://app:x@db/acme", Schema: "pg_x"})
	require.ErrorIs(t, err, ErrInvalid)
}

func TestStoreUpsertConcurrently(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		creates int
		errs    []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created, err := s.Upsert(ctx, Tenant{ID: "race", DatabaseURL: fmt.Sprintf("postgres://app:pw@db%d/race", i)})
			mu.Lock()
			defer mu.Unlock()
			if created {
				creates++
			}
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, 1, creates)
}

func TestStoreEncryptsURLAtRest(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	_, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)

	var raw []byte
	var asText string
	require.NoError(t, s.Pool().QueryRow(ctx,
		`SELECT database_url, encode(database_url, 'escape') FROM tenantmigrate.tenants WHERE id = 'acme'`).Scan(&raw, &asText))
	require.NotEmpty(t, raw)
	for _, secret := range []string{testURL, testPassword, "db.internal"} {
		require.False(t, bytes.Contains(raw, []byte(secret)), "stored bytes contain %q", secret)
		require.NotContains(t, asText, secret)
	}
	plain, err := testCipher(t).Decrypt("", raw)
	require.NoError(t, err)
	require.Equal(t, testURL, plain)

	// A store with another key cannot read it.
	other, err := NewCipher("another-secret-0123456789")
	require.NoError(t, err)
	_, err = NewStore(s.Pool(), other).Get(ctx, "acme")
	require.ErrorIs(t, err, ErrDecrypt)
	require.NotContains(t, err.Error(), testPassword)
}

func TestStoreWithoutCipher(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	_, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)

	noKey := NewStore(s.Pool(), nil)
	_, err = noKey.Create(ctx, Tenant{ID: "other", DatabaseURL: testURL})
	require.ErrorIs(t, err, ErrNoEncryptionKey)
	require.Contains(t, err.Error(), "encryption key")
	require.NotContains(t, err.Error(), "ENCRYPTION_KEY", "the library names no environment variable")
	_, _, err = noKey.Upsert(ctx, Tenant{ID: "other", DatabaseURL: testURL})
	require.ErrorIs(t, err, ErrNoEncryptionKey)
	_, err = noKey.Patch(ctx, "acme", TenantPatch{Schema: ptr("x")})
	require.ErrorIs(t, err, ErrNoEncryptionKey)
	_, err = noKey.Get(ctx, "acme")
	require.ErrorIs(t, err, ErrNoEncryptionKey)
	_, _, err = noKey.List(ctx, 0, 10)
	require.ErrorIs(t, err, ErrNoEncryptionKey)

	// Migration state works without the key.
	require.NoError(t, noKey.RecordSuccess(ctx, "acme", currentOrigin(t, noKey, "acme"), 4))
	st, err := noKey.GetState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, ptr(int64(4)), st.MigrationsVersion)
	require.Equal(t, StatusCompleted, st.MigrationsStatus)
	n, err := noKey.CountBehind(ctx, 5)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.NoError(t, noKey.Delete(ctx, "acme"))

	var count int
	require.NoError(t, s.Pool().QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.tenants`).Scan(&count))
	require.Zero(t, count)
}

func TestStoreList(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	var want []string
	for i := range 25 {
		id := fmt.Sprintf("t%02d", i)
		_, err := s.Create(ctx, Tenant{ID: id, DatabaseURL: fmt.Sprintf("postgres://app:pw@db/%s", id)})
		require.NoError(t, err)
		want = append(want, id)
	}

	var (
		got    []string
		cursor int64
		pages  int
	)
	for {
		tenants, next, err := s.List(ctx, cursor, 10)
		require.NoError(t, err)
		pages++
		for _, tn := range tenants {
			require.Equal(t, "postgres://app:pw@db/"+tn.ID, tn.DatabaseURL)
			got = append(got, tn.ID)
		}
		if next == 0 {
			break
		}
		require.Greater(t, next, cursor)
		cursor = next
	}
	require.Equal(t, want, got)
	require.Equal(t, 3, pages)

	// A limit that divides the count exactly needs no empty last page.
	_, next, err := s.List(ctx, 0, 25)
	require.NoError(t, err)
	require.Zero(t, next)
}
