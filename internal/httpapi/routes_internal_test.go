package httpapi

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestREADMEAdminTable: README.md's admin API table has a row for every
// endpoint the admin API and the control listener serve ("`METHOD /path"),
// so a new endpoint cannot land undocumented.
func TestREADMEAdminTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	for line := range strings.SplitSeq(string(readme), "\n") {
		if strings.HasPrefix(line, "| `") {
			table.WriteString(line + "\n")
		}
	}
	rt := newRouter()
	// Every optional service present, so that every route is registered;
	// nothing is called.
	(&admin{svc: struct {
		Service
		ServersService
		WaybackService
	}{}}).routes(rt)
	patterns := []string{"GET /health", "GET /metrics"}
	for _, path := range rt.paths {
		for _, method := range rt.methods[path] {
			if method != http.MethodHead {
				patterns = append(patterns, method+" "+path)
			}
		}
	}
	if len(patterns) < 20 {
		t.Fatalf("only %d routes registered: %v", len(patterns), patterns)
	}
	for _, p := range patterns {
		if !strings.Contains(table.String(), "| `"+p) {
			t.Errorf("README.md's admin API table has no row for %s", p)
		}
	}
}
