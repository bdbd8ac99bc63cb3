// Command middleware is a small net/http service that embeds tenantmigrate as
// a library: every request for a tenant passes the migration gate first, so
// the handler can rely on the tenant's schema being at the latest version.
//
//	DATABASE_URL=postgres://... ENCRYPTION_KEY=... go run ./examples/middleware
//	curl -H 'Host: acme.local.dev' http://127.0.0.1:8090/
package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tenantmigrate/tenantmigrate"
)

// migrations are the service's own goose migrations, embedded in the
// binary: the library has no default set.
//
//go:embed migrations/*.sql
var migrations embed.FS

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", envOr("LISTEN_ADDR", "127.0.0.1:8090"))
	if err != nil {
		logger.Error("listen", "err", err)
		os.Exit(1)
	}
	migrationsFS, err := fs.Sub(migrations, "migrations")
	if err != nil {
		logger.Error("migrations", "err", err)
		os.Exit(1)
	}
	cfg := tenantmigrate.Config{
		DatabaseURL:   os.Getenv("DATABASE_URL"),
		EncryptionKey: os.Getenv("ENCRYPTION_KEY"),
		Migrations:    migrationsFS,
		Logger:        logger,
	}
	if err := run(ctx, cfg, ln); err != nil {
		logger.Error("run", "err", err)
		os.Exit(1)
	}
}

// run serves the example app on ln until ctx ends.
func run(ctx context.Context, cfg tenantmigrate.Config, ln net.Listener) error {
	orch, err := tenantmigrate.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer orch.Close()
	if err := orch.Start(ctx); err != nil {
		return err
	}

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := tenantmigrate.TenantIDFromContext(r.Context())
		fmt.Fprintf(w, "hello, tenant %s: your schema is at version %d\n", id, orch.Latest())
	})
	srv := &http.Server{Handler: orch.Middleware(app), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
