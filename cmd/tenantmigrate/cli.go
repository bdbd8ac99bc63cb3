package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
)

// This file holds what the one-shot commands (tenants, migrate, status, demo)
// share: their logger, opening the Orchestrator, and formatting tenants.

// cliLogger returns the logger of a one-shot command: JSON on w. Its level is
// --log-level (LOG_LEVEL) when given; otherwise only errors are logged,
// because these commands report what they did on stdout themselves and
// per-tenant info lines would drown a progress display.
func cliLogger(cmd *cobra.Command, g *globalOpts, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageErr("invalid --log-level %q: want debug, info, warn or error", g.logLevel)
	}
	if f := cmd.Flags().Lookup("log-level"); f == nil || !f.Changed {
		level = slog.LevelError
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// openOrchestrator builds the Config from the global flags, lets configure
// adjust it, and opens an Orchestrator (without starting it). Configuration
// errors, migrations missing when needMigrations, are usage errors (exit
// 2); failing to connect is exit 1.
func openOrchestrator(ctx context.Context, g *globalOpts, logger *slog.Logger, needMigrations bool, configure func(*tenantmigrate.Config)) (*tenantmigrate.Orchestrator, error) {
	cfg, err := g.config(logger)
	if err != nil {
		return nil, err
	}
	if needMigrations {
		if err := g.requireMigrations(); err != nil {
			return nil, err
		}
	}
	if configure != nil {
		configure(&cfg)
	}
	orch, err := tenantmigrate.New(ctx, cfg)
	if err != nil {
		return nil, g.newErr(err)
	}
	return orch, nil
}

// errNoKey is the message of a command that needs the encryption key
// without one.
var errNoKey = errors.New("no encryption key: set --encryption-key or ENCRYPTION_KEY (the secret that encrypts tenant database URLs in the control plane, at least 16 characters)")

// listPageSize is the page size for walking the control plane.
const listPageSize = 500

// eachTenant calls fn for every tenant, page by page, in cursor order.
func eachTenant(ctx context.Context, orch *tenantmigrate.Orchestrator, selector string, fn func(tenantmigrate.Tenant) error) error {
	var cursor int64
	for {
		tenants, next, err := orch.ListTenantsMatching(ctx, selector, cursor, listPageSize)
		if err != nil {
			return err
		}
		for _, t := range tenants {
			if err := fn(t); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// versionText is a version for humans: "-" for never migrated.
func versionText(v *int64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatInt(*v, 10)
}

// statusText is a status for humans: "-" for never migrated.
func statusText(s tenantmigrate.Status) string {
	if s == "" {
		return "-"
	}
	return string(s)
}

// timeText is a timestamp for humans, in UTC to the second.
func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// oneLine shortens an error message to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// durationText rounds d for humans.
func durationText(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// pluralize returns "1 tenant" or "n tenants".
func pluralize(n int64, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// inspectOnly configures commands that apply no migration (status, tenants,
// verify, migrate --dry-run): they record nothing about the migrations
// (ReadOnly: no checksums, so a run without the fleet's migrations cannot
// poison the drift table), and they keep working when the migration source
// has drifted from what was applied, which migrate and serve refuse and
// verify reports.
func inspectOnly(cfg *tenantmigrate.Config) {
	cfg.ReadOnly = true
	cfg.AllowChangedMigrations = true
}
