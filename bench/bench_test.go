package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestMain lets the test binary serve as the bench's child process (see
// childMain), as the bench binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs the whole suite with tiny sizes, in process, on the
// test server: it checks that the bench works, not how fast anything is.
func TestBenchSmoke(t *testing.T) {
	t.Parallel()
	var random [4]byte
	_, _ = rand.Read(random[:])
	prefix := "smoke_" + hex.EncodeToString(random[:])

	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := run(t.Context(), []string{
		"-database-url", pgtest.ServerURL(t),
		"-prefix", prefix,
		"-in-process",
		"-tenants", "3",
		"-raw-concurrency", "3",
		"-scale", "300",
		"-queue-samples", "3",
		"-profile-tenants", "1",
		"-settle", "0",
		"-warmup=false",
	}, &stdout, &stderr)
	t.Logf("bench log:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	t.Logf("report (%s):\n%s", time.Since(start).Round(time.Millisecond), stdout.String())
	for _, want := range []string{
		"## Fleet: 3 tenant databases, 45 migrations",
		"| raw psql | 3 |",
		"| migrate --all --transaction-mode file (in-process stand-in) |",
		"| migrate --all --transaction-mode tenant (in-process stand-in) |",
		"| serve full_fleet (in-process stand-in) |",
		"| naive goose loop | 1 |",
		"- b/a = ", "- c/a = ", "- d/b = ", "- e/a = ", "- e/b = ",
		"## Control plane: 300 tenants",
		"| full_fleet scan+enqueue (library, own process) |",
		"| no-op deploy (library, own process) |",
		"| GET /admin/migrations |",
		"## Queue: enqueue → worker start",
		"| tenantmigrate (Orchestrator.MigrateTenant) |",
		"## Locks: one tenant from version 25 to 45",
		"| 1 | tenant |",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestSchemasSmoke runs the schemas benchmark on 3 schemas with the
// tenantmigrate binary (built by the bench): it checks that the bench works,
// not how fast anything is.
func TestSchemasSmoke(t *testing.T) {
	t.Parallel()
	var random [4]byte
	_, _ = rand.Read(random[:])
	prefix := "smoke_" + hex.EncodeToString(random[:])

	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{
		"-database-url", pgtest.ServerURL(t),
		"-prefix", prefix,
		"-run", "schemas",
		"-schemas", "3",
		"-schemas-raw-concurrency", "2",
		"-schemas-concurrency", "2",
		"-settle", "0",
		"-warmup=false",
	}, &stdout, &stderr)
	t.Logf("bench log:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	t.Logf("report:\n%s", stdout.String())
	for _, want := range []string{
		"## Schemas: 3 tenant schemas in one database, 10 migrations",
		"| 1 | raw psql | 2 |",
		"| 1 | tenantmigrate migrate --all | 2 |",
		"- schemas b/a = ",
		"| no-op deploy: migrate --all | 2 |",
		"| 0 | nothing to do: all 3 tenants at version 10 |",
		"| verify | 4 |",
		"| 3 | verified 3 tenants",
		"| empty database | 0 |",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
