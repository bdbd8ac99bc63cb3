package rollouts

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// backlogFleet returns a control plane with n tenants at version 1
// (tenant-0001...), every tenth with the label canary=true.
func backlogFleet(t *testing.T, n int) *pgxpool.Pool {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, controlplane.Migrate(ctx, pool))
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status, labels)
		SELECT 'tenant-' || lpad(i::text, 4, '0'), '\x00'::bytea, 1, 'COMPLETED',
			CASE WHEN i % 10 = 0 THEN '{"canary": "true"}'::jsonb ELSE '{}' END
		FROM generate_series(1, $1) AS i`, n)
	require.NoError(t, err)
	return pool
}

// member is one row of rollout_tenants.
type member struct {
	Wave     int
	Position int64
	State    string
}

func members(t *testing.T, pool *pgxpool.Pool, rolloutID int64) map[string]member {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT tenant_id, wave, position, state FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1`, rolloutID)
	require.NoError(t, err)
	out := map[string]member{}
	for rows.Next() {
		var (
			id string
			m  member
		)
		require.NoError(t, rows.Scan(&id, &m.Wave, &m.Position, &m.State))
		out[id] = m
	}
	require.NoError(t, rows.Err())
	return out
}

func backlogExists(t *testing.T, pool *pgxpool.Pool, rolloutID int64) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1)`, rolloutID).Scan(&ok))
	return ok
}

// TestRolloutTwoStepsSameAsOne: a rollout inserted in two steps (a head of
// 3 tenants after the canaries, then Fill) has the same tenants, waves,
// positions and totals as the single transaction inserted before, and its
// first claim is its canary wave.
func TestRolloutTwoStepsSameAsOne(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 200)
	opts := Options{CanarySelector: "canary=true", Waves: []WaveSize{{Count: 25}, {Percent: 50}}}

	// What the single transaction inserted before: every member, ordered
	// canaries first, then by md5 of the id.
	rows, err := pool.Query(ctx, `SELECT id, pos, width_bucket(pos, '{20,25,100,200}'::bigint[]) FROM (
		SELECT id, row_number() OVER (ORDER BY labels @> '{"canary": "true"}' DESC, md5(id), id) - 1 AS pos
		FROM tenantmigrate.tenants) t`)
	require.NoError(t, err)
	want := map[string]member{}
	for rows.Next() {
		var (
			id string
			m  member
		)
		require.NoError(t, rows.Scan(&id, &m.Position, &m.Wave))
		m.State = "PENDING"
		want[id] = m
	}
	require.NoError(t, rows.Err())

	two := NewStore(pool, nil)
	two.StartHead = 3
	r2, created, err := two.Ensure(ctx, 2, opts)
	require.NoError(t, err)
	require.True(t, created)
	require.True(t, backlogExists(t, pool, r2.ID))
	require.Equal(t, int64(200), r2.Total)
	require.Equal(t, []int64{20, 25, 100, 200}, r2.WaveEnds)
	require.Len(t, members(t, pool, r2.ID), 23, "the 20 canaries and 3 of the next wave")
	require.Equal(t, int64(200), r2.Pending, "tenants not yet inserted are pending")
	require.Equal(t, int64(5), r2.Waves[1].Pending)

	ids, err := two.Claim(ctx, 2, 100, 0, func(context.Context, pgx.Tx, []string) error { return nil })
	require.NoError(t, err)
	require.Len(t, ids, 20, "the canary wave")
	for _, id := range ids {
		require.Equal(t, 0, want[id].Wave, id)
	}

	waiting, err := two.Fill(ctx, 2)
	require.NoError(t, err)
	require.False(t, waiting)
	require.False(t, backlogExists(t, pool, r2.ID))
	got := members(t, pool, r2.ID)
	require.Len(t, got, 200)
	for id, m := range want {
		g, ok := got[id]
		require.True(t, ok, id)
		require.Equal(t, m.Wave, g.Wave, id)
		require.Equal(t, m.Position, g.Position, id)
	}
	r2, err = two.Get(ctx, r2.ID)
	require.NoError(t, err)
	require.Equal(t, int64(200), r2.Total)
	require.Equal(t, []int64{20, 5, 75, 100}, []int64{r2.Waves[0].Size, r2.Waves[1].Size, r2.Waves[2].Size, r2.Waves[3].Size})
	require.Equal(t, int64(200), r2.Pending, "the 20 QUEUED canaries are pending too")
}

// TestRolloutFillKeepsMembershipOfCreation: tenants migrated, deleted,
// relabelled or added between the two steps shift, duplicate and drop no
// one: the rest is exactly the members of the creating snapshot at their
// positions, and a tenant added meanwhile joins the last wave once, added
// by the Fill that inserts the rest (not by an AddLate before it, which
// would take the members not yet inserted for late ones, and which the
// fleet scan or migrate --all that called it does not repeat).
func TestRolloutFillKeepsMembershipOfCreation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 60)
	s := NewStore(pool, nil)
	s.StartHead = 2
	r, _, err := s.Ensure(ctx, 2, Options{})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 60}, r.WaveEnds)
	head := members(t, pool, r.ID)
	require.Len(t, head, 1)

	// The order of the whole, as one transaction computes it.
	rows, err := pool.Query(ctx, `SELECT id, row_number() OVER (ORDER BY md5(id), id) - 1 FROM tenantmigrate.tenants`)
	require.NoError(t, err)
	wantPos := map[string]int64{}
	var order []string
	for rows.Next() {
		var (
			id  string
			pos int64
		)
		require.NoError(t, rows.Scan(&id, &pos))
		wantPos[id] = pos
		order = append(order, id)
	}
	require.NoError(t, rows.Err())

	// Between the steps: members not yet inserted are migrated (by a
	// request, say), deleted and made canaries; a new tenant is added.
	migrated, deleted, relabelled := order[5], order[6], order[7]
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_version = 2, migrations_status = 'COMPLETED' WHERE id = $1`, migrated)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM tenantmigrate.tenants WHERE id = $1`, deleted)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET labels = '{"canary": "true"}' WHERE id = $1`, relabelled)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version) VALUES ('tenant-late', '\x00', 1)`)
	require.NoError(t, err)
	added, active, err := s.AddLate(ctx, 2, false)
	require.NoError(t, err)
	require.Zero(t, added, "no late tenants while the rest is being inserted")
	require.True(t, active)

	waiting, err := s.Fill(ctx, 2)
	require.NoError(t, err)
	require.False(t, waiting)
	got := members(t, pool, r.ID)
	require.Len(t, got, 61)
	for id, pos := range wantPos {
		require.Equal(t, pos, got[id].Position, id)
		require.Equal(t, map[bool]int{true: 0, false: 1}[pos < 1], got[id].Wave, id)
	}
	require.Equal(t, "PENDING", got[migrated].State, "a member migrated meanwhile stays in the rollout; its run finds it done")
	require.Equal(t, member{Wave: 1, Position: 60, State: "PENDING"}, got["tenant-late"], "the Fill added the late tenant")

	added, active, err = s.AddLate(ctx, 2, false)
	require.NoError(t, err)
	require.Zero(t, added)
	require.True(t, active)
	require.NoError(t, err)
	require.Zero(t, added)
	r, err = s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, int64(61), r.Total)
	require.Equal(t, []int64{1, 61}, r.WaveEnds)
}

// finish records every QUEUED or PENDING tenant of waves up to wave as
// completed, claiming them first, as the feeder and the workers do.
func finish(t *testing.T, s *Store, target int64) int {
	t.Helper()
	ids, err := s.Claim(t.Context(), target, 1000, 0, func(context.Context, pgx.Tx, []string) error { return nil })
	require.NoError(t, err)
	for _, id := range ids {
		_, err := s.Done(t.Context(), target, Result{TenantID: id, Status: "COMPLETED", Duration: time.Millisecond})
		require.NoError(t, err)
	}
	return len(ids)
}

// TestRolloutHeadDoneBeforeFill: waves whose tenants all finished before
// the rest of the rollout is inserted do not complete it; after Fill, the
// rollout runs on and completes.
func TestRolloutHeadDoneBeforeFill(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for name, tc := range map[string]struct {
		waves []WaveSize
		head  int
	}{
		"one wave":         {waves: []WaveSize{{Percent: 100}}, head: 2},
		"first wave fits":  {waves: nil, head: 1}, // [1, 30]: the first wave is in the head
		"several in front": {waves: []WaveSize{{Count: 1}, {Count: 2}, {Count: 10}}, head: 1},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool := backlogFleet(t, 30)
			s := NewStore(pool, nil)
			s.StartHead = 2
			r, _, err := s.Ensure(ctx, 2, Options{Waves: tc.waves})
			require.NoError(t, err)
			require.Equal(t, tc.head, finish(t, s, 2))
			for range 3 {
				state, err := s.Step(ctx, 2)
				require.NoError(t, err)
				require.Equal(t, StateRunning, state)
				require.Zero(t, finish(t, s, 2), "nothing more to hand out before the rest is in")
			}
			r, err = s.Get(ctx, r.ID)
			require.NoError(t, err)
			require.Equal(t, StateRunning, r.State)
			require.Equal(t, int64(30-tc.head), r.Pending)

			waiting, err := s.Fill(ctx, 2)
			require.NoError(t, err)
			require.False(t, waiting)
			for range 10 {
				state, err := s.Step(ctx, 2)
				require.NoError(t, err)
				if state == StateCompleted {
					break
				}
				finish(t, s, 2)
			}
			r, err = s.Get(ctx, r.ID)
			require.NoError(t, err)
			require.Equal(t, StateCompleted, r.State)
			require.Equal(t, int64(30), r.Completed)
		})
	}
}

// TestRolloutFillTakenOver: while a process holds the backlog (inserting
// it), others wait, and nothing completes; when that process dies (its
// session ends with what it had inserted), the next Fill inserts it all.
func TestRolloutFillTakenOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 40)
	s := NewStore(pool, nil)
	s.StartHead = 2
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}})
	require.NoError(t, err)

	// The "inserter": a session of its own that took the backlog's lease
	// and inserted part of the rest, then dies.
	conn, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1 FOR UPDATE`, r.ID)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO tenantmigrate.rollout_tenants (rollout_id, tenant_id, wave, position)
		SELECT $1, id, 0, 1000 + row_number() OVER () FROM (SELECT unnest(tenant_ids) AS id FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1) b
		WHERE NOT EXISTS (SELECT 1 FROM tenantmigrate.rollout_tenants rt WHERE rt.rollout_id = $1 AND rt.tenant_id = b.id)
		LIMIT 5`, r.ID)
	require.NoError(t, err)
	var pid int
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))

	waiting, err := s.Fill(ctx, 2)
	require.NoError(t, err)
	require.True(t, waiting, "another process is inserting")
	require.Equal(t, 2, finish(t, s, 2))
	state, err := s.Step(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, StateRunning, state)
	require.Len(t, members(t, pool, r.ID), 2)

	// The inserter's process dies: its session goes with the lease.
	_, err = pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		waiting, err := s.Fill(ctx, 2)
		require.NoError(t, err)
		return !waiting
	}, 30*time.Second, 20*time.Millisecond, "the backlog was not taken over")
	got := members(t, pool, r.ID)
	require.Len(t, got, 40)
	for _, m := range got {
		require.Less(t, m.Position, int64(40))
	}
	require.False(t, backlogExists(t, pool, r.ID))
}

// TestFeederFills: a running feeder inserts the backlog of its target's
// rollout beside feeding, and drops the backlog of an aborted one.
func TestFeederFills(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 30)
	s := NewStore(pool, nil)
	s.StartHead = 2
	r, _, err := s.Ensure(ctx, 2, Options{})
	require.NoError(t, err)
	f := NewFeeder(FeederConfig{Store: s, Target: 2, Interval: 10 * time.Millisecond,
		EnqueueTx: func(_ context.Context, _ pgx.Tx, ids []string) (int, error) { return len(ids), nil }})
	require.NoError(t, f.Start(ctx))
	defer f.Stop()
	require.Eventually(t, func() bool { return !backlogExists(t, pool, r.ID) }, 30*time.Second, 10*time.Millisecond)
	require.Len(t, members(t, pool, r.ID), 30)
	f.Stop()

	// An aborted rollout's backlog is dropped by the next Fill.
	r3, _, err := s.Ensure(ctx, 3, Options{})
	require.NoError(t, err)
	require.True(t, backlogExists(t, pool, r3.ID))
	_, err = s.Abort(ctx, r3.ID)
	require.NoError(t, err)
	waiting, err := s.Fill(ctx, 2)
	require.NoError(t, err)
	require.False(t, waiting)
	require.False(t, backlogExists(t, pool, r3.ID))
}

// TestAddLateConcurrent: instances adding the late tenants at once add each
// one once, and none fails (each call's insert reads after the one before
// it committed).
func TestAddLateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 10)
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{})
	require.NoError(t, err)
	_, err = s.Fill(ctx, 2)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version)
		SELECT 'late-' || i, '\x00', 1 FROM generate_series(1, 20) i`)
	require.NoError(t, err)

	const callers = 8
	var (
		wg    sync.WaitGroup
		total atomic.Int64
		errs  = make(chan error, callers)
	)
	for range callers {
		wg.Go(func() {
			n, _, err := s.AddLate(ctx, 2, false)
			errs <- err
			total.Add(n)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(20), total.Load(), "every late tenant added once in all")
	require.Len(t, members(t, pool, r.ID), 30)
	r, err = s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, int64(30), r.Total)
}

// TestDoneOfMemberNotYetInserted: a run of a member beyond the head (a
// request, a migrate-now) that fails before the rest is inserted still
// fails the tenant in the rollout and halts it.
func TestDoneOfMemberNotYetInserted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 30)
	s := NewStore(pool, nil)
	s.StartHead = 2
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Count: 2}, {Percent: 100}}, HaltFailureRate: -1}) // the first failure halts
	require.NoError(t, err)
	head := members(t, pool, r.ID)
	require.Len(t, head, 2)
	var outside string
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.tenants
		WHERE id <> ALL($1) ORDER BY id LIMIT 1`, keys(head)).Scan(&outside))

	halted, err := s.Done(ctx, 2, Result{TenantID: outside, Status: "FAILED_STALE", Err: "boom", FailedVersion: 2})
	require.NoError(t, err)
	require.True(t, halted, "the failure of a member not yet inserted counts")
	got := members(t, pool, r.ID)
	require.Len(t, got, 30, "the rest was inserted")
	require.Equal(t, "FAILED", got[outside].State)
	r, err = s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, StateHalted, r.State)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
