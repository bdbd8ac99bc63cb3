package tenantmigrate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
)

// The tests of this file prove guarantees of RELIABILITY.md in process:
// bounded lock waits, migrations that give way to busy tenant tables,
// constant memory in progressive mode, and the tenant-host parser. It is an
// internal test so that the fuzz target can build an Orchestrator without a
// database; its helpers are its own (rel...) or internal/fleettest's, apart
// from those of the external tests.

const relKey = "reliability-test-key-0123456789"

// relOrchestrator builds an Orchestrator, closed when the test ends.
func relOrchestrator(t *testing.T, cfg Config) *Orchestrator {
	t.Helper()
	cfg.EncryptionKey = relKey
	o, err := New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(o.Close)
	return o
}

// relAddTenant registers a schema tenant.
func relAddTenant(t *testing.T, o *Orchestrator, id, url, schema string) {
	t.Helper()
	_, err := o.CreateTenant(t.Context(), Tenant{ID: id, DatabaseURL: url, Schema: schema})
	require.NoError(t, err)
}

// relWaitFor polls cond every 20ms until it holds, failing the test after
// timeout.
func relWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	fleettest.Poll(t, 20*time.Millisecond, timeout, what, cond)
}

// thisDatabase restricts a query of pg_locks, which lists the locks of the
// whole cluster (other tests' too), to the connection's database.
const thisDatabase = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"

// waitingLocks lists the locks sessions wait for on conn's database.
func waitingLocks(t *testing.T, conn *pgx.Conn, locktype string) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), `
		SELECT coalesce(relation::regclass::text, objid::text) || ' ' || mode FROM pg_locks
		WHERE NOT granted AND locktype = $1 AND `+thisDatabase, locktype)
	require.NoError(t, err)
	locks, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return locks
}

// TestTenantLockWaitBoundedByLockTimeout: a run that finds the tenant's
// migration lock held waits at most Config.Limits.LockTimeout and then fails with a
// retryable ErrLockTimeout, recorded as FAILED, rather than hanging. The
// lock is first held by another run (stuck inside a migration), then by a
// plain session of the test that took the key the migrator uses, read from
// pg_locks while the first run held it. Once the lock is free, the run
// succeeds.
func TestTenantLockWaitBoundedByLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	url := pgtest.NewDatabase(t)

	// Version 2 waits for advisory lock 4242 of the test's session: a run
	// that holds the tenant's lock for as long as the test wants.
	gate, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer gate.Close(context.Background())
	_, err = gate.Exec(ctx, "SELECT pg_advisory_lock(4242)")
	require.NoError(t, err)
	v1 := "CREATE TABLE accounts (id bigserial PRIMARY KEY);"
	v2 := "SELECT pg_advisory_xact_lock(4242);"
	v3 := "CREATE TABLE invoices (id bigserial PRIMARY KEY);"
	holder := relOrchestrator(t, Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1, v2), Limits: LimitsConfig{TenantLockTimeout: -1}})
	relAddTenant(t, holder, "locked", url, "locked")
	held := make(chan error, 1)
	go func() {
		_, err := holder.MigrateTenant(context.WithoutCancel(ctx), "locked")
		held <- err
	}()
	relWaitFor(t, 30*time.Second, "the first run inside version 2", func() bool {
		return len(waitingLocks(t, gate, "advisory")) == 1
	})
	// The tenant's migration lock: the other advisory lock of that session.
	var key int64
	require.NoError(t, gate.QueryRow(ctx, `
		SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND `+thisDatabase+` AND pid = (
			SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND `+thisDatabase+`)`).Scan(&key))

	// A second run gives up after LockTimeout with a retryable error.
	const lockTimeout = time.Second
	second := relOrchestrator(t, Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1, v2), Limits: LimitsConfig{LockTimeout: lockTimeout}})
	start := time.Now()
	_, err = second.MigrateTenant(ctx, "locked")
	waited := time.Since(start)
	require.ErrorIs(t, err, migrator.ErrLockTimeout)
	require.True(t, migrator.IsRetryable(err), "retryable: %v", err)
	require.GreaterOrEqual(t, waited, lockTimeout)
	require.Less(t, waited, lockTimeout+3*time.Second, "the wait is bounded by LockTimeout (goose polls once a second)")
	st, err := second.TenantState(ctx, "locked")
	require.NoError(t, err)
	require.Equal(t, StatusFailed, st.MigrationsStatus)
	require.Contains(t, st.LastError, "timed out waiting for the tenant migration lock")
	t.Logf("lock held by another run: gave up after %s (LockTimeout %s)", waited.Round(10*time.Millisecond), lockTimeout)

	// Release the first run: it completes.
	_, err = gate.Exec(ctx, "SELECT pg_advisory_unlock(4242)")
	require.NoError(t, err)
	select {
	case err := <-held:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first run did not finish after its gate opened")
	}

	// Now the test's own session holds the tenant's key while a run has
	// version 3 to apply.
	_, err = gate.Exec(ctx, "SELECT pg_advisory_lock($1)", key)
	require.NoError(t, err)
	third := relOrchestrator(t, Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1, v2, v3), Limits: LimitsConfig{LockTimeout: lockTimeout}})
	start = time.Now()
	_, err = third.MigrateTenant(ctx, "locked")
	waited = time.Since(start)
	require.ErrorIs(t, err, migrator.ErrLockTimeout)
	require.Less(t, waited, lockTimeout+3*time.Second)
	t.Logf("lock held by a plain session: gave up after %s", waited.Round(10*time.Millisecond))
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, url, "locked"), "nothing applied without the lock")

	_, err = gate.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
	require.NoError(t, err)
	v, err := third.MigrateTenant(ctx, "locked")
	require.NoError(t, err)
	require.Equal(t, int64(3), v)
	require.Equal(t, []int64{1, 2, 3}, fleettest.AppliedVersions(t, url, "locked"))
}

// TestBusyTenantTableLockTimeout: a migration that ALTERs a table an
// application transaction is reading waits at most TenantLockTimeout
// (PostgreSQL's lock_timeout) and fails with SQLSTATE 55P03, retryable; an
// application query that arrives meanwhile, and queues behind the
// migration's ACCESS EXCLUSIVE request, is answered once the migration gave
// up, while the application's first transaction still runs. The queue then
// retries the tenant by itself, and the retry succeeds once the table is
// free.
func TestBusyTenantTableLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	url := pgtest.NewDatabase(t)
	v1 := "CREATE TABLE accounts (id bigserial PRIMARY KEY);\nINSERT INTO accounts DEFAULT VALUES;"
	v2 := "ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';"
	setup := relOrchestrator(t, Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1)})
	relAddTenant(t, setup, "busy", url, "busy")
	_, err := setup.MigrateTenant(ctx, "busy")
	require.NoError(t, err)

	// The application reads the table in a long transaction.
	app, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer app.Close(context.Background())
	appTx, err := app.Begin(ctx)
	require.NoError(t, err)
	_, err = appTx.Exec(ctx, "SELECT count(*) FROM busy.accounts")
	require.NoError(t, err)

	const lockTimeout = 500 * time.Millisecond
	inline := relOrchestrator(t, Config{DatabaseURL: cp, Migrations: fleettest.Migrations(v1, v2), Limits: LimitsConfig{TenantLockTimeout: lockTimeout}})

	// Another application request arrives while the migration waits.
	observer, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer observer.Close(context.Background())
	queued := make(chan time.Duration, 1)
	go func() {
		// Wait for the migration's ACCESS EXCLUSIVE request to queue.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); <-tick.C {
			var waiting bool
			if err := observer.QueryRow(context.WithoutCancel(ctx),
				"SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'busy.accounts'::regclass AND mode = 'AccessExclusiveLock' AND "+thisDatabase+")").Scan(&waiting); err != nil || waiting {
				break
			}
		}
		start := time.Now()
		_, err := observer.Exec(context.WithoutCancel(ctx), "SELECT count(*) FROM busy.accounts")
		if err != nil {
			queued <- -1
			return
		}
		queued <- time.Since(start)
	}()

	start := time.Now()
	_, err = inline.MigrateTenant(ctx, "busy")
	failedAfter := time.Since(start)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P03", pgErr.Code, "lock_not_available: %v", err)
	require.True(t, migrator.IsRetryable(err))
	require.GreaterOrEqual(t, failedAfter, lockTimeout)
	require.Less(t, failedAfter, lockTimeout+2*time.Second)
	var appWait time.Duration
	select {
	case appWait = <-queued:
		require.GreaterOrEqual(t, appWait, time.Duration(0), "the application query failed")
	case <-time.After(10 * time.Second):
		t.Fatal("an application query stayed queued after the migration gave up")
	}
	require.Less(t, appWait, lockTimeout+time.Second)
	t.Logf("migration behind a reading transaction failed with 55P03 after %s (lock_timeout %s); an application query queued behind it waited %s",
		failedAfter.Round(10*time.Millisecond), lockTimeout, appWait.Round(10*time.Millisecond))
	st, err := inline.TenantState(ctx, "busy")
	require.NoError(t, err)
	require.Equal(t, StatusFailed, st.MigrationsStatus)
	require.Equal(t, int64(1), *st.MigrationsVersion)

	// Queued: the first attempt fails the same way, the job stays live, and
	// the retry after the application's transaction ends completes.
	var runsMu sync.Mutex
	var runs []string
	queued2 := relOrchestrator(t, Config{
		DatabaseURL: cp, Migrations: fleettest.Migrations(v1, v2), Limits: LimitsConfig{TenantLockTimeout: lockTimeout}, Strategy: StrategyFullFleet, RunWorkers: true, Queue: QueueConfig{RetryBackoff: 100 * time.Millisecond, MaxAttempts: 10}, Hooks: Hooks{OnMigrationRun: func(_ Strategy, result string, d time.Duration) {
			runsMu.Lock()
			defer runsMu.Unlock()
			runs = append(runs, fmt.Sprintf("%s after %s", result, d.Round(10*time.Millisecond)))
		}},
	})
	require.NoError(t, queued2.Start(ctx))
	relWaitFor(t, 30*time.Second, "a failed queued attempt", func() bool {
		j := fleettest.LastJob(t, queued2.Pool(), "busy")
		return len(j.Errors) > 0
	})
	j := fleettest.LastJob(t, queued2.Pool(), "busy")
	require.Contains(t, j.Errors[0], "55P03")
	require.NotContains(t, []string{"discarded", "cancelled"}, j.State, "a lock timeout must not end the job")
	require.NoError(t, appTx.Commit(ctx))
	released := time.Now()
	relWaitFor(t, 60*time.Second, "busy COMPLETED at version 2", func() bool {
		return fleettest.CountCompleted(t, queued2.Pool(), []string{"busy"}, 2) == 1
	})
	runsMu.Lock()
	t.Logf("queued runs: %v; COMPLETED %s after the table was free", runs, time.Since(released).Round(100*time.Millisecond))
	runsMu.Unlock()
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, url, "busy"))
}

// TestProgressiveMemoryFlat: 10,000 tenant ids pass through the progressive
// collector into the queue (insert-only, as a process without workers), twice.
// The collector holds nothing after each flush, every id got its job, and the
// live heap after the second pass is within a bound of the heap after the
// first: memory does not grow with the number of tenants seen.
//
// Not parallel: it measures the heap of the test process.
func TestProgressiveMemoryFlat(t *testing.T) {
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, cpURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, controlplane.Migrate(ctx, pool))
	q, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)

	const perPass = 10_000
	pass := func(n int) (heapInuse, heapAlloc uint64, took time.Duration) {
		start := time.Now()
		c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: q.Enqueue, Interval: time.Hour})
		require.NoError(t, c.Start(ctx))
		for i := range perPass {
			c.Add(fmt.Sprintf("pass%d-tenant-%05d", n, i))
			if i%7 == 0 { // requests repeat tenants
				c.Add(fmt.Sprintf("pass%d-tenant-%05d", n, i/2))
			}
		}
		require.NoError(t, c.Stop(ctx))
		require.Zero(t, c.Len(), "tenants held after the flush")
		took = time.Since(start)
		remaining, err := q.Remaining(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(n*perPass), remaining, "jobs queued after pass %d", n)
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, ms.HeapAlloc, took
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	inuse1, alloc1, took1 := pass(1)
	inuse2, alloc2, took2 := pass(2)
	mib := func(b uint64) string { return fmt.Sprintf("%d KiB", b>>10) }
	t.Logf("HeapInuse %s before, %s after 10k tenants (%s), %s after 20k (%s); HeapAlloc %s, %s, %s",
		mib(before.HeapInuse), mib(inuse1), took1.Round(10*time.Millisecond), mib(inuse2), took2.Round(10*time.Millisecond),
		mib(before.HeapAlloc), mib(alloc1), mib(alloc2))
	// Flat: the second 10k leave (almost) nothing behind. Keeping the ids
	// would cost about 500 KiB per 10k (a 32-byte allocation each, plus
	// the container).
	require.Less(t, int64(alloc2)-int64(alloc1), int64(200<<10), "live heap grew with the second 10,000 tenants")
	require.Less(t, int64(inuse2)-int64(inuse1), int64(1<<20), "HeapInuse grew with the second 10,000 tenants")
}

// FuzzTenantFromHost feeds arbitrary Host and X-Forwarded-Host headers to
// Orchestrator.TenantID, under the default host regexp and under a lax one
// that lets anything before the first dot through: it never panics, and what
// it returns is "" or a valid tenant id found in the host that was used
// (X-Forwarded-Host's first value when set, else Host). Seed corpus:
// testdata/fuzz/FuzzTenantFromHost.
func FuzzTenantFromHost(f *testing.F) {
	for _, s := range [][2]string{
		{"acme.local.dev", ""},
		{"acme.local.dev:8080", ""},
		{"ACME.Local.Dev", ""},
		{"proxy.internal", "acme.local.dev, evil.local.dev"},
		{"acme.local.dev", " , acme.local.dev"},
		{"a'; DROP TABLE tenants; --.local.dev", ""},
		{"../../etc/passwd.local.dev", ""},
		{"acme.local.dev.evil.com", ""},
		{"-acme.local.dev", ""},
		{strings.Repeat("a", 64) + ".local.dev", ""},
		{strings.Repeat("a", 300), ""},
		{"acme%2e.local.dev", ""},
		{"acme\x00.local.dev", ""},
		{"ａｃｍｅ.local.dev", ""},
	} {
		f.Add(s[0], s[1])
	}
	// TenantID needs only the host regexp: no database.
	strict := &Orchestrator{hostRE: regexp.MustCompile(DefaultTenantHostRegexp)}
	lax := &Orchestrator{hostRE: regexp.MustCompile(`^([^.]*)\.`)}
	f.Fuzz(func(t *testing.T, host, forwarded string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		used := host
		if forwarded != "" {
			r.Header.Set("X-Forwarded-Host", forwarded)
			used, _, _ = strings.Cut(forwarded, ",")
			used = strings.TrimSpace(used)
		}
		for _, o := range []*Orchestrator{strict, lax} {
			id := o.TenantID(r)
			if id == "" {
				continue
			}
			if err := ValidateTenantID(id); err != nil {
				t.Fatalf("TenantID(host %q, forwarded %q) = %q, not a valid id: %v", host, forwarded, id, err)
			}
			if !strings.Contains(strings.ToLower(used), id) {
				t.Fatalf("TenantID(host %q, forwarded %q) = %q, not in the host used", host, forwarded, id)
			}
			if len(used) > 255 {
				t.Fatalf("TenantID accepted a host of %d bytes", len(used))
			}
		}
	})
}
