package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
)

// rekeyProgressEvery is how often rekey prints a progress line while it
// runs.
const rekeyProgressEvery = 5 * time.Second

func newRekeyCmd(g *globalOpts) *cobra.Command {
	var (
		dryRun   bool
		pageSize int
	)
	cmd := &cobra.Command{
		Use:   "rekey",
		Short: "Re-encrypt every tenant URL under the current encryption key",
		Long: `rekey re-encrypts under --encryption-key the database URL of every tenant
stored under another key: one of --previous-encryption-keys, or any key for
rows written before key ids were recorded. After a run that reports no
failure, with every server running with this --encryption-key, the previous
keys can be dropped.

It works page by page (--page-size), and is safe while servers run: each page
is written with one UPDATE that changes only the URL and its key id, and only
where the URL is still the one it read, so migration results recorded
meanwhile are kept and a URL changed meanwhile (PATCH) wins. It is resumable:
run it again after an interruption and it finds only the rest.

A tenant whose URL none of the configured keys decrypts is listed by id and
left as it is; the others are rekeyed, and rekey exits 1 at the end. Keys and
ciphertexts are never printed. --dry-run decrypts and counts, writing nothing.
It needs no --migrations.`,
		Example: `  # First restart every server with the new key and the old one as previous:
  export ENCRYPTION_KEY=$NEW_KEY PREVIOUS_ENCRYPTION_KEYS=$OLD_KEY
  tenantmigrate rekey --dry-run       # counts: to rekey, already current, failing
  tenantmigrate rekey                 # re-encrypt, 500 tenants per statement
  tenantmigrate rekey --page-size 100 # smaller statements on a busy control plane
  tenantmigrate rekey --dry-run       # "0 to rekey": PREVIOUS_ENCRYPTION_KEYS can go`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pageSize < 0 {
				return usageErr("--page-size must not be negative")
			}
			if g.databaseURL != "" && g.encryptionKey == "" {
				return usageErr("%v", errNoKey)
			}
			orch, err := openInspectOrchestrator(cmd, g, false, nil)
			if err != nil {
				return err
			}
			defer orch.Close()

			last := time.Now()
			res, err := orch.Rekey(cmd.Context(), tenantmigrate.RekeyOptions{
				DryRun:   dryRun,
				PageSize: pageSize,
				OnPage: func(r tenantmigrate.RekeyResult) {
					if time.Since(last) >= rekeyProgressEvery {
						last = time.Now()
						fmt.Fprintf(g.stderr, "rekey: %s so far\n", rekeyCounts(r, dryRun))
					}
				},
			})
			printRekey(g.stdout, res, dryRun)
			if err != nil {
				return failedErr(fmt.Errorf("%w (the counts above are what was done before; run rekey again to go on)", err))
			}
			return rekeyOutcome(g.stdout, res, dryRun)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "decrypt and count the tenants to rekey, writing nothing")
	bindEnv(cmd.Flags(), "dry-run", "REKEY_DRY_RUN")
	cmd.Flags().IntVar(&pageSize, "page-size", tenantmigrate.DefaultRekeyPageSize, "tenants read and re-encrypted per statement")
	bindEnv(cmd.Flags(), "page-size", "REKEY_PAGE_SIZE")
	return cmd
}

// rekeyCounts is the counts of a rekey for humans.
func rekeyCounts(r tenantmigrate.RekeyResult, dryRun bool) string {
	verb := "rekeyed"
	if dryRun {
		verb = "to rekey"
	}
	return fmt.Sprintf("%d %s, %d already under the current key, %d failed", r.Rekeyed, verb, r.AlreadyCurrent, len(r.Failed))
}

// printRekey prints the failures, one line each, then the counts.
func printRekey(w io.Writer, r tenantmigrate.RekeyResult, dryRun bool) {
	for _, f := range r.Failed {
		fmt.Fprintf(w, "failed: %v\n", f.Err)
	}
	if dryRun {
		fmt.Fprintf(w, "dry run: %s; nothing written\n", rekeyCounts(r, true))
		return
	}
	fmt.Fprintln(w, rekeyCounts(r, false))
}

// maxFailedIDs is how many failed tenant ids the final error names.
const maxFailedIDs = 20

// rekeyOutcome says what to do next, and is exit 1 when a tenant failed.
func rekeyOutcome(w io.Writer, r tenantmigrate.RekeyResult, dryRun bool) error {
	if len(r.Failed) == 0 {
		if !dryRun {
			fmt.Fprintln(w, "every tenant is under the current key: drop --previous-encryption-keys (PREVIOUS_ENCRYPTION_KEYS) once every server runs with this --encryption-key")
		}
		return nil
	}
	ids := make([]string, 0, min(len(r.Failed), maxFailedIDs))
	undecryptable := false
	for i, f := range r.Failed {
		if i < maxFailedIDs {
			ids = append(ids, f.TenantID)
		}
		undecryptable = undecryptable || errors.Is(f.Err, tenantmigrate.ErrDecrypt)
	}
	list := strings.Join(ids, ", ")
	if len(r.Failed) > maxFailedIDs {
		list += fmt.Sprintf(" and %d more", len(r.Failed)-maxFailedIDs)
	}
	msg := fmt.Sprintf("%s could not be rekeyed: %s", pluralize(int64(len(r.Failed)), "tenant"), list)
	if undecryptable {
		msg += "; for a URL no configured key decrypts, add the key it is under to --previous-encryption-keys (PREVIOUS_ENCRYPTION_KEYS), or register its URL again (PUT /admin/tenants/ID)"
	}
	return failedErr(errors.New(msg))
}
