package main

import (
	"time"

	"github.com/tenantmigrate/tenantmigrate"
)

// setInlineServerWait sets Limits.InlineServerWait. It is a file of its own
// so that the cold-start bench can be built against a commit that predates
// the field (replace the body with nothing) for a before/after comparison.
func setInlineServerWait(cfg *tenantmigrate.Config, d time.Duration) {
	cfg.Limits.InlineServerWait = d
}
