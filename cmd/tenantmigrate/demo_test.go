package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var demoDirRe = regexp.MustCompile(`throwaway PostgreSQL in (\S+)`)

func TestDemo(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "demo", "--tenants", "3", "--progress", "plain")
	requireCode(t, 0, r)
	m := demoDirRe.FindStringSubmatch(r.stdout)
	require.NotNil(t, m, r.stdout)
	require.Contains(t, r.stdout, "migrating 3 tenants to version 4")
	require.Contains(t, r.stdout, "3 completed, 0 failed")
	require.Regexp(t, `(?m)^tenants:\s+3 \(3 at the latest version, 0 behind\)$`, r.stdout)
	require.Contains(t, r.stdout, "removed the throwaway PostgreSQL")
	require.NoDirExists(t, m[1])
}

func TestDemoUsage(t *testing.T) {
	t.Parallel()
	requireCode(t, 2, runCLI(t, "demo", "--tenants", "0"))
	requireCode(t, 2, runCLI(t, "demo", "--tenants", "1001"))
	requireCode(t, 2, runCLI(t, "demo", "--concurrency", "0"))
}

// TestDemoKeep runs the demo with --keep, uses the server it prints, and
// stops it as Ctrl-C would.
func TestDemoKeep(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--tenants", "2", "--keep", "--listen", "127.0.0.1:0", "--progress", "none"}, &stdout, &stderr)
	}()

	// Wait for the curl examples.
	serving := regexp.MustCompile(`serving on (http://\S+);`)
	var base string
	require.Eventually(t, func() bool {
		select {
		case code := <-done:
			t.Fatalf("demo exited with %d\n%s\n%s", code, stdout.String(), stderr.String())
		default:
		}
		m := serving.FindStringSubmatch(stdout.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, 60*time.Second, 20*time.Millisecond)
	out := stdout.String()
	adminKey := regexp.MustCompile(`apikey: ([0-9a-f]+)`).FindStringSubmatch(out)
	require.NotNil(t, adminKey, out)
	newURL := regexp.MustCompile(`"databaseUrl": "([^"]+)"`).FindStringSubmatch(out)
	require.NotNil(t, newURL, out)

	get := func(host, path string, header ...string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The server starts after the examples are printed.
	require.Eventually(t, func() bool {
		code, _ := get("", "/health")
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)

	code, body := get("tenant-001.local.dev", "/tenant")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"isLatest":true`)

	// The new-tenant example works: the first request migrates it.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/admin/tenants/tenant-new",
		strings.NewReader(`{"databaseUrl": "`+newURL[1]+`"}`))
	require.NoError(t, err)
	req.Header.Set("apikey", adminKey[1])
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	code, body = get("tenant-new.local.dev", "/tenant")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"migrationsVersion":4`)

	code, body = get("", "/admin/stats", "apikey", adminKey[1])
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"total":3`)

	// Ctrl-C: the demo stops serving, removes its cluster and exits 0.
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, "%s\n%s", stdout.String(), stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop")
	}
	m := demoDirRe.FindStringSubmatch(stdout.String())
	require.NotNil(t, m)
	require.NoDirExists(t, m[1])
}
