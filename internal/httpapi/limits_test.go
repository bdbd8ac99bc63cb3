package httpapi_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// The tests of this file check the limits that protect the server from
// hostile clients (RELIABILITY.md, guarantee 8): slow headers and bodies
// cut off by the server's timeouts, oversized headers and bodies refused,
// and tenant ids and schema names that try SQL injection or path tricks
// rejected.

// serveReal serves h with httpapi.NewServer on a loopback port, after
// tune adjusts the server (nil: as NewServer returns it), and returns the
// address.
func serveReal(t *testing.T, h http.Handler, tune func(*http.Server)) string {
	t.Helper()
	srv := httpapi.NewServer("127.0.0.1:0", h)
	if tune != nil {
		tune(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// drip writes the chunks to conn one per interval, in the background, until
// a write fails or they run out, then closes done.
func drip(conn net.Conn, interval time.Duration, chunks func(i int) string) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval) // the client's pace, not a wait for a state
		defer tick.Stop()
		for i := 0; i < 1000; i++ {
			if _, err := io.WriteString(conn, chunks(i)); err != nil {
				return
			}
			<-tick.C
		}
	}()
	return done
}

// readUntilClosed reads conn until the server closes it (or deadline), and
// returns what it read and when the connection ended.
func readUntilClosed(t *testing.T, conn net.Conn, deadline time.Duration) (string, time.Time) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(deadline)))
	data, err := io.ReadAll(conn)
	ended := time.Now()
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the server kept the connection open for %s; read so far: %q", deadline, data)
	}
	return string(data), ended
}

// TestSlowHeadersCutOff: a client that sends its request headers a line at
// a time, forever, is disconnected once ReadHeaderTimeout has passed since
// the connection opened, however steadily it keeps sending. NewServer sets
// 10s; the test lowers it to 300ms to stay short.
func TestSlowHeadersCutOff(t *testing.T) {
	t.Parallel()
	require.Equal(t, 10*time.Second, httpapi.NewServer("", http.NotFoundHandler()).ReadHeaderTimeout)
	const timeout = 300 * time.Millisecond
	addr := serveReal(t, http.NotFoundHandler(), func(s *http.Server) { s.ReadHeaderTimeout = timeout })

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	sending := drip(conn, 50*time.Millisecond, func(i int) string {
		if i == 0 {
			return "GET /health HTTP/1.1\r\nHost: acme.local.dev\r\n"
		}
		return fmt.Sprintf("X-Slow-%d: x\r\n", i)
	})
	got, ended := readUntilClosed(t, conn, 10*time.Second)
	cut := ended.Sub(start)
	t.Logf("slow headers: connection closed after %s (ReadHeaderTimeout %s), answer %q", cut.Round(time.Millisecond), timeout, got)
	require.GreaterOrEqual(t, cut, timeout-50*time.Millisecond)
	require.Less(t, cut, timeout+2*time.Second)
	require.NotContains(t, got, "200 OK")
	_ = conn.Close()
	<-sending
}

// TestSlowBodyCutOff: a client that sends an admin request body a byte at
// a time gets its answer, and its connection closed, once ReadTimeout has
// passed, not when it finally finishes. NewServer sets 2m; the test lowers
// it to 500ms.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2*time.Minute, httpapi.NewServer("", http.NotFoundHandler()).ReadTimeout)
	e := newEnv(t, options{})
	const timeout = 500 * time.Millisecond
	addr := serveReal(t, e.srv.Config.Handler, func(s *http.Server) { s.ReadTimeout = timeout })

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	body := `{"databaseUrl": "postgres://app@db.invalid/app"}` + strings.Repeat(" ", 950)
	start := time.Now()
	sending := drip(conn, 20*time.Millisecond, func(i int) string {
		if i == 0 {
			return fmt.Sprintf("POST /admin/tenants/slow HTTP/1.1\r\nHost: x\r\napikey: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", testAdminKey, len(body))
		}
		if i-1 < len(body) {
			return body[i-1 : i]
		}
		return ""
	})
	got, ended := readUntilClosed(t, conn, 10*time.Second)
	cut := ended.Sub(start)
	t.Logf("slow body: connection closed after %s (ReadTimeout %s, the whole body would take %s), answer %.60q",
		cut.Round(time.Millisecond), timeout, time.Duration(len(body))*20*time.Millisecond, got)
	require.Less(t, cut, timeout+2*time.Second)
	require.NotContains(t, got, "201 Created")
	_ = conn.Close()
	<-sending
	res := e.admin(http.MethodGet, "/admin/tenants/slow", "")
	require.Equal(t, http.StatusNotFound, res.status, "the slow request created the tenant")
}

// TestLargeHeaderRefused: request headers over MaxHeaderBytes (64 KiB; Go's
// server allows 4 KiB of slack on top) get 431, on the gateway and on the
// admin API alike; headers well under it pass.
func TestLargeHeaderRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	addr := serveReal(t, e.srv.Config.Handler, nil)
	send := func(path string, size int) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
		require.NoError(t, err)
		req.Host = "nobody.local.dev"
		req.Header.Set("X-Big", strings.Repeat("a", size))
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode
	}
	for _, path := range []string{"/tenant", "/admin/stats", "/health"} {
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, send(path, 80<<10), "80 KiB header on %s", path)
		require.NotEqual(t, http.StatusRequestHeaderFieldsTooLarge, send(path, 60<<10), "60 KiB header on %s", path)
	}
}

// TestChunkedBodyCapped: an admin request body sent chunked (no
// Content-Length to refuse up front) is cut at MaxBodyBytes with 413, and
// nothing is created.
func TestChunkedBodyCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	addr := serveReal(t, e.srv.Config.Handler, nil)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "POST /admin/tenants/big HTTP/1.1\r\nHost: x\r\napikey: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", testAdminKey)
	chunk := `{"databaseUrl": "postgres://app@db.invalid/app", "schema": "` + strings.Repeat("a", 64<<10)
	fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk)
	filler := strings.Repeat("a", 64<<10)
	for range 2 * httpapi.DefaultMaxBodyBytes / len(filler) {
		fmt.Fprintf(w, "%x\r\n%s\r\n", len(filler), filler)
	}
	// The server may stop reading and answer before the body ends.
	_ = w.Flush()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	require.Equal(t, http.StatusNotFound, e.admin(http.MethodGet, "/admin/tenants/big", "").status)
}

// TestHostileTenantIDsAndSchemas: tenant ids and schema names that try SQL
// injection, path traversal, encoding tricks or look-alike characters are
// refused by the admin API with a 4xx (the router may also clean a path
// and redirect), never reach the control plane, and leave it intact;
// hosts that try the same on the gateway get 400.
func TestHostileTenantIDsAndSchemas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	e.createTenant("victim")
	validURL := "postgres://app@db.invalid/app"

	hostileIDs := []string{
		"x';DROP TABLE tenantmigrate.tenants;--",
		`x"; DROP SCHEMA tenantmigrate CASCADE; --`,
		"victim' OR '1'='1",
		"..", "%2e%2e", "..%2Fstats", "a%2F..%2F..%2Fstats", "victim%00", "victim%0d%0aX-Injected:%201",
		"victim%20", "%20victim", "$(id)", "`id`", "<script>", "ＶＩＣＴＩＭ", "Victim", "victim.json",
		"-victim", "_victim", strings.Repeat("v", 64),
	}
	statuses := map[int]int{}
	for _, id := range hostileIDs {
		for _, m := range []struct{ method, path, body string }{
			{http.MethodPost, "/admin/tenants/" + id, `{"databaseUrl": "` + validURL + `"}`},
			{http.MethodPut, "/admin/tenants/" + id, `{"databaseUrl": "` + validURL + `"}`},
			{http.MethodPatch, "/admin/tenants/" + id, `{"schema": "s"}`},
			{http.MethodDelete, "/admin/tenants/" + id, ""},
			{http.MethodGet, "/admin/tenants/" + id, ""},
			{http.MethodPost, "/admin/tenants/" + id + "/migrations", ""},
		} {
			res := noRedirect(t, e, m.method, m.path, m.body)
			ok := res.status == http.StatusBadRequest || res.status == http.StatusNotFound ||
				res.status == http.StatusMovedPermanently || res.status == http.StatusTemporaryRedirect || res.status == http.StatusPermanentRedirect
			require.True(t, ok, "%s %s: %d %s", m.method, m.path, res.status, res.body)
			statuses[res.status]++
		}
	}
	t.Logf("%d hostile ids x 6 routes: answers by status %v", len(hostileIDs), statuses)

	hostileSchemas := []string{
		"public; DROP TABLE x", `s"; DROP TABLE x; --`, "s'--", "pg_catalog", "pg_temp", "information_schema",
		"tenantmigrate", "Tenant", "1abc", "a-b", "a b", "a.b", " ", strings.Repeat("s", 64), "ß",
	}
	for _, schema := range hostileSchemas {
		body := jsonBody(map[string]string{"databaseUrl": validURL, "schema": schema})
		res := e.admin(http.MethodPost, "/admin/tenants/hostile", body)
		require.Equal(t, http.StatusBadRequest, res.status, "schema %q: %s", schema, res.body)
		res = e.admin(http.MethodPatch, "/admin/tenants/victim", jsonBody(map[string]string{"schema": schema}))
		require.Equal(t, http.StatusBadRequest, res.status, "patch schema %q: %s", schema, res.body)
	}

	for _, host := range []string{
		"x';DROP TABLE tenants;--.local.dev", "../victim.local.dev", "victim%2e.local.dev",
		"VICTIM'.local.dev", "victim.local.dev.evil.example", strings.Repeat("v", 64) + ".local.dev",
	} {
		res := e.do(http.MethodGet, "/tenant", "", withHost(host))
		require.Equal(t, http.StatusBadRequest, res.status, "host %q: %s", host, res.body)
		res = e.do(http.MethodGet, "/tenant", "", withHost("proxy.internal"), withHeader("X-Forwarded-Host", host))
		require.Equal(t, http.StatusBadRequest, res.status, "X-Forwarded-Host %q: %s", host, res.body)
	}

	// The control plane is intact: only the victim, unchanged.
	res := e.admin(http.MethodGet, "/admin/tenants", "")
	require.Equal(t, http.StatusOK, res.status)
	tenants := res.json(t)["tenants"].([]any)
	require.Len(t, tenants, 1)
	victim := tenants[0].(map[string]any)
	require.Equal(t, "victim", victim["id"])
	require.Empty(t, victim["schema"])
}

// noRedirect sends an admin request without following redirects.
func noRedirect(t *testing.T, e *env, method, path, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	u, err := url.Parse(e.srv.URL)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL, rd)
	require.NoError(t, err)
	req.URL = &url.URL{Scheme: u.Scheme, Host: u.Host, Opaque: path} // sent as written, not re-escaped
	req.Header.Set("apikey", testAdminKey)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}
