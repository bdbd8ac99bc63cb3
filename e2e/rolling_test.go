package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestRollingDeployServeProcesses: a `serve` of the old release (its
// --migrations directory ends at version 2) and one of the new release
// (versions 1-3, the same first two files) run side by side on one control
// plane, as in every rolling deploy, started in both orders. The old
// process never completes a job of the new release (it puts it back, using
// no attempt) and never records a state above its own latest; once it is
// stopped, the new one finishes: every tenant COMPLETED at 3 in the control
// plane and holding exactly versions 1-3, each applied once, with no rescan.
func TestRollingDeployServeProcesses(t *testing.T) {
	t.Parallel()
	ups := []string{
		"CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);",
		"ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
		// Slow enough that both processes are up while jobs of version 3
		// are still queued, whichever started first.
		"SELECT pg_sleep(0.5); CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));",
	}
	for _, order := range []string{"OldFirst", "NewFirst"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			cpURL := pgtest.NewDatabase(t)
			tenants := registerTenants(t, cpURL, "roll", 1, 8)
			cp := newPool(t, cpURL)
			oldDir, newDir := writeMigrations(t, ups[:2]...), writeMigrations(t, ups...)

			// The fleet as the old release left it: every tenant at 2.
			// The old release with more workers than the new one, so that it
			// fetches a good share of the new release's jobs.
			oldEnv := serveEnv(cpURL, oldDir, "full_fleet", "WORKERS=4")
			require.Zero(t, startCommand(t, "migrate-old", oldEnv, "migrate", "--all", "--progress", "none").wait(t, 120*time.Second))
			waitAllLatest(t, cp, tenants, 2, 30*time.Second)
			logStatuses(t, cp)

			newEnv := serveEnv(cpURL, newDir, "full_fleet", "WORKERS=1")
			var oldSrv, newSrv *server
			if order == "OldFirst" {
				oldSrv = startServer(t, "serve-old", oldEnv)
				oldSrv.waitListening(t)
				newSrv = startServer(t, "serve-new", newEnv)
				newSrv.waitListening(t)
			} else {
				newSrv = startServer(t, "serve-new", newEnv)
				oldSrv = startServer(t, "serve-old", oldEnv)
				newSrv.waitListening(t)
				oldSrv.waitListening(t)
			}

			// While both run, the old process may fetch the new release's
			// jobs: it must put them back. Wait until it did so at least
			// once, with a tenant's job or with the new release's fleet scan,
			// or the new process got every job first. The old process may
			// win the new release's scan every time while it runs (it was
			// started first and is River's leader: in CI it put the scan
			// back four times in 90 s), so that no tenant's job exists
			// before it goes: the documented limit of a rolling deploy
			// (RELIABILITY.md row 5), which the end of the test covers.
			waitFor(t, 90*time.Second, "a job of the new release put back by the old one, or all done", func() bool {
				return putBack(t, cp, "migrate_tenant") > 0 || putBack(t, cp, "fleet_scan") > 0 ||
					fleettest.CountCompleted(t, cp, fleettest.IDs(tenants), 3) == len(tenants) ||
					len(completedBy(t, cp, oldSrv)) > 0 // the bug, reported below
			})
			bothRunning := fleettest.CountCompleted(t, cp, fleettest.IDs(tenants), 3)
			requireOldCompletedNothingNew(t, cp, oldSrv)
			requireControlPlaneTruthful(t, cp, tenants)

			// The rolling deploy ends: the old process goes (SIGTERM), the new
			// one finishes what was left to it.
			require.Zero(t, oldSrv.stop(t, 30*time.Second), "exit code of the old release's serve")
			waitAllLatest(t, cp, tenants, 3, 120*time.Second)
			waitNoneRemaining(t, newSrv, 3)

			fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
			requireControlPlaneTruthful(t, cp, tenants)
			requireOldCompletedNothingNew(t, cp, oldSrv)
			for _, tn := range tenants {
				job := fleettest.LastJob(t, cp, tn.ID)
				require.Equal(t, "completed", job.State, "tenant %s", tn.ID)
				require.LessOrEqual(t, job.Attempt, 1, "tenant %s: a put-back used an attempt", tn.ID)
			}
			written := statusesWritten(t, cp)
			require.Zero(t, written["FAILED_STALE"], "FAILED_STALE written")
			t.Logf("%s: %d of %d tenants at 3 while both ran; %d tenants' jobs put back; statuses written %v",
				order, bothRunning, len(tenants), putBack(t, cp, "migrate_tenant"), written)
		})
	}
}

// putBack counts the jobs of kind that were snoozed: put back by an
// instance whose source ends below their version (the old release's), or
// waiting for their server (which one worker never fills here).
func putBack(t *testing.T, cp *pgxpool.Pool, kind string) int {
	t.Helper()
	var n int
	require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.river_job
		WHERE kind = $1 AND coalesce((metadata->>'snoozes')::int, 0) > 0`, kind).Scan(&n))
	return n
}

// completedBy lists "tenant (target)" of the completed migrate_tenant jobs
// whose last attempt was s's.
func completedBy(t *testing.T, cp *pgxpool.Pool, s *server) []string {
	t.Helper()
	rows, err := cp.Query(t.Context(), `SELECT args->>'tenant_id', coalesce((args->>'target')::bigint, 0), attempted_by[cardinality(attempted_by)]
		FROM tenantmigrate.river_job WHERE kind = 'migrate_tenant' AND state = 'completed'`)
	require.NoError(t, err)
	var (
		tenant, by string
		target     int64
		out        []string
	)
	_, err = pgx.ForEachRow(rows, []any{&tenant, &target, &by}, func() error {
		if s.ownsRiverID(by) {
			out = append(out, fmt.Sprintf("%s (%d)", tenant, target))
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireOldCompletedNothingNew checks that the old release's process
// completed no migrate_tenant job: every job of the test is the new
// release's (the fleet is at the old one's latest when it starts), and
// completing one would be recording work it did not do.
func requireOldCompletedNothingNew(t *testing.T, cp *pgxpool.Pool, old *server) {
	t.Helper()
	require.Empty(t, completedBy(t, cp, old), "jobs (tenant and target) completed by the old release, which lacks their version")
}
