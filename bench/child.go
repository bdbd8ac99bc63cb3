package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/tenantmigrate/tenantmigrate"
)

// childCommand is the hidden first argument that makes the bench binary run
// one measured step in a process of its own, so that its peak RSS is its
// own: go run ./bench __child scan CONTROL_URL.
const childCommand = "__child"

// profileEnv, when set in a child's environment, is a directory for the
// child's CPU profile (-profile).
const profileEnv = "TENANTMIGRATE_BENCH_PROFILE_DIR"

// childResult is what a child prints on stdout, as JSON.
type childResult struct {
	NewMS     float64 `json:"new_ms"`
	ScanMS    float64 `json:"scan_ms"`
	Scheduled int     `json:"scheduled"`
	MaxRSSMB  float64 `json:"max_rss_mb"`
}

// childMain runs a child step: "scan CONTROL_URL" opens an Orchestrator
// (full_fleet, no workers) on the control plane and runs one fleet scan, as
// the fleet_scan job of a starting server does.
func childMain(args []string) int {
	if len(args) != 2 || args[0] != "scan" {
		fmt.Fprintln(os.Stderr, "usage: bench __child scan CONTROL_URL")
		return 2
	}
	ctx := context.Background()
	var res childResult
	start := time.Now()
	orch, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   args[1],
		EncryptionKey: encryptionKey,
		Migrations:    migrationsFS(),
		Strategy:      tenantmigrate.StrategyFullFleet,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer orch.Close()
	res.NewMS = ms(time.Since(start))
	if dir := os.Getenv(profileEnv); dir != "" {
		f, err := os.Create(filepath.Join(dir, "scan.cpu.pprof"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	scanStart := time.Now()
	if res.Scheduled, err = orch.ScheduleFleet(ctx, false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res.ScanMS = ms(time.Since(scanStart))
	res.MaxRSSMB = mb(selfMaxRSS())
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}
