package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})

	for _, tc := range []struct {
		name   string
		opts   []requestOption
		status int
	}{
		{"no key", nil, http.StatusUnauthorized},
		{"wrong key", []requestOption{withKey("wrong")}, http.StatusUnauthorized},
		{"prefix of the key", []requestOption{withKey(testAdminKey[:10])}, http.StatusUnauthorized},
		{"key with a suffix", []requestOption{withKey(testAdminKey + "x")}, http.StatusUnauthorized},
		{"empty apikey", []requestOption{withHeader("apikey", "")}, http.StatusUnauthorized},
		{"basic scheme", []requestOption{withHeader("Authorization", "Basic "+testAdminKey)}, http.StatusUnauthorized},
		{"bearer without token", []requestOption{withHeader("Authorization", "Bearer")}, http.StatusUnauthorized},
		{"wrong bearer", []requestOption{withHeader("Authorization", "Bearer wrong")}, http.StatusUnauthorized},
		{"apikey", []requestOption{withKey(testAdminKey)}, http.StatusOK},
		{"apikey, second key", []requestOption{withKey("another-key-that-is-longer-than-the-first-one")}, http.StatusOK},
		{"bearer", []requestOption{withHeader("Authorization", "Bearer "+testAdminKey)}, http.StatusOK},
		{"bearer, lower case", []requestOption{withHeader("Authorization", "bearer "+testAdminKey)}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(http.MethodGet, "/admin/stats", "", tc.opts...)
			require.Equal(t, tc.status, res.status, "body: %s", res.body)
			if tc.status == http.StatusUnauthorized {
				require.NotEmpty(t, res.json(t)["error"])
				require.NotEmpty(t, res.header.Get("WWW-Authenticate"))
			}
		})
	}

	// Without a key, unknown admin paths are 401 too: routes do not leak.
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin/nope", "").status)
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin", "").status)
	res := e.admin(http.MethodGet, "/admin/nope", "")
	require.Equal(t, http.StatusNotFound, res.status)
	require.NotEmpty(t, res.json(t)["error"])
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin", "").status)

	require.NotContains(t, e.logs.String(), testAdminKey, "the key must never be logged")
}

func TestAdminAuthNoKeysConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{noAdminKeys: true})
	for _, opt := range []requestOption{
		withKey(testAdminKey),
		withKey(""),
		withHeader("Authorization", "Bearer "),
		withHeader("Authorization", "Bearer "+testAdminKey),
	} {
		res := e.do(http.MethodGet, "/admin/stats", "", opt)
		require.Equal(t, http.StatusUnauthorized, res.status)
		require.True(t, strings.Contains(res.json(t)["error"].(string), "disabled"), "body: %s", res.body)
	}
	// The rest of the server works.
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/health", "").status)
}
