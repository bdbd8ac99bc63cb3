package rollouts

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestProgressChecksReadTheirIndexes: the two checks Advance and
// settleStale run at every tenant's end read the partial indexes of the
// PENDING and QUEUED members, not the table, late in a rollout whose
// statistics were taken at its start (every member PENDING, as autovacuum
// finds a new rollout). Written as EXISTS they were a sequential scan
// there, reading past every member already done (BENCHMARKS.md 11.3).
func TestProgressChecksReadTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 3000)
	store := NewStore(pool, nil)
	r, created, err := store.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}})
	require.NoError(t, err)
	require.True(t, created)
	_, err = store.Fill(ctx, 2)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE tenantmigrate.rollout_tenants`)
	require.NoError(t, err)
	// The run goes on: all but the last 10 done, 5 of those in flight.
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED', finished_at = now()
		WHERE rollout_id = $1 AND position < 2990`, r.ID)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'QUEUED', claimed_at = now()
		WHERE rollout_id = $1 AND position >= 2995`, r.ID)
	require.NoError(t, err)

	for name, q := range map[string]string{"waveOpenQuery": waveOpenQuery, "pendingLeftQuery": pendingLeftQuery} {
		var plan string
		require.NoError(t, pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+q, r.ID, 0).Scan(&plan), name)
		var nodes []string
		var walk func(n map[string]any)
		walk = func(n map[string]any) {
			if rel, ok := n["Relation Name"].(string); ok {
				nodes = append(nodes, n["Node Type"].(string)+" on "+rel)
			}
			for _, c := range asSlice(n["Plans"]) {
				walk(c.(map[string]any))
			}
		}
		var top []map[string]any
		require.NoError(t, json.Unmarshal([]byte(plan), &top), name)
		walk(top[0]["Plan"].(map[string]any))
		require.NotEmpty(t, nodes, name)
		for _, n := range nodes {
			if strings.HasSuffix(n, " on rollout_tenants") {
				require.NotContains(t, n, "Seq Scan", "%s reads the table: %v", name, nodes)
			}
		}
		var open bool
		require.NoError(t, pool.QueryRow(ctx, q, r.ID, 0).Scan(&open), name)
		require.True(t, open, "%s: 5 PENDING and 5 QUEUED members are left", name)
	}

	// And they still tell when nothing is left.
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED' WHERE rollout_id = $1`, r.ID)
	require.NoError(t, err)
	for name, q := range map[string]string{"waveOpenQuery": waveOpenQuery, "pendingLeftQuery": pendingLeftQuery} {
		var open bool
		require.NoError(t, pool.QueryRow(ctx, q, r.ID, 0).Scan(&open), name)
		require.False(t, open, name)
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
