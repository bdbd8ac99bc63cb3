package controlplane

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/labels"
)

func TestStoreLabels(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)

	created, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL, Labels: map[string]string{"tier": "gold", "server": "db1"}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"tier": "gold", "server": "db1"}, created.Labels)
	plain, err := s.Create(ctx, Tenant{ID: "plain", DatabaseURL: testURL})
	require.NoError(t, err)
	require.Equal(t, map[string]string{}, plain.Labels)

	// Bad labels are ErrInvalid, naming the label; nothing is stored.
	_, err = s.Create(ctx, Tenant{ID: "bad", DatabaseURL: testURL, Labels: map[string]string{"Tier": "x"}})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, `"Tier"`)
	_, err = s.Patch(ctx, "acme", TenantPatch{Labels: map[string]*string{"tier": ptr(strings.Repeat("x", 256))}})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, `label "tier"`)

	// A patch merges, nil removes, and the migration state stays.
	require.NoError(t, s.RecordSuccess(ctx, "acme", currentOrigin(t, s, "acme"), 4))
	before, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	patched, err := s.Patch(ctx, "acme", TenantPatch{Labels: map[string]*string{"tier": nil, "canary": ptr("")}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"server": "db1", "canary": ""}, patched.Labels)
	require.Equal(t, before.MigrationsVersion, patched.MigrationsVersion)
	require.Equal(t, before.MigrationsStatus, patched.MigrationsStatus)
	require.Equal(t, before.TargetSeq, patched.TargetSeq)

	// More than 32 after the merge is refused.
	many := map[string]*string{}
	for i := range 31 {
		many["k"+strings.Repeat("x", i)] = ptr("v")
	}
	_, err = s.Patch(ctx, "acme", TenantPatch{Labels: many})
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "33 labels")

	// Upsert: nil labels keep them, non-nil replace them; the state stays.
	kept, _, err := s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	require.Equal(t, patched.Labels, kept.Labels)
	replaced, _, err := s.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: testURL, Labels: map[string]string{"tier": "silver"}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"tier": "silver"}, replaced.Labels)
	require.Equal(t, before.TargetSeq, replaced.TargetSeq)
	require.Equal(t, before.MigrationsVersion, replaced.MigrationsVersion)

	// Selectors.
	_, err = s.Create(ctx, Tenant{ID: "globex", DatabaseURL: testURL, Labels: map[string]string{"tier": "gold", "canary": "yes"}})
	require.NoError(t, err)
	for sel, want := range map[string][]string{
		"":                       {"acme", "plain", "globex"},
		"tier=gold":              {"globex"},
		"tier":                   {"acme", "globex"},
		"!tier":                  {"plain"},
		"tier!=gold":             {"acme", "plain"},
		"tier!=gold,!canary":     {"acme", "plain"},
		"tier=gold,canary=yes":   {"globex"},
		"tier=gold,tier=silver":  nil,
		"example.com/x,tier=any": nil,
	} {
		parsed, err := labels.Parse(sel)
		require.NoError(t, err)
		var ids []string
		for cursor := int64(0); ; {
			page, next, err := s.ListMatching(ctx, parsed, cursor, 1)
			require.NoError(t, err, sel)
			for _, tn := range page {
				ids = append(ids, tn.ID)
				require.True(t, parsed.Matches(tn.Labels))
			}
			if next == 0 {
				break
			}
			cursor = next
		}
		require.Equal(t, want, ids, sel)
	}
}
