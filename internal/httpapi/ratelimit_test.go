package httpapi_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// These tests give failures an hour to refill (Every), so that no attempt
// is earned back while they run, however slow the machine: what they check
// does not depend on timing. ratelimit_internal_test.go checks the refill
// on a fake clock.

// limitedServer serves e's Orchestrator with the test keys and limit,
// logging to e.logs, over real HTTP from 127.0.0.1. It returns the server's
// URL and its handler, for requests from other addresses.
func limitedServer(t *testing.T, e *env, limit httpapi.AuthFailureLimit) (string, http.Handler) {
	t.Helper()
	h, err := httpapi.NewHandler(httpapi.Config{
		Service:             e.orch,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		AdminAPIKeys:        testAdminKeys,
		Logger:              slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AuthFailureLimit:    limit,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, h
}

// serveFrom sends a request straight to h as if from remoteAddr ("IP:port").
func serveFrom(t *testing.T, h http.Handler, remoteAddr, method, path string, body string, opts ...requestOption) response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	req.RemoteAddr = remoteAddr
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// loginFrom posts the login form with key straight to h from remoteAddr.
func loginFrom(t *testing.T, h http.Handler, remoteAddr, key string) response {
	t.Helper()
	return serveFrom(t, h, remoteAddr, http.MethodPost, "/admin/login", url.Values{"key": {key}}.Encode(),
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
}

// requireRefused checks a 429 JSON answer with a Retry-After of close to
// an hour (the tests' Every).
func requireRefused(t *testing.T, res response, what string) {
	t.Helper()
	require.Equal(t, http.StatusTooManyRequests, res.status, "%s: %s", what, res.body)
	require.Equal(t, "application/json", res.header.Get("Content-Type"), what)
	require.Contains(t, res.json(t)["error"], "too many failed authentication attempts", what)
	requireRetryAfter(t, res, what)
}

func requireRetryAfter(t *testing.T, res response, what string) {
	t.Helper()
	secs, err := strconv.Atoi(res.header.Get("Retry-After"))
	require.NoError(t, err, "%s: Retry-After %q", what, res.header.Get("Retry-After"))
	require.True(t, secs > 3000 && secs <= 3600, "%s: Retry-After %d, want about an hour", what, secs)
}

// TestAuthFailureLimit: after the default burst of 10 wrong keys from one
// address, every request with a key from it gets 429 with Retry-After, the
// right key included, and so does the login form; other addresses, requests
// without a key and logged-in sessions are unaffected.
func TestAuthFailureLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	base, h := limitedServer(t, e, httpapi.AuthFailureLimit{Every: time.Hour})

	// A session opened before the attack.
	cookie := login(t, base, testAdminKey)

	for i := range httpapi.DefaultAuthFailureBurst {
		res := doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey("wrong-"+strconv.Itoa(i)))
		require.Equal(t, http.StatusUnauthorized, res.status, "wrong key %d", i+1)
	}

	// Refused, however the key is sent, right or wrong.
	res := doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey(testAdminKey))
	requireRefused(t, res, "right key")
	t.Logf("right key after %d wrong ones: %d, Retry-After %s, %s", httpapi.DefaultAuthFailureBurst, res.status, res.header.Get("Retry-After"), res.body)
	requireRefused(t, doRequest(t, base, http.MethodGet, "/admin/stats", "", withHeader("Authorization", "Bearer "+testAdminKey)), "right bearer")
	requireRefused(t, doRequest(t, base, http.MethodPost, "/admin/migrations/fleet", "{}", withKey(testAdminKeys[0])), "second key, POST")
	requireRefused(t, doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey("wrong")), "wrong key")
	// The same address from another port, straight to the handler.
	requireRefused(t, serveFrom(t, h, "127.0.0.1:40000", http.MethodGet, "/admin/stats", "", withKey(testAdminKey)), "another port")
	// X-Forwarded-For is the client's word: it changes nothing.
	requireRefused(t, doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey(testAdminKey),
		withHeader("X-Forwarded-For", "203.0.113.99")), "X-Forwarded-For")

	// The login form shares the count.
	res, _ = postLogin(t, base, testAdminKey)
	require.Equal(t, http.StatusTooManyRequests, res.status, "body: %s", res.body)
	require.Empty(t, res.header.Values("Set-Cookie"))
	requireRetryAfter(t, res, "login")

	// Unaffected: requests without a key, the session, public endpoints.
	res = doRequest(t, base, http.MethodGet, "/admin/stats", "")
	require.Equal(t, http.StatusUnauthorized, res.status)
	require.Equal(t, http.StatusOK, doRequest(t, base, http.MethodGet, "/admin/stats", "", withCookie(cookie)).status)
	require.Equal(t, http.StatusOK, doRequest(t, base, http.MethodGet, "/health", "").status)

	// Other addresses: their own counts.
	other := "203.0.113.7:1234"
	require.Equal(t, http.StatusOK, serveFrom(t, h, other, http.MethodGet, "/admin/stats", "", withKey(testAdminKey)).status)
	require.Equal(t, http.StatusUnauthorized, serveFrom(t, h, other, http.MethodGet, "/admin/stats", "", withKey("wrong")).status)
	require.Equal(t, http.StatusSeeOther, loginFrom(t, h, other, testAdminKey).status)
	// Not even one claiming, in X-Forwarded-For, to be the refused one.
	require.Equal(t, http.StatusOK, serveFrom(t, h, "198.51.100.1:1", http.MethodGet, "/admin/stats", "",
		withKey(testAdminKey), withHeader("X-Forwarded-For", "127.0.0.1")).status)

	// IPv6 addresses count per /64.
	for i := range httpapi.DefaultAuthFailureBurst {
		res := serveFrom(t, h, "[2001:db8:1:2::"+strconv.Itoa(i+1)+"]:443", http.MethodGet, "/admin/stats", "", withKey("wrong"))
		require.Equal(t, http.StatusUnauthorized, res.status, "IPv6 wrong key %d", i+1)
	}
	requireRefused(t, serveFrom(t, h, "[2001:db8:1:2:ffff::1]:443", http.MethodGet, "/admin/stats", "", withKey(testAdminKey)), "same /64")
	require.Equal(t, http.StatusOK, serveFrom(t, h, "[2001:db8:1:3::1]:443", http.MethodGet, "/admin/stats", "", withKey(testAdminKey)).status, "next /64")

	// The log says why, and never holds a key.
	logs := e.logs.String()
	require.Contains(t, logs, "too many failed attempts")
	for _, key := range append([]string{"wrong-0"}, testAdminKeys...) {
		require.NotContains(t, logs, key, "a key must never be logged")
	}
}

// TestAuthFailureLimitLogin: wrong keys in the login form count; past the
// burst the form is shown again, 429, with a message and Retry-After, and
// the right key does not log in.
func TestAuthFailureLimitLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	base, h := limitedServer(t, e, httpapi.AuthFailureLimit{Burst: 3, Every: time.Hour})

	for i := range 3 {
		res, _ := postLogin(t, base, "wrong-"+strconv.Itoa(i))
		require.Equal(t, http.StatusUnauthorized, res.status, "wrong key %d", i+1)
		require.Contains(t, byID(t, string(res.body), "login-error"), "Invalid key.")
	}
	res, _ := postLogin(t, base, testAdminKey)
	require.Equal(t, http.StatusTooManyRequests, res.status, "body: %s", res.body)
	require.Equal(t, "text/html; charset=utf-8", res.header.Get("Content-Type"))
	require.Empty(t, res.header.Values("Set-Cookie"), "the right key must not log in")
	requireRetryAfter(t, res, "login")
	require.Regexp(t, `^Too many failed attempts from your address\. Try again in \d+ seconds\.$`,
		strings.TrimSpace(byID(t, string(res.body), "login-error")))
	require.Contains(t, string(res.body), `<form method="post" action="/admin/login">`)

	// The admin API shares the count.
	requireRefused(t, doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey(testAdminKey)), "admin API")
	// The form itself still loads, and another address logs in.
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/admin/login", "", asBrowser()).status)
	require.Equal(t, http.StatusSeeOther, loginFrom(t, h, "192.0.2.50:1000", testAdminKey).status)

	require.NotContains(t, e.logs.String(), "wrong-0", "a key must never be logged")
	require.NotContains(t, e.logs.String(), testAdminKey, "a key must never be logged")
}

// TestAuthFailureLimitCountsOnlyFailures: successful authentications,
// requests without a key, empty login forms and bad session cookies use
// none of the budget, however many; then the burst of wrong keys is still
// whole.
func TestAuthFailureLimitCountsOnlyFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	const burst = 3
	base, _ := limitedServer(t, e, httpapi.AuthFailureLimit{Burst: burst, Every: time.Hour})

	for i := range 200 {
		// An unknown admin path: 404 once authenticated, no database.
		require.Equal(t, http.StatusNotFound, doRequest(t, base, http.MethodGet, "/admin/nope", "", withKey(testAdminKey)).status, "success %d", i+1)
		require.Equal(t, http.StatusUnauthorized, doRequest(t, base, http.MethodGet, "/admin/nope", "").status, "no key %d", i+1)
	}
	for i := range 20 {
		login(t, base, testAdminKeys[i%2])
		res, _ := postLogin(t, base, "")
		require.Equal(t, http.StatusUnauthorized, res.status, "empty form %d", i+1)
		bad := &http.Cookie{Name: sessionCookieName, Value: "forged-" + strconv.Itoa(i)}
		require.Equal(t, http.StatusUnauthorized, doRequest(t, base, http.MethodGet, "/admin/stats", "", withCookie(bad)).status)
	}

	for i := range burst {
		res := doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey("wrong"))
		require.Equal(t, http.StatusUnauthorized, res.status, "wrong key %d: the budget must be whole", i+1)
	}
	requireRefused(t, doRequest(t, base, http.MethodGet, "/admin/stats", "", withKey(testAdminKey)), "after the burst")
}

// TestAuthFailureLimitEvictsOldest: with MaxClients addresses tracked, a
// new one makes the limiter forget the address whose last failure is the
// oldest; the recent ones stay refused.
func TestAuthFailureLimitEvictsOldest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	const maxClients = 100
	_, h := limitedServer(t, e, httpapi.AuthFailureLimit{Burst: 1, Every: time.Hour, MaxClients: maxClients})
	addr := func(i int) string { return "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":9000" }

	const n = 1000
	for i := range n {
		require.Equal(t, http.StatusUnauthorized, serveFrom(t, h, addr(i), http.MethodGet, "/admin/nope", "", withKey("wrong")).status)
	}
	for i := range n {
		res := serveFrom(t, h, addr(i), http.MethodGet, "/admin/nope", "", withKey(testAdminKey))
		if i < n-maxClients {
			// Forgotten. (Each such success leaves the others alone: it
			// adds nothing to track.)
			require.Equal(t, http.StatusNotFound, res.status, "address %d", i)
		} else {
			requireRefused(t, res, "address "+strconv.Itoa(i))
		}
	}
}

func TestAuthFailureLimitConfig(t *testing.T) {
	t.Parallel()
	for _, bad := range []httpapi.AuthFailureLimit{{Burst: -1}, {Every: -time.Second}, {MaxClients: -1}} {
		_, err := httpapi.NewHandler(httpapi.Config{
			Service:             (*tenantmigrate.Orchestrator)(nil), // not reached
			TenantIDFromContext: tenantmigrate.TenantIDFromContext,
			AuthFailureLimit:    bad,
		})
		require.ErrorContains(t, err, "AuthFailureLimit", "%+v", bad)
	}
}
