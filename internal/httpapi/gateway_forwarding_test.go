package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// echoUpstream answers with the headers it received.
func echoUpstream(t *testing.T) *url.URL {
	t.Helper()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"header": r.Header, "host": r.Host})
	}))
	t.Cleanup(upstream.Close)
	u, err := url.Parse(upstream.URL)
	require.NoError(t, err)
	return u
}

type echoed struct {
	Header http.Header `json:"header"`
	Host   string      `json:"host"`
}

// The tenant is chosen from X-Forwarded-Host; the upstream must be told the
// same host, not the connection's Host of another tenant.
func TestGatewayForwardedHostMatchesTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{upstream: echoUpstream(t)})
	e.createTenant("acme")

	res := e.do(http.MethodGet, "/x", "", withHost(tenantHost("beta")),
		withHeader("X-Forwarded-Host", tenantHost("acme")))
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	var got echoed
	require.NoError(t, json.Unmarshal(res.body, &got))
	require.Equal(t, []string{"acme"}, got.Header.Values("X-Tenant-Id"))
	require.Equal(t, tenantHost("acme"), got.Header.Get("X-Forwarded-Host"),
		"the upstream sees the host of the tenant the gate checked")
}

// Spellings of X-Tenant-Id that CGI-style servers (WSGI, Rack, PHP) fold
// into the same HTTP_X_TENANT_ID variable are dropped too.
func TestGatewayTenantHeaderUnderscore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{upstream: echoUpstream(t)})
	e.createTenant("acme")

	// A raw request: the Go client would canonicalise nothing here either,
	// but be explicit about the wire bytes.
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: %s\r\nX_Tenant_Id: evil\r\nx_tenant-id: evil2\r\nConnection: close\r\n\r\n", tenantHost("acme"))
	require.NoError(t, err)
	hres, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, err := io.ReadAll(hres.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, hres.StatusCode, "body: %s", body)
	var got echoed
	require.NoError(t, json.Unmarshal(body, &got))
	for k, v := range got.Header {
		norm := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if norm == "x-tenant-id" {
			require.Equal(t, "X-Tenant-Id", k, "header %q: %q reaches the upstream", k, v)
			require.Equal(t, []string{"acme"}, v)
		}
	}
}

// The gate's 500 goes to anonymous tenant traffic; it must not quote the
// database's error.
func TestGatewayFailedMigrationBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{migrations: badMigrations})
	e.createTenant("acme")
	res := e.do(http.MethodGet, "/tenant", "", withHost(tenantHost("acme")))
	require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)
	t.Logf("body: %s", res.body)
	require.NotContains(t, string(res.body), "no_such_table")
	require.NotContains(t, string(res.body), "SQLSTATE")
}

// Absolute-form request targets name the tenant by their host, and the
// upstream is told that same host.
func TestGatewayAbsoluteForm(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{upstream: echoUpstream(t)})
	e.createTenant("acme")
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET http://%s/x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tenantHost("acme"), tenantHost("beta"))
	require.NoError(t, err)
	hres, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(hres.Body)
	t.Logf("%d %s", hres.StatusCode, body)
	require.Equal(t, http.StatusOK, hres.StatusCode)
	var got echoed
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, []string{"acme"}, got.Header.Values("X-Tenant-Id"))
	require.Equal(t, tenantHost("acme"), got.Header.Get("X-Forwarded-Host"))
}
