package httpapi_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// TestAdminKeyTimingIndependent is a statistical check that a wrong admin
// key is rejected in the same time whatever it shares with the configured
// key: a random key of the right length, keys of other lengths, the key
// with its last character changed, and the key less its last character.
// Requests go straight to the handler (httptest, no network) and the five
// kinds are interleaved in a random order each round, so that drift of the
// machine's speed hits all of them alike; the medians must agree within a
// loose bound. A byte-by-byte comparison that stops at the first difference
// would make the near misses the slowest by a few nanoseconds per shared
// byte: far below this bound, and below what a network attacker can see,
// which is why the handler compares SHA-256 digests in constant time
// instead (see auth.go). What this catches is a gross leak, such as a
// lookup that only runs for keys of the right length or prefix.
//
// Not parallel: it measures time.
func TestAdminKeyTimingIndependent(t *testing.T) {
	e := newEnv(t, options{})
	h, err := httpapi.NewHandler(httpapi.Config{
		Service:             e.orch,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		AdminAPIKeys:        []string{testAdminKey},
		// Thousands of wrong keys from one address: lift the limit on
		// failures, which would answer 429 after the first 10.
		AuthFailureLimit: httpapi.AuthFailureLimit{Burst: 1 << 30},
	})
	require.NoError(t, err)

	key := testAdminKey
	flip := func(c byte) byte {
		if c == 'x' {
			return 'y'
		}
		return 'x'
	}
	kinds := []struct {
		name string
		key  func() string
	}{
		{"random, right length", func() string { return randomKey(len(key)) }},
		{"random, 8 bytes", func() string { return randomKey(8) }},
		{"random, 200 bytes", func() string { return randomKey(200) }},
		{"last byte changed", func() string { return key[:len(key)-1] + string(flip(key[len(key)-1])) }},
		{"prefix (one byte short)", func() string { return key[:len(key)-1] }},
	}

	const rounds = 2000
	const warmup = 200
	durations := make([][]time.Duration, len(kinds))
	order := make([]int, len(kinds))
	for i := range order {
		order[i] = i
	}
	for round := range warmup + rounds {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			req := httptest.NewRequest(http.MethodGet, "/admin/stats", nil)
			req.Header.Set("Authorization", "Bearer "+kinds[k].key())
			rec := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(rec, req)
			d := time.Since(start)
			require.Equal(t, http.StatusUnauthorized, rec.Code, "%s: %s", kinds[k].name, rec.Body)
			if round >= warmup {
				durations[k] = append(durations[k], d)
			}
		}
	}

	medians := make([]time.Duration, len(kinds))
	var report []string
	for k, ds := range durations {
		slices.Sort(ds)
		medians[k] = ds[len(ds)/2]
		report = append(report, fmt.Sprintf("%s: median %s, p90 %s", kinds[k].name, medians[k], ds[len(ds)*9/10]))
	}
	fastest, slowest := slices.Min(medians), slices.Max(medians)
	t.Logf("%d wrong keys of each kind, all 401; %s; spread of medians %s (%.0f%%)",
		rounds, strings.Join(report, "; "), slowest-fastest, 100*float64(slowest-fastest)/float64(fastest))
	// Loose: all medians within 25% of each other, or within 500ns,
	// whichever is larger (a shared 2-core machine under load; hashing a
	// 200-byte key costs about 200ns more than a short one, which tells the
	// sender only the length of its own key).
	require.LessOrEqual(t, slowest-fastest, max(fastest/4, 500*time.Nanosecond), "medians of the kinds of wrong keys differ")
	// Tighter where a leak would matter: near misses against random keys of
	// the right length, within 10% or 200ns.
	for _, near := range []int{3, 4} {
		diff := (medians[near] - medians[0]).Abs()
		require.LessOrEqual(t, diff, max(medians[0]/10, 200*time.Nanosecond), "%s against %s", kinds[near].name, kinds[0].name)
	}
}

// randomKey returns n random characters of the key alphabet.
func randomKey(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}
