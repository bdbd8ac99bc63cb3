package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const sessionCookieName = "tenantmigrate_admin_session"

// noRedirects is a client that returns redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// postLogin posts the login form with key to the server at base.
func postLogin(t *testing.T, base, key string, opts ...requestOption) (response, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/admin/login", strings.NewReader(url.Values{"key": {key}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	for _, o := range opts {
		o(req)
	}
	res, err := noRedirects.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: body}, res
}

// login logs in with key and returns the session cookie.
func login(t *testing.T, base, key string) *http.Cookie {
	t.Helper()
	res, raw := postLogin(t, base, key)
	require.Equal(t, http.StatusSeeOther, res.status, "body: %s", res.body)
	for _, c := range raw.Cookies() {
		if c.Name == sessionCookieName {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", res.header.Values("Set-Cookie"))
	return nil
}

func withCookie(c *http.Cookie) requestOption {
	return func(r *http.Request) { r.AddCookie(c) }
}

// asBrowser sets the Accept header of a browser navigation.
func asBrowser() requestOption {
	return withHeader("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
}

// doNoRedirect is doRequest without following redirects.
func doNoRedirect(t *testing.T, base, method, path string, opts ...requestOption) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
	require.NoError(t, err)
	for _, o := range opts {
		o(req)
	}
	res, err := noRedirects.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: body}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})

	// The form.
	res := e.do(http.MethodGet, "/admin/login", "", asBrowser())
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, "text/html; charset=utf-8", res.header.Get("Content-Type"))
	require.Contains(t, string(res.body), `<form method="post" action="/admin/login">`)
	require.Contains(t, string(res.body), `type="password" id="key" name="key"`)
	require.Equal(t, http.StatusMethodNotAllowed, e.do(http.MethodPut, "/admin/login", "").status)

	// A good key: 303 to the fleet page with the cookie.
	res, raw := postLogin(t, e.srv.URL, testAdminKey)
	require.Equal(t, http.StatusSeeOther, res.status, "body: %s", res.body)
	require.Equal(t, "/admin/", res.header.Get("Location"))
	setCookie := res.header.Get("Set-Cookie")
	require.Regexp(t, `^`+sessionCookieName+`=[A-Za-z0-9_-]{76}; Path=/admin; Max-Age=43200; HttpOnly; SameSite=Strict$`, setCookie)
	require.NotContains(t, setCookie, testAdminKey)
	cookie := raw.Cookies()[0]
	require.NotEqual(t, testAdminKey, cookie.Value)
	require.False(t, cookie.Secure, "plain HTTP")

	// Behind a TLS proxy, the cookie is Secure.
	res, _ = postLogin(t, e.srv.URL, testAdminKey, withHeader("X-Forwarded-Proto", "https"))
	require.Equal(t, http.StatusSeeOther, res.status)
	require.Contains(t, res.header.Get("Set-Cookie"), "; Secure")

	// Over TLS too.
	tlsSrv := httptest.NewTLSServer(e.srv.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, tlsSrv.URL+"/admin/login", strings.NewReader("key="+url.QueryEscape(testAdminKey)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := tlsSrv.Client()
	client.CheckRedirect = noRedirects.CheckRedirect
	tlsRes, err := client.Do(req)
	require.NoError(t, err)
	tlsRes.Body.Close()
	require.Equal(t, http.StatusSeeOther, tlsRes.StatusCode)
	require.True(t, tlsRes.Cookies()[0].Secure)

	// Wrong keys: 401, the form again with an error, no cookie.
	for _, key := range []string{"", "wrong", testAdminKey[:10], testAdminKey + "x"} {
		res, _ := postLogin(t, e.srv.URL, key)
		require.Equal(t, http.StatusUnauthorized, res.status, "key %q", key)
		require.Empty(t, res.header.Values("Set-Cookie"))
		require.Contains(t, byID(t, string(res.body), "login-error"), "Invalid key.")
		require.Contains(t, string(res.body), `<form method="post" action="/admin/login">`)
	}
	// The key is read from the body only, never from the URL.
	// (The "#" turns the "/admin/login" that postLogin appends into a
	// fragment, which is not sent.)
	res, _ = postLogin(t, e.srv.URL+"/admin/login?key="+url.QueryEscape(testAdminKey)+"#", "")
	require.Equal(t, http.StatusUnauthorized, res.status)

	// A login form posted from another site is refused.
	res, _ = postLogin(t, e.srv.URL, testAdminKey, withHeader("Sec-Fetch-Site", "cross-site"))
	require.Equal(t, http.StatusForbidden, res.status)
	require.Empty(t, res.header.Values("Set-Cookie"))

	require.NotContains(t, e.logs.String(), testAdminKey, "the key must never be logged")
}

func TestLoginNoKeysConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{noAdminKeys: true})
	res := e.do(http.MethodGet, "/admin/login", "", asBrowser())
	require.Equal(t, http.StatusOK, res.status)
	require.Contains(t, byID(t, string(res.body), "login-error"), "disabled")
	res, _ = postLogin(t, e.srv.URL, testAdminKey)
	require.Equal(t, http.StatusUnauthorized, res.status)
	require.Empty(t, res.header.Values("Set-Cookie"))
}

func TestUnauthenticatedBrowserAndAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})

	// A browser asking for a page is sent to the login form.
	for _, path := range []string{"/admin/", "/admin/stats", "/admin/riverui/"} {
		res := doNoRedirect(t, e.srv.URL, http.MethodGet, path, asBrowser())
		require.Equal(t, http.StatusSeeOther, res.status, path)
		require.Equal(t, "/admin/login", res.header.Get("Location"), path)
	}
	// API clients get 401 JSON.
	for _, accept := range []string{"", "*/*", "application/json"} {
		res := doNoRedirect(t, e.srv.URL, http.MethodGet, "/admin/", withHeader("Accept", accept))
		require.Equal(t, http.StatusUnauthorized, res.status, accept)
		require.Equal(t, "application/json", res.header.Get("Content-Type"))
		require.NotEmpty(t, res.json(t)["error"])
		require.NotEmpty(t, res.header.Get("WWW-Authenticate"))
	}
	// A POST is never redirected, even from a browser; a wrong key is not
	// either.
	res := doNoRedirect(t, e.srv.URL, http.MethodPost, "/admin/migrations/fleet", asBrowser())
	require.Equal(t, http.StatusUnauthorized, res.status)
	res = doNoRedirect(t, e.srv.URL, http.MethodGet, "/admin/", asBrowser(), withKey("wrong"))
	require.Equal(t, http.StatusUnauthorized, res.status)
}

func TestSessionCookie(t *testing.T) {
	t.Parallel()
	e := newPageEnv(t)
	knownFleet(t, e.env)
	cookie := login(t, e.srv.URL, testAdminKey)

	// Pages and reads.
	res := doNoRedirect(t, e.srv.URL, http.MethodGet, "/admin/", asBrowser(), withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "8", byID(t, string(res.body), "tenants-total"))
	res = e.do(http.MethodGet, "/admin/stats", "", withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status)
	require.Equal(t, 8.0, res.json(t)["total"])
	res = e.do(http.MethodGet, "/admin/tenants/f1", "", withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status)

	// The JSON admin API's state-changing methods need the key.
	for _, req := range []struct{ method, path, body string }{
		{http.MethodPost, "/admin/migrations/fleet", `{}`},
		{http.MethodPost, "/admin/tenants/evil", jsonBody(map[string]string{"databaseUrl": "postgres://h/db"})},
		{http.MethodPut, "/admin/tenants/a1", jsonBody(map[string]string{"databaseUrl": "postgres://h/db"})},
		{http.MethodPatch, "/admin/tenants/a1", `{"schema": "x"}`},
		{http.MethodDelete, "/admin/tenants/a1", ""},
		{http.MethodPost, "/admin/tenants/n1/migrations?async=true", ""},
	} {
		res := e.do(req.method, req.path, req.body, withCookie(cookie), withHeader("Sec-Fetch-Site", "same-origin"))
		require.Equal(t, http.StatusUnauthorized, res.status, "%s %s: %s", req.method, req.path, res.body)
		require.Contains(t, res.json(t)["error"], "send the API key")
	}
	require.Equal(t, http.StatusOK, e.admin(http.MethodGet, "/admin/tenants/a1", "").status, "a1 still there")
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin/tenants/evil", "").status)

	// River UI: its page, its assets and its API work with the cookie...
	res = e.do(http.MethodGet, "/admin/riverui/", "", asBrowser(), withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status)
	asset := regexp.MustCompile(`(/admin/riverui/assets/[^"]+\.js)"`).FindStringSubmatch(string(res.body))
	require.NotNil(t, asset, "River UI's index names no script under the prefix: %s", res.body)
	res = e.do(http.MethodGet, asset[1], "", withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status, asset[1])
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, asset[1], "").status, "assets need the session too")

	res = e.do(http.MethodGet, "/admin/riverui/api/jobs?state=available", "", withCookie(cookie))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	var jobs struct {
		Data []struct {
			ID    json.Number `json:"id"`
			Kind  string      `json:"kind"`
			State string      `json:"state"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(res.body, &jobs))
	require.Len(t, jobs.Data, 2, "the jobs of n1 and n2")
	require.Equal(t, "migrate_tenant", jobs.Data[0].Kind)

	// ... including its POSTs, same-origin only.
	cancel := `{"ids": ["` + jobs.Data[0].ID.String() + `"]}`
	res = e.do(http.MethodPost, "/admin/riverui/api/jobs/cancel", cancel, withCookie(cookie),
		withHeader("Content-Type", "application/json"), withHeader("Sec-Fetch-Site", "cross-site"))
	require.Equal(t, http.StatusForbidden, res.status, "body: %s", res.body)
	res = e.do(http.MethodPost, "/admin/riverui/api/jobs/cancel", cancel, withCookie(cookie),
		withHeader("Content-Type", "application/json"), withHeader("Sec-Fetch-Site", "same-origin"))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	res = e.admin(http.MethodGet, "/admin/migrations", "")
	require.Equal(t, 1.0, res.json(t)["remaining"], "one job cancelled")

	// A tampered cookie, or the key itself as the cookie, is refused.
	tampered := *cookie
	b := []byte(tampered.Value)
	if b[20] == 'A' {
		b[20] = 'B'
	} else {
		b[20] = 'A'
	}
	tampered.Value = string(b)
	for _, bad := range []*http.Cookie{
		&tampered,
		{Name: sessionCookieName, Value: testAdminKey},
		{Name: sessionCookieName, Value: ""},
	} {
		res := e.do(http.MethodGet, "/admin/stats", "", withCookie(bad))
		require.Equal(t, http.StatusUnauthorized, res.status, bad.Value)
		res = doNoRedirect(t, e.srv.URL, http.MethodGet, "/admin/", asBrowser(), withCookie(bad))
		require.Equal(t, http.StatusSeeOther, res.status, bad.Value)
		require.Equal(t, "/admin/login", res.header.Get("Location"))
	}

	// A presented key counts, not the cookie: a wrong key is 401.
	require.Equal(t, http.StatusUnauthorized, e.do(http.MethodGet, "/admin/stats", "", withCookie(cookie), withKey("wrong")).status)

	// When its key leaves the configuration, the session ends; a session of
	// a key still configured goes on.
	other := login(t, e.srv.URL, testAdminKeys[0])
	rotated := httptest.NewServer(newTestHandler(t, e.env, testAdminKeys[:1], nil))
	t.Cleanup(rotated.Close)
	res = doRequest(t, rotated.URL, http.MethodGet, "/admin/stats", "", withCookie(cookie))
	require.Equal(t, http.StatusUnauthorized, res.status)
	require.Contains(t, res.json(t)["error"], "invalid session")
	res = doRequest(t, rotated.URL, http.MethodGet, "/admin/stats", "", withCookie(other))
	require.Equal(t, http.StatusOK, res.status)

	// Logout clears the cookie.
	res = doNoRedirect(t, e.srv.URL, http.MethodPost, "/admin/logout", withCookie(cookie))
	require.Equal(t, http.StatusSeeOther, res.status)
	require.Equal(t, "/admin/login", res.header.Get("Location"))
	require.Regexp(t, `^`+sessionCookieName+`=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict$`, res.header.Get("Set-Cookie"))
	require.Equal(t, http.StatusForbidden, doNoRedirect(t, e.srv.URL, http.MethodPost, "/admin/logout", withHeader("Sec-Fetch-Site", "cross-site")).status)

	require.NotContains(t, e.logs.String(), testAdminKey, "the key must never be logged")
	require.NotContains(t, e.logs.String(), cookie.Value, "the session must never be logged")
}
