package controlplane

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// TestStatsUnderRekeyUpsertAndDeleteRaces: the trigger-kept counts
// equal a GROUP BY over tenants after concurrent Upserts (re-registration,
// URL change clearing the state), label patches, delete+create, results
// recorded while the tenant is deleted, and rekeys running meanwhile.
func TestStatsUnderRekeyUpsertAndDeleteRaces(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)
	const ids = 30
	id := func(i int) string { return fmt.Sprintf("u%02d", i) }
	for i := range ids {
		_, err := st.underA.Create(ctx, Tenant{ID: id(i), DatabaseURL: tenantURL(id(i))})
		require.NoError(t, err)
	}
	var g errgroup.Group
	for w := range 6 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			s := st.underA
			for range 120 {
				tid := id(rng.IntN(ids))
				var err error
				switch op := rng.IntN(7); op {
				case 0:
					_, _, err = st.rotated.Upsert(ctx, Tenant{ID: tid, DatabaseURL: tenantURL(tid) + fmt.Sprint(rng.IntN(3))})
				case 1:
					err = s.Delete(ctx, tid)
					if err == nil {
						_, err = s.Create(ctx, Tenant{ID: tid, DatabaseURL: tenantURL(tid)})
						if errors.Is(err, ErrTenantExists) {
							err = nil
						}
					}
				case 2, 3:
					o := originNow(ctx, s, tid)
					err = s.RecordSuccess(ctx, tid, o, int64(1+rng.IntN(3)))
				case 4:
					o := originNow(ctx, s, tid)
					v := int64(rng.IntN(3))
					err = s.RecordFailure(ctx, tid, o, &v, StatusFailed, "boom")
				case 5:
					val := fmt.Sprint(rng.IntN(3))
					_, err = st.rotated.Patch(ctx, tid, TenantPatch{Labels: map[string]*string{"k": &val}})
				case 6:
					_, err = st.rotated.Rekey(ctx, RekeyOptions{PageSize: 5})
				}
				if errors.Is(err, ErrTenantNotFound) || errors.Is(err, ErrStaleResult) {
					err = nil
				}
				if err != nil {
					return fmt.Errorf("writer %d on %s: %w", w, tid, err)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	requireCountsMatch(t, st.underA, 3)
}
