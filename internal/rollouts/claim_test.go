package rollouts

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// queueJob inserts a migrate_tenant job for tenant in state; a running one
// runs on instance.
func queueJob(t *testing.T, pool *pgxpool.Pool, tenant, state, instance string) {
	t.Helper()
	_, err := pool.Exec(t.Context(), `INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, attempt, attempted_at, attempted_by)
		VALUES (jsonb_build_object('tenant_id', $1::text), 'migrate_tenant', 3, $2::tenantmigrate.river_job_state,
			CASE WHEN $2 = 'running' THEN 1 ELSE 0 END, CASE WHEN $2 = 'running' THEN now() END,
			CASE WHEN $2 = 'running' THEN ARRAY[$3::text] END)`, tenant, state, instance)
	require.NoError(t, err)
}

// instance inserts an instance row: live (heartbeat now) or dead (silent
// for longer than its timeout).
func instance(t *testing.T, pool *pgxpool.Pool, id string, live bool) {
	t.Helper()
	ago := time.Minute
	if live {
		ago = 0
	}
	_, err := pool.Exec(t.Context(), `INSERT INTO tenantmigrate.instances (id, host, pid, heartbeat_at, timeout)
		VALUES ($1, 'elsewhere', 1, now() - $2::bigint * interval '1 microsecond', interval '15 seconds')`, id, ago.Microseconds())
	require.NoError(t, err)
}

// TestClaimTakesOverAbandoned: a process that runs tenants itself (migrate
// --all) with nothing PENDING left takes over the QUEUED tenants that
// nothing will ever finish, which otherwise keep the wave, and the
// rollout, RUNNING with nothing to claim for good (a migrate --all that
// never exits):
//
//   - one claimed by a migrate --all that died, whose tenant also has a job
//     waiting in the queue (queued by a server since stopped: nothing works
//     it), and
//   - one handed to the queue whose job is "running" on an instance that
//     died (killed: nothing rescues the job while no instance works the
//     queue).
//
// It leaves those truly in progress: a job running on a live instance, a
// live claimer's claim.
func TestClaimTakesOverAbandoned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 5)
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}})
	require.NoError(t, err)

	// Every tenant handed out by a feeder (no claimer), long enough ago for
	// a take-over.
	got, err := s.Claim(ctx, 2, 5, 0, nil)
	require.NoError(t, err)
	require.Len(t, got, 5)
	other, err := s.NewClaimer(ctx)
	require.NoError(t, err)
	defer other.Release(ctx)
	dead := claimerClass<<32 | 7 // a key whose lock nobody holds
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET claimed_at = now() - interval '1 minute',
		claimed_by = CASE tenant_id WHEN 'tenant-0001' THEN $2::bigint WHEN 'tenant-0004' THEN $3::bigint END
		WHERE rollout_id = $1`, r.ID, dead, other.Key)
	require.NoError(t, err)
	queueJob(t, pool, "tenant-0001", "available", "")
	instance(t, pool, "killed", false)
	instance(t, pool, "alive", true)
	queueJob(t, pool, "tenant-0002", "running", "killed")
	queueJob(t, pool, "tenant-0003", "running", "alive")
	queueJob(t, pool, "tenant-0005", "running", "alive")
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET claimed_by = $2 WHERE rollout_id = $1 AND tenant_id = 'tenant-0005'`, r.ID, dead)
	require.NoError(t, err)

	state, err := s.Step(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, StateRunning, state)
	me, err := s.NewClaimer(ctx)
	require.NoError(t, err)
	defer me.Release(ctx)
	got, err = s.Claim(ctx, 2, 10, me.Key, nil)
	require.NoError(t, err)
	slices.Sort(got)
	require.Equal(t, []string{"tenant-0001", "tenant-0002"}, got,
		"the dead claimer's tenant and the dead instance's job's are taken over; 0003 and 0005 run on a live instance, 0004 is a live claimer's")
	again, err := s.Claim(ctx, 2, 10, me.Key, nil)
	require.NoError(t, err)
	require.Empty(t, again, "taken over once")
}

// TestFeederClaimWithoutJobHandedOutAgain: a tenant a feeder handed to the
// queue whose job ended without a result (cancelled by a halt that a resume
// cleared meanwhile) is handed out again once its claim is StaleClaim old,
// not before; a live claimer's claim is never taken back for its age.
func TestFeederClaimWithoutJobHandedOutAgain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 2)
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}})
	require.NoError(t, err)
	got, err := s.Claim(ctx, 2, 1, 0, nil) // the feeder's: its job is gone
	require.NoError(t, err)
	require.Len(t, got, 1)
	feeder := got[0]
	live, err := s.NewClaimer(ctx)
	require.NoError(t, err)
	defer live.Release(ctx)
	got, err = s.Claim(ctx, 2, 1, live.Key, nil) // a migrate --all's, running it
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NotEqual(t, feeder, got[0])

	age := func(d time.Duration) {
		_, err := pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET claimed_at = now() - $2::bigint * interval '1 millisecond'
			WHERE rollout_id = $1`, r.ID, d.Milliseconds())
		require.NoError(t, err)
	}
	age(DefaultStaleClaim / 2)
	_, err = s.Step(ctx, 2)
	require.NoError(t, err)
	got, err = s.Claim(ctx, 2, 10, 0, nil)
	require.NoError(t, err)
	require.Empty(t, got, "a young claim waits: its job may be about to record its result")

	age(DefaultStaleClaim + time.Second)
	_, err = s.Step(ctx, 2)
	require.NoError(t, err)
	got, err = s.Claim(ctx, 2, 10, 0, nil)
	require.NoError(t, err)
	require.Equal(t, []string{feeder}, got, "handed out again; the live claimer's tenant stays its")
}

// TestClaimServersTakeTurns: a claim takes the tenants the rollout's order
// gives (wave, then position: the canaries first, alone in their wave) and
// returns them with their servers taking turns within each wave: the
// first three of a wave over three servers cover all three, each server's
// tenants keep their position order, and a server whose tenants ran out
// leaves the others to alternate. The queue fetches jobs in this order,
// so the first ones fetched fill every server's slots. Tenant ids are in
// server order here (tenant-0001 to 0010 on db0, and so on; 0021 to 0030
// on db2 and db3, alternately), the order a sort by id would queue them
// in.
func TestClaimServersTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 30)
	_, err := pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET server = CASE
		WHEN substr(id, 8)::int <= 10 THEN 'db0:5432'
		WHEN substr(id, 8)::int <= 20 THEN 'db1:5432'
		WHEN substr(id, 8)::int % 2 = 1 THEN 'db2:5432'
		ELSE 'db3:5432' END`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET server = NULL WHERE id = 'tenant-0005'`) // not known yet
	require.NoError(t, err)
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{CanarySelector: "canary=true", Waves: []WaveSize{{Count: 3}, {Percent: 100}}})
	require.NoError(t, err)
	serverOf := map[string]string{}
	rows, err := pool.Query(ctx, `SELECT id, coalesce(server, '') FROM tenantmigrate.tenants`)
	require.NoError(t, err)
	for rows.Next() {
		var id, server string
		require.NoError(t, rows.Scan(&id, &server))
		serverOf[id] = server
	}
	require.NoError(t, rows.Err())
	m := members(t, pool, r.ID)

	// The canary wave: the three canaries (0010 on db0, 0020 on db1, 0030
	// on db3), and nothing of the next wave while it is open.
	got, err := s.Claim(ctx, 2, 30, 0, nil)
	require.NoError(t, err)
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	require.Equal(t, []string{"tenant-0010", "tenant-0020", "tenant-0030"}, sorted)
	for _, id := range got {
		_, err := s.Done(ctx, 2, Result{TenantID: id, Status: "COMPLETED", Duration: time.Millisecond})
		require.NoError(t, err)
	}
	state, err := s.Step(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, StateRunning, state)

	// Two claims of the second wave: 10, then the other 17.
	var claimed []string
	for _, n := range []int{10, 30} {
		got, err := s.Claim(ctx, 2, n, 0, nil)
		require.NoError(t, err)
		// Which tenants: the first n PENDING ones in position order, as
		// before.
		var pending []string
		for id, mm := range m {
			if mm.Wave == 1 && !slices.Contains(claimed, id) {
				pending = append(pending, id)
			}
		}
		slices.SortFunc(pending, func(a, b string) int { return int(m[a].Position - m[b].Position) })
		want := slices.Clone(pending[:min(n, len(pending))])
		have := slices.Clone(got)
		slices.Sort(want)
		slices.Sort(have)
		require.Equal(t, want, have, "a claim of %d takes the first PENDING tenants in position order", n)

		// In which order: round by round over the servers.
		rounds := map[string]int{} // server -> tenants of it returned so far
		servers := map[string]bool{}
		for _, id := range got {
			servers[serverOf[id]] = true
		}
		require.Greater(t, len(servers), 2)
		lastRound, lastPos := 0, map[string]int64{}
		for i, id := range got {
			srv := serverOf[id]
			round := rounds[srv]
			rounds[srv]++
			require.GreaterOrEqual(t, round, lastRound, "%s (#%d) comes after a later round", id, i)
			lastRound = round
			if p, ok := lastPos[srv]; ok {
				require.Greater(t, m[id].Position, p, "%s: a server's tenants keep their position order", id)
			}
			lastPos[srv] = m[id].Position
		}
		first := map[string]bool{}
		for _, id := range got[:len(servers)] {
			first[serverOf[id]] = true
		}
		require.Len(t, first, len(servers), "the first %d of %v cover every server", len(servers), got)
		claimed = append(claimed, got...)
	}
	require.Len(t, claimed, 27)
	require.Contains(t, claimed, "tenant-0005", "the tenant whose server is not known is claimed too")
}
