package httpapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time           { return c.t }
func (c *fakeClock) advance(d time.Duration)  { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock                { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func reqFrom(remoteAddr string) *http.Request { return &http.Request{RemoteAddr: remoteAddr} }

// newTestFailLimiter is a failLimiter of l (zero fields: defaults) on clock.
func newTestFailLimiter(t *testing.T, l AuthFailureLimit, clock *fakeClock) *failLimiter {
	t.Helper()
	l, err := l.withDefaults()
	require.NoError(t, err)
	fl := newFailLimiter(l)
	fl.now = clock.now
	return fl
}

// tracked returns how many addresses fl tracks.
func tracked(t *testing.T, fl *failLimiter) int {
	t.Helper()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	require.Equal(t, len(fl.clients), fl.lru.Len(), "map and list out of step")
	return len(fl.clients)
}

// TestFailLimiterDefaults checks the default budget: 10 failures in a row,
// then one more per second, and the wait it reports.
func TestFailLimiterDefaults(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	fl := newTestFailLimiter(t, AuthFailureLimit{}, clock)
	a, b := reqFrom("192.0.2.1:1000"), reqFrom("192.0.2.2:1000")

	for i := range 10 {
		require.Zero(t, fl.refused(a), "failure %d", i+1)
		fl.fail(a)
	}
	require.Equal(t, time.Second, fl.refused(a), "burst of 10 spent")
	require.Equal(t, time.Second, fl.refused(reqFrom("192.0.2.1:2000")), "same IP, other port")
	require.Zero(t, fl.refused(b), "another address")

	clock.advance(400 * time.Millisecond)
	require.Equal(t, 600*time.Millisecond, fl.refused(a))
	clock.advance(600 * time.Millisecond)
	require.Zero(t, fl.refused(a), "one attempt earned back")
	fl.fail(a)
	require.Equal(t, time.Second, fl.refused(a), "and spent")

	// Ten seconds refill the whole burst.
	clock.advance(10 * time.Second)
	for i := range 10 {
		require.Zero(t, fl.refused(a), "failure %d after the refill", i+1)
		fl.fail(a)
	}
	require.Positive(t, fl.refused(a))

	// Failures that race past refused leave the bucket empty, not in debt
	// beyond one token's wait.
	fl.fail(a)
	fl.fail(a)
	require.Equal(t, time.Second, fl.refused(a))
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:1234", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:1234", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:1234", "2001:db8:1:2::"},
		{"[2001:db8:1:2::ffff]:80", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:80", "fe80::"},
		{"[::1]:80", "::"},
	} {
		require.Equal(t, netip.MustParseAddr(tc.want), clientAddr(reqFrom(tc.remote)), tc.remote)
	}
	for _, remote := range []string{"", "@", "/run/tenantmigrate.sock", "192.0.2.1"} {
		require.Equal(t, netip.Addr{}, clientAddr(reqFrom(remote)), remote)
	}
}

// TestFailLimiterBounded sends wrong keys from 100,000 distinct addresses
// through the admin key check: the limiter never tracks more than
// MaxClients (default 10,000), the most recent ones; the oldest are
// forgotten; and once their buckets are full again, all are dropped.
func TestFailLimiterBounded(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	fl := newTestFailLimiter(t, AuthFailureLimit{}, clock)
	h := requireKey(newKeyChecker([]string{"the-right-key"}), fl, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	send := func(remote, key string) int {
		req := httptest.NewRequest(http.MethodGet, "/admin/stats", nil)
		req.RemoteAddr = remote
		req.Header.Set("apikey", key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d:5000", i>>16&0xff, i>>8&0xff, i&0xff) }

	// The first address is refused after its burst.
	for range DefaultAuthFailureBurst {
		require.Equal(t, http.StatusUnauthorized, send(addr(0), "wrong"))
	}
	require.Equal(t, http.StatusTooManyRequests, send(addr(0), "the-right-key"))

	const n = 100_000
	most := 0
	for i := 1; i <= n; i++ {
		require.Equal(t, http.StatusUnauthorized, send(addr(i), "wrong"))
		most = max(most, tracked(t, fl))
	}
	t.Logf("%d addresses, at most %d tracked", n+1, most)
	require.Equal(t, DefaultAuthFailureMaxClients, most)
	require.Equal(t, DefaultAuthFailureMaxClients, tracked(t, fl))

	// The oldest address was forgotten (its key works again); the most
	// recent ones are still counted.
	require.Equal(t, http.StatusNoContent, send(addr(0), "the-right-key"))
	for range DefaultAuthFailureBurst - 1 {
		require.Equal(t, http.StatusUnauthorized, send(addr(n), "wrong"))
	}
	require.Equal(t, http.StatusTooManyRequests, send(addr(n), "the-right-key"))

	// Successes add nothing to track.
	for i := range 1000 {
		require.Equal(t, http.StatusNoContent, send(addr(n+1+i), "the-right-key"))
	}
	require.Equal(t, DefaultAuthFailureMaxClients, tracked(t, fl))

	// Once every bucket is full again, the next failure drops them all.
	clock.advance(DefaultAuthFailureBurst * DefaultAuthFailureEvery)
	require.Equal(t, http.StatusUnauthorized, send(addr(n+5000), "wrong"))
	require.Equal(t, 1, tracked(t, fl))
}

func TestAuthFailureLimitDefaults(t *testing.T) {
	t.Parallel()
	l, err := AuthFailureLimit{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, AuthFailureLimit{Burst: 10, Every: time.Second, MaxClients: 10_000}, l)
	l, err = AuthFailureLimit{Burst: 3, Every: time.Minute, MaxClients: 5}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, AuthFailureLimit{Burst: 3, Every: time.Minute, MaxClients: 5}, l)
	for _, bad := range []AuthFailureLimit{{Burst: -1}, {Every: -time.Second}, {MaxClients: -1}} {
		_, err := bad.withDefaults()
		require.Error(t, err, "%+v", bad)
	}
}
