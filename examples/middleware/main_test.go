package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestExampleMigratesOnFirstRequest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cpURL := pgtest.NewDatabase(t)
	tenantURL := pgtest.NewDatabase(t)
	cfg := tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: "example-test-key-0123456789"}

	// Register the tenant with a second Orchestrator, as an operator would.
	admin, err := tenantmigrate.New(ctx, cfg)
	require.NoError(t, err)
	_, err = admin.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	admin.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	require.NoError(t, err)
	req.Host = "acme.local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), "hello, tenant acme")

	// The tenant database now holds the example schema.
	conn, err := pgx.Connect(ctx, tenantURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&n))
	require.Positive(t, n)

	// A host that names no tenant is refused.
	req.Host = "example.com"
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
