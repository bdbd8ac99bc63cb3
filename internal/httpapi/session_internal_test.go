package httpapi

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	sessionTestKey  = "session-test-key-0123456789"
	sessionOtherKey = "session-other-key-9876543210"
	sessionThirdKey = "session-third-key-abcdefghij"
)

func TestSessionToken(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	kc := newKeyChecker([]string{sessionOtherKey, sessionTestKey})
	tok := newSessionToken(sessionTestKey, now)

	require.NotContains(t, tok, sessionTestKey)
	require.NotEqual(t, tok, newSessionToken(sessionTestKey, now), "each login gets its own token")
	require.NoError(t, kc.validSession(tok, now))
	require.NoError(t, kc.validSession(tok, now.Add(sessionMaxAge-time.Second)))
	require.ErrorIs(t, kc.validSession(tok, now.Add(sessionMaxAge)), errExpiredSession)
	require.ErrorIs(t, kc.validSession(tok, now.Add(48*time.Hour)), errExpiredSession)
	// A token that expires further ahead than a fresh login would is
	// refused even when signed (an instance with its clock far ahead).
	require.ErrorIs(t, kc.validSession(tok, now.Add(-time.Hour)), errBadSession)

	// The key that signed it must still be configured.
	require.NoError(t, newKeyChecker([]string{sessionTestKey}).validSession(tok, now))
	require.ErrorIs(t, newKeyChecker([]string{sessionOtherKey, sessionThirdKey}).validSession(tok, now), errBadSession)
	require.ErrorIs(t, newKeyChecker(nil).validSession(tok, now), errBadSession)

	// Any change to any byte breaks it, so does a changed length.
	raw, err := sessionEncoding.DecodeString(tok)
	require.NoError(t, err)
	for i := range raw {
		changed := append([]byte(nil), raw...)
		changed[i] ^= 0x01
		require.ErrorIs(t, kc.validSession(sessionEncoding.EncodeToString(changed), now), errBadSession, "byte %d", i)
	}
	for _, bad := range []string{"", tok[:len(tok)-1], tok + "A", tok + "=", sessionTestKey, strings.Repeat("A", len(tok))} {
		require.ErrorIs(t, kc.validSession(bad, now), errBadSession, "%q", bad)
	}

	// Extending the expiry needs the key.
	extended := append([]byte(nil), raw...)
	binary.BigEndian.PutUint64(extended[1:9], uint64(now.Add(sessionMaxAge+time.Hour).Unix()))
	require.ErrorIs(t, kc.validSession(sessionEncoding.EncodeToString(extended), now.Add(sessionMaxAge)), errBadSession)
}

func TestCheckSession(t *testing.T) {
	t.Parallel()
	now := time.Now()
	kc := newKeyChecker([]string{sessionTestKey})
	good := newSessionToken(sessionTestKey, now)
	expired := newSessionToken(sessionTestKey, now.Add(-sessionMaxAge-time.Minute))

	request := func(method, path string, tokens ...string) *http.Request {
		r := httptest.NewRequest(method, "http://admin.test"+path, nil)
		for _, tok := range tokens {
			r.AddCookie(&http.Cookie{Name: sessionCookieName, Value: tok})
		}
		return r
	}
	status := func(err error) int {
		var reqErr *requestError
		require.True(t, errors.As(err, &reqErr), "%v", err)
		return reqErr.status
	}

	require.ErrorIs(t, kc.checkSession(request(http.MethodGet, "/admin/"), now), errNoSession)
	require.NoError(t, kc.checkSession(request(http.MethodGet, "/admin/", good), now))
	require.NoError(t, kc.checkSession(request(http.MethodHead, "/admin/stats", good), now))
	require.NoError(t, kc.checkSession(request(http.MethodGet, "/admin/", "junk", good), now), "any valid cookie of the name will do")

	err := kc.checkSession(request(http.MethodGet, "/admin/", expired), now)
	require.Equal(t, http.StatusUnauthorized, status(err))
	require.Contains(t, err.Error(), "expired")

	// State-changing methods: only under River UI, and only same-origin.
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		for _, path := range []string{"/admin/tenants/acme", "/admin/migrations/fleet", "/admin/riverui/../tenants/acme", "/admin/riveruix/api"} {
			err := kc.checkSession(request(method, path, good), now)
			require.Equal(t, http.StatusUnauthorized, status(err), "%s %s", method, path)
		}
		require.NoError(t, kc.checkSession(request(method, "/admin/riverui/api/jobs/cancel", good), now))

		r := request(method, "/admin/riverui/api/jobs/cancel", good)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		require.NoError(t, kc.checkSession(r, now))
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		require.Equal(t, http.StatusForbidden, status(kc.checkSession(r, now)))
		r = request(method, "/admin/riverui/api/jobs/cancel", good)
		r.Header.Set("Origin", "https://evil.example")
		require.Equal(t, http.StatusForbidden, status(kc.checkSession(r, now)))
	}
}

func TestUnderRiverUI(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/admin/riverui":                 true,
		"/admin/riverui/":                true,
		"/admin/riverui/api/jobs/cancel": true,
		"/admin/riverui/./api":           true,
		"/admin/riverui/../tenants/x":    false,
		"/admin/riverui/..":              false,
		"/admin/riveruix":                false,
		"/admin/tenants/x":               false,
		"/riverui/":                      false,
		"":                               false,
	} {
		require.Equal(t, want, underRiverUI(path), "%q", path)
	}
}

func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, "http://admin.test/admin/login", nil)
	c := sessionCookie(r, "tok")
	require.Equal(t, "tok", c.Value)
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, c.SameSite)
	require.Equal(t, "/admin", c.Path)
	require.Equal(t, 12*60*60, c.MaxAge)
	require.False(t, c.Secure)

	for _, proto := range []string{"https", "HTTPS", "https, http"} {
		r.Header.Set("X-Forwarded-Proto", proto)
		require.True(t, sessionCookie(r, "tok").Secure, proto)
	}
	r.Header.Set("X-Forwarded-Proto", "http")
	require.False(t, sessionCookie(r, "tok").Secure)

	tls := httptest.NewRequest(http.MethodPost, "https://admin.test/admin/login", nil)
	require.True(t, sessionCookie(tls, "tok").Secure)

	clear := sessionCookie(tls, "")
	require.Equal(t, -1, clear.MaxAge)
	require.Contains(t, clear.String(), "Max-Age=0")
}

// FuzzSessionToken: a token that was not minted with a configured key is
// never valid, and no input panics.
func FuzzSessionToken(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	kc := newKeyChecker([]string{sessionTestKey})
	// Minted by hand with a fixed nonce: every fuzz worker computes the same.
	var tok [sessionTokenSize]byte
	tok[0] = sessionVersion
	binary.BigEndian.PutUint64(tok[1:9], uint64(now.Add(time.Hour).Unix()))
	copy(tok[sessionPayloadSize:], sessionMAC(sessionSecret(sha256.Sum256([]byte(sessionTestKey))), tok[:sessionPayloadSize]))
	valid := sessionEncoding.EncodeToString(tok[:])
	if err := kc.validSession(valid, now); err != nil {
		f.Fatalf("hand-minted token: %v", err)
	}
	f.Add(valid)
	f.Add(newSessionToken(sessionOtherKey, now))
	f.Add("")
	f.Add(sessionTestKey)
	f.Add(strings.Repeat("A", sessionEncoding.EncodedLen(sessionTokenSize)))
	f.Fuzz(func(t *testing.T, token string) {
		err := kc.validSession(token, now)
		if err == nil && token != valid {
			t.Fatalf("accepted a token not minted with the key: %q", token)
		}
	})
}
