package controlplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// fullRows maps each tenant to every column of its row, as text, and the
// row's xmin (a new one for every write).
func fullRows(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(testContext(t), `SELECT id, xmin::text || ' ' || t::text FROM tenantmigrate.tenants t`)
	require.NoError(t, err)
	out := map[string]string{}
	var id, row string
	_, err = pgx.ForEachRow(rows, []any{&id, &row}, func() error {
		out[id] = row
		return nil
	})
	require.NoError(t, err)
	return out
}

// rotationFleet fills the control plane: 5 tenants under A, 2 legacy (no
// key id, under A), 3 under B, 1 under C, which the rotated store lacks.
// Some have a migration state.
func rotationFleet(t *testing.T, st rotationStores) {
	t.Helper()
	ctx := testContext(t)
	for i := range 5 {
		id := fmt.Sprintf("a-%d", i)
		_, err := st.underA.Create(ctx, Tenant{ID: id, DatabaseURL: tenantURL(id)})
		require.NoError(t, err)
		if i%2 == 0 {
			require.NoError(t, st.underA.RecordSuccess(ctx, id, currentOrigin(t, st.underA, id), 7))
		}
	}
	insertLegacy(t, st.pool, st.a, "legacy-0", tenantURL("legacy-0"))
	insertLegacy(t, st.pool, st.a, "legacy-1", tenantURL("legacy-1"))
	for i := range 3 {
		id := fmt.Sprintf("b-%d", i)
		_, err := st.onlyB.Create(ctx, Tenant{ID: id, DatabaseURL: tenantURL(id)})
		require.NoError(t, err)
	}
	_, err := NewStore(st.pool, newCipher(t, secretC)).Create(ctx, Tenant{ID: "c-0", DatabaseURL: tenantURL("c-0")})
	require.NoError(t, err)
}

// TestRekey: every tenant not under the current key is re-encrypted under
// it (its key id too), and only its URL columns change: the migration state
// and target_seq stay. A tenant no key decrypts is reported by id and left
// as it was. After it, the current key alone reads every rekeyed tenant, and
// a second run finds nothing to do.
func TestRekey(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)
	rotationFleet(t, st)
	before := fullRows(t, st.pool)
	type state struct {
		Version   *int64
		Status    *string
		TargetSeq int64
		UpdatedAt time.Time
	}
	readState := func(id string) state {
		var s state
		require.NoError(t, st.pool.QueryRow(ctx, `SELECT migrations_version, migrations_status, target_seq, updated_at
			FROM tenantmigrate.tenants WHERE id = $1`, id).Scan(&s.Version, &s.Status, &s.TargetSeq, &s.UpdatedAt))
		return s
	}
	states := map[string]state{}
	for id := range before {
		states[id] = readState(id)
	}

	var pages []RekeyResult
	res, err := st.rotated.Rekey(ctx, RekeyOptions{PageSize: 3, OnPage: func(r RekeyResult) { pages = append(pages, r) }})
	require.NoError(t, err)
	require.Equal(t, 7, res.Rekeyed)
	require.Equal(t, 3, res.AlreadyCurrent)
	require.Len(t, res.Failed, 1)
	require.Equal(t, "c-0", res.Failed[0].TenantID)
	require.ErrorIs(t, res.Failed[0].Err, ErrDecrypt)
	require.ErrorContains(t, res.Failed[0].Err, "tenant c-0: cannot decrypt")
	requireNoSecrets(t, res.Failed[0].Err.Error(), readStored(t, st.pool, "c-0").enc)
	require.Len(t, pages, 3, "8 rows not under B, 3 a page")

	after := fullRows(t, st.pool)
	require.Equal(t, before["c-0"], after["c-0"], "the tenant no key decrypts is left alone")
	for id := range before {
		if id == "c-0" {
			continue
		}
		require.Equal(t, st.b.KeyID(), *readStored(t, st.pool, id).keyID, id)
		got, err := st.onlyB.Get(ctx, id)
		require.NoError(t, err, id)
		require.Equal(t, tenantURL(id), got.DatabaseURL, id)
		require.Equal(t, states[id], readState(id), "%s: only the URL columns change", id)
		if id[0] == 'b' {
			require.Equal(t, before[id], after[id], "%s was under B already: not written", id)
		} else {
			require.NotEqual(t, before[id], after[id], id)
		}
	}

	again, err := st.rotated.Rekey(ctx, RekeyOptions{})
	require.NoError(t, err)
	require.Equal(t, 0, again.Rekeyed)
	require.Equal(t, 10, again.AlreadyCurrent)
	require.Len(t, again.Failed, 1)
	require.Equal(t, after, fullRows(t, st.pool))

	// A alone reads none of them now, and says which tenant.
	_, err = st.onlyA.Get(ctx, "a-0")
	require.ErrorIs(t, err, ErrDecrypt)
	require.ErrorContains(t, err, "a-0")
}

// TestRekeyDryRunWritesNothing: a dry run counts what a run would do,
// decrypting each row, and changes no row (not even its xmin).
func TestRekeyDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)
	rotationFleet(t, st)
	before := fullRows(t, st.pool)

	res, err := st.rotated.Rekey(ctx, RekeyOptions{DryRun: true, PageSize: 2})
	require.NoError(t, err)
	require.Equal(t, 7, res.Rekeyed)
	require.Equal(t, 3, res.AlreadyCurrent)
	require.Len(t, res.Failed, 1)
	require.Equal(t, "c-0", res.Failed[0].TenantID)
	require.Equal(t, before, fullRows(t, st.pool))

	// The same counts as the real run that follows.
	real, err := st.rotated.Rekey(ctx, RekeyOptions{})
	require.NoError(t, err)
	require.Equal(t, res.Rekeyed, real.Rekeyed)
	require.Equal(t, res.AlreadyCurrent, real.AlreadyCurrent)
}

// TestRekeyResumable: a run stopped after its first page leaves that page
// under the current key; the next run rekeys only the rest.
func TestRekeyResumable(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	rotationFleet(t, st)

	ctx, cancel := context.WithCancel(testContext(t))
	res, err := st.rotated.Rekey(ctx, RekeyOptions{PageSize: 3, OnPage: func(RekeyResult) { cancel() }})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 3, res.Rekeyed)

	rest, err := st.rotated.Rekey(testContext(t), RekeyOptions{PageSize: 3})
	require.NoError(t, err)
	require.Equal(t, 4, rest.Rekeyed)
	require.Equal(t, 3+3, rest.AlreadyCurrent)
	require.Len(t, rest.Failed, 1)
}

// TestRekeyConcurrentWrites: rows written while a rekey runs. Another
// transaction holds three rows; the rekey skips them in its page's UPDATE
// and waits for them one at a time, while that transaction changes their URL
// (PATCHes, one by an instance still writing under A) or records a migration
// result. The changed URLs win, the result is kept, and every row ends under
// the current key.
func TestRekeyConcurrentWrites(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)
	for _, id := range []string{"patched-b", "patched-a", "ran", "quiet"} {
		_, err := st.underA.Create(ctx, Tenant{ID: id, DatabaseURL: tenantURL(id)})
		require.NoError(t, err)
	}
	ranOrigin := currentOrigin(t, st.underA, "ran")

	// Hold the rows the rekey will write.
	tx, err := st.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // committed below
	_, err = tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.tenants WHERE id IN ('patched-b', 'patched-a', 'ran') FOR UPDATE`)
	require.NoError(t, err)

	type outcome struct {
		res RekeyResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := st.rotated.Rekey(ctx, RekeyOptions{})
		done <- outcome{res, err}
	}()
	waitFor(t, 30*time.Second, "the rekey waiting on the held rows", func() bool {
		var n int
		require.NoError(t, st.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%UPDATE tenantmigrate.tenants%'`).Scan(&n))
		return n > 0
	})

	// The page's UPDATE did not wait for the held rows: the free one is
	// committed already.
	require.Equal(t, st.b.KeyID(), *readStored(t, st.pool, "quiet").keyID)

	// Meanwhile: two PATCHes (as updateLocked writes them) and a run's result.
	for id, c := range map[string]*Cipher{"patched-b": st.b, "patched-a": st.a} {
		enc, err := c.Encrypt(tenantURL(id + "-new"))
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE tenantmigrate.tenants SET database_url = $2, key_id = $3,
			target_seq = nextval('tenantmigrate.tenant_target_seq'), updated_at = now() WHERE id = $1`, id, enc, c.KeyID())
		require.NoError(t, err)
	}
	_, err = tx.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_version = 9, migrations_status = 'COMPLETED'
		WHERE id = 'ran' AND target_seq = $1`, ranOrigin.TargetSeq)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	var out outcome
	select {
	case out = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the rekey did not finish")
	}
	require.NoError(t, out.err)
	require.Empty(t, out.res.Failed)
	// The page's UPDATE skipped the held rows and rekeyed quiet; then, one
	// by one: patched-b was made current by its PATCH, patched-a was read
	// again and rekeyed, ran was rekeyed keeping its result.
	require.Equal(t, 3, out.res.Rekeyed)
	require.Equal(t, 1, out.res.AlreadyCurrent)

	for _, id := range []string{"patched-b", "patched-a", "ran", "quiet"} {
		require.Equal(t, st.b.KeyID(), *readStored(t, st.pool, id).keyID, id)
	}
	for _, id := range []string{"patched-b", "patched-a"} {
		got, err := st.onlyB.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tenantURL(id+"-new"), got.DatabaseURL, "the concurrent PATCH of %s wins", id)
	}
	ran, err := st.onlyB.Get(ctx, "ran")
	require.NoError(t, err)
	require.Equal(t, tenantURL("ran"), ran.DatabaseURL)
	require.EqualValues(t, 9, *ran.MigrationsVersion, "the run's result is kept")
	require.Equal(t, StatusCompleted, ran.MigrationsStatus)
	require.Equal(t, ranOrigin.TargetSeq, ran.TargetSeq, "rekey keeps the target")
}

// waitFor polls cond every 20 ms until it holds, failing after timeout (as
// fleettest.Poll, which this package cannot import).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
