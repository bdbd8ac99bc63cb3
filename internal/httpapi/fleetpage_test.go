package httpapi_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"riverqueue.com/riverui"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// pageEnv is env with River UI mounted, as serve mounts it: the setup of
// the browser-facing tests.
type pageEnv struct {
	*env
}

// newPageEnv returns an env whose server (e.srv) also serves River UI over
// the Orchestrator's River client. The Orchestrator only inserts jobs (no
// workers), so queued jobs stay available.
func newPageEnv(t *testing.T) pageEnv {
	t.Helper()
	e := newEnv(t, options{})
	e.srv.Close()
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(e.orch.RiverClient(), nil),
		Logger:    testLogger(t),
		Prefix:    httpapi.RiverUIPrefix,
	})
	require.NoError(t, err)
	require.NoError(t, ui.Start(t.Context()))
	e.srv = httptest.NewServer(newTestHandler(t, e, testAdminKeys, ui))
	t.Cleanup(e.srv.Close)
	return pageEnv{e}
}

// testAdminKeys are the keys newEnv configures.
var testAdminKeys = []string{"another-key-that-is-longer-than-the-first-one", testAdminKey}

// newTestHandler is the handler of e's Orchestrator with keys and riverUI
// (nil: none), logging to e.logs.
func newTestHandler(t *testing.T, e *env, keys []string, riverUI http.Handler) http.Handler {
	t.Helper()
	cfg := httpapi.Config{
		Service:             e.orch,
		TenantIDFromContext: tenantmigrate.TenantIDFromContext,
		AdminAPIKeys:        keys,
		Logger:              slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if riverUI != nil {
		cfg.RiverUI = riverUI
	}
	h, err := httpapi.NewHandler(cfg)
	require.NoError(t, err)
	return h
}

// hostileError is a last_error that would run script if not escaped.
const hostileError = `relation "items" does not exist <script>alert("pwned")</script> & <img src=x onerror=alert(1)>`

// knownFleet creates, on e, a fleet whose numbers the tests check (latest
// is 2):
//
//	v2 COMPLETED: a1 a2 a3
//	v1 COMPLETED: b1
//	v1 FAILED: f1 (hostileError)
//	v1 FAILED_STALE: s1
//	never migrated: n1 n2, both with a queued job
//
// so 8 tenants, 5 behind, 2 failed, 2 jobs remaining.
func knownFleet(t *testing.T, e *env) {
	t.Helper()
	for _, id := range []string{"a1", "a2", "a3", "b1", "f1", "s1", "n1", "n2"} {
		res := e.admin(http.MethodPost, "/admin/tenants/"+id, jsonBody(map[string]string{"databaseUrl": "postgres://app@127.0.0.1:1/" + id}))
		require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
	}
	_, err := e.orch.Pool().Exec(t.Context(), `
		UPDATE tenantmigrate.tenants AS t
		SET migrations_version = v.version, migrations_status = v.status, last_error = v.err
		FROM (VALUES
			('a1', 2::bigint, 'COMPLETED', NULL::text),
			('a2', 2, 'COMPLETED', NULL),
			('a3', 2, 'COMPLETED', NULL),
			('b1', 1, 'COMPLETED', NULL),
			('f1', 1, 'FAILED', $1),
			('s1', 1, 'FAILED_STALE', 'migration 2 failed: column "note" already exists')
		) AS v (id, version, status, err)
		WHERE t.id = v.id`, hostileError)
	require.NoError(t, err)
	for _, id := range []string{"n1", "n2"} {
		res := e.admin(http.MethodPost, "/admin/tenants/"+id+"/migrations?async=true", "")
		require.Equal(t, http.StatusAccepted, res.status, "body: %s", res.body)
	}
}

// byID returns the text content of the element with id in an HTML page
// (elements without children).
func byID(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(page)
	require.NotNil(t, m, "no element #%s in:\n%s", id, page)
	return m[1]
}

// rowOf returns the <tr> whose attribute attr is value.
func rowOf(t *testing.T, page, attr, value string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tr ` + attr + `="` + regexp.QuoteMeta(value) + `">.*?</tr>`).FindString(page)
	require.NotEmpty(t, m, "no row %s=%q in:\n%s", attr, value, page)
	return m
}

// rowCount returns the count cell of the row whose attr is value.
func rowCount(t *testing.T, page, attr, value string) string {
	t.Helper()
	m := regexp.MustCompile(`class="num count">(\d+)<`).FindStringSubmatch(rowOf(t, page, attr, value))
	require.NotNil(t, m)
	return m[1]
}

func TestFleetPage(t *testing.T) {
	t.Parallel()
	e := newPageEnv(t)
	knownFleet(t, e.env)
	// Runs of 1, 2 and 3 seconds that applied a migration; one that applied
	// none and a failure do not count.
	_, err := e.orch.Pool().Exec(t.Context(), `
		INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, result, started_at, finished_at, process, trigger)
		SELECT 'a1', 1, CASE WHEN i = 4 THEN 1 ELSE 2 END, CASE WHEN i = 5 THEN 'failed' ELSE 'completed' END,
			now() - interval '1 hour', now() - interval '1 hour' + i * interval '1 second', 'p:1', 'queue'
		FROM generate_series(1, 5) i`)
	require.NoError(t, err)

	res := e.admin(http.MethodGet, "/admin/", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "text/html; charset=utf-8", res.header.Get("Content-Type"))
	require.Equal(t, "no-store", res.header.Get("Cache-Control"))
	require.Contains(t, res.header.Get("Content-Security-Policy"), "default-src 'none'")
	require.Equal(t, "DENY", res.header.Get("X-Frame-Options"))
	page := string(res.body)

	// The numbers.
	require.Equal(t, "2", byID(t, page, "latest-version"))
	require.Equal(t, "8", byID(t, page, "tenants-total"))
	require.Equal(t, "5", byID(t, page, "tenants-behind"))
	require.Equal(t, "2", byID(t, page, "tenants-failed"))
	require.Equal(t, "2", byID(t, page, "queue-remaining"))
	require.Equal(t, "2s / 2.9s", byID(t, page, "run-durations"))

	// The histogram: never migrated first, bars proportional to the counts.
	require.Equal(t, "2", rowCount(t, page, "data-version", "never"))
	require.Equal(t, "3", rowCount(t, page, "data-version", "1"))
	require.Equal(t, "3", rowCount(t, page, "data-version", "2"))
	require.Contains(t, rowOf(t, page, "data-version", "never"), "never migrated")
	require.Contains(t, rowOf(t, page, "data-version", "never"), `style="width: 66.7%"`)
	require.Contains(t, rowOf(t, page, "data-version", "1"), `style="width: 100.0%"`)
	require.Contains(t, rowOf(t, page, "data-version", "2"), `style="width: 100.0%"`)
	require.Contains(t, rowOf(t, page, "data-version", "2"), "latest")
	require.Less(t, strings.Index(page, `data-version="never"`), strings.Index(page, `data-version="1"`))
	require.Less(t, strings.Index(page, `data-version="1"`), strings.Index(page, `data-version="2"`))

	// Statuses.
	require.Equal(t, "4", rowCount(t, page, "data-status", "COMPLETED"))
	require.Equal(t, "1", rowCount(t, page, "data-status", "FAILED"))
	require.Equal(t, "1", rowCount(t, page, "data-status", "FAILED_STALE"))
	require.Equal(t, "2", rowCount(t, page, "data-status", "NEVER_MIGRATED"))

	// Failed tenants with their errors, escaped.
	require.Contains(t, page, `<td class="tenant-id">f1</td>`)
	require.Contains(t, page, `<td class="tenant-id">s1</td>`)
	require.Equal(t, "Showing 2 of 2.", byID(t, page, "failed-summary"))
	require.NotContains(t, page, "<script")
	require.NotContains(t, page, "<img")
	require.Contains(t, page, `&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;`)
	require.Contains(t, page, `column &#34;note&#34; already exists`)

	// Refresh, River UI link, and nothing loaded from elsewhere.
	require.Contains(t, page, `<meta http-equiv="refresh" content="10">`)
	require.Contains(t, page, `href="/admin/riverui/"`)
	require.NotRegexp(t, `(?i)(src|href)="(https?:)?//`, page)

	// HEAD answers the headers alone.
	res = e.admin(http.MethodHead, "/admin/", "")
	require.Equal(t, http.StatusOK, res.status)
	require.Empty(t, res.body)
}

func TestFleetPageManyFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})

	// No tenants: the page says so, and links to no River UI (none here).
	res := e.admin(http.MethodGet, "/admin/", "")
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	page := string(res.body)
	require.Equal(t, "0", byID(t, page, "tenants-total"))
	require.Contains(t, page, "No tenants yet.")
	require.Equal(t, "No failed tenants.", byID(t, page, "failed-summary"))
	require.NotContains(t, page, "/admin/riverui/")

	// 25 failed tenants: the page lists the first 20 and says how many.
	_, err := e.orch.Pool().Exec(t.Context(), `
		INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status, last_error)
		SELECT format('t%s', i), '\x00'::bytea, 1, 'FAILED', format('error %s', i)
		FROM generate_series(1, 25) AS i`)
	require.NoError(t, err)
	page = string(e.admin(http.MethodGet, "/admin/", "").body)
	require.Equal(t, "25", byID(t, page, "tenants-failed"))
	require.Contains(t, byID(t, page, "failed-summary"), "Showing 20 of 25.")
	require.Equal(t, 20, strings.Count(page, `<td class="tenant-id">`))
	for i := 1; i <= 20; i++ {
		require.Contains(t, page, fmt.Sprintf(`<td class="tenant-id">t%d</td>`, i))
	}
	require.NotContains(t, page, `<td class="tenant-id">t21</td>`)
	require.Equal(t, "25", rowCount(t, page, "data-version", "1"))
	require.Equal(t, "0", rowCount(t, page, "data-status", "COMPLETED"))
}

// waveCell returns the text of the cell with class of wave n's row.
func waveCell(t *testing.T, page string, n int, class string) string {
	t.Helper()
	m := regexp.MustCompile(`class="num ` + class + `">(\d+)<`).FindStringSubmatch(rowOf(t, page, "data-wave", fmt.Sprint(n)))
	require.NotNil(t, m, "wave %d has no %s cell", n, class)
	return m[1]
}

// waveETA returns the ETA cell of wave n (1-based).
func waveETA(t *testing.T, page string, n int) string {
	t.Helper()
	m := regexp.MustCompile(`class="eta">([^<]*)<`).FindStringSubmatch(rowOf(t, page, "data-wave", fmt.Sprint(n)))
	require.NotNil(t, m, "wave %d has no ETA cell", n)
	return m[1]
}

// TestFleetPageRollout: the page shows the current rollout, its waves'
// size, completed, failed and state, the halt reason and first errors of a
// halted one, and the ETA of a running one.
func TestFleetPageRollout(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	// newRollout adds three tenants behind on e and starts the rollout (a
	// default first wave of 1 tenant, then 2); t0 is in the first wave.
	newRollout := func(t *testing.T, e *env, prefix string) string {
		t.Helper()
		for i := range 3 {
			res := e.admin(http.MethodPost, fmt.Sprintf("/admin/tenants/%s%d", prefix, i), `{"databaseUrl": "`+dbURL+`", "schema": "`+fmt.Sprintf("%s%d", prefix, i)+`"}`)
			require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
		}
		res := e.admin(http.MethodPost, "/admin/rollouts", "")
		require.Equal(t, http.StatusCreated, res.status, "body: %s", res.body)
		ro := res.json(t)
		first := ro["waves"].([]any)[0].(map[string]any)
		require.EqualValues(t, 1, first["size"])
		return fmt.Sprint(ro["id"])
	}
	// firstWaveTenant is the tenant of wave 1 (the order is a hash).
	firstWaveTenant := func(t *testing.T, e *env, id string) string {
		t.Helper()
		var tenant string
		require.NoError(t, e.orch.Pool().QueryRow(t.Context(),
			`SELECT tenant_id FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1 AND wave = 0`, id).Scan(&tenant))
		return tenant
	}

	t.Run("none", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, options{})
		page := string(e.admin(http.MethodGet, "/admin/", "").body)
		require.Equal(t, "No rollout yet.", byID(t, page, "rollout-summary"))
		require.NotContains(t, page, `id="rollout-waves"`)
	})

	t.Run("halted", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, options{migrations: badMigrations})
		id := newRollout(t, e, "h")
		tenant := firstWaveTenant(t, e, id)
		res := e.admin(http.MethodPost, "/admin/tenants/"+tenant+"/migrations", "")
		require.Equal(t, http.StatusInternalServerError, res.status, "body: %s", res.body)

		res = e.admin(http.MethodGet, "/admin/", "")
		require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
		page := string(res.body)
		require.Equal(t, id, byID(t, page, "rollout-id"))
		require.Equal(t, "2", byID(t, page, "rollout-target"))
		require.Equal(t, "HALTED", byID(t, page, "rollout-state"))
		require.Equal(t, "3", byID(t, page, "rollout-total"))
		require.Equal(t, "1", byID(t, page, "rollout-failed"))
		require.Equal(t, "2", byID(t, page, "rollout-pending"))
		require.Contains(t, byID(t, page, "rollout-halt-reason"), "1 failed")
		require.Equal(t, "–", byID(t, page, "rollout-eta"), "a halted rollout has no ETA")
		require.NotContains(t, page, `id="rollout-eta-basis"`)
		require.Equal(t, "–", waveETA(t, page, 2))

		require.Equal(t, "1", waveCell(t, page, 1, "size"))
		require.Equal(t, "0", waveCell(t, page, 1, "completed"))
		require.Equal(t, "1", waveCell(t, page, 1, "failed"))
		require.Contains(t, rowOf(t, page, "data-wave", "1"), ">FAILED<")
		require.Contains(t, rowOf(t, page, "data-wave", "1"), `style="width: 100.0%"`)
		require.Equal(t, "2", waveCell(t, page, 2, "size"))
		require.Equal(t, "2", waveCell(t, page, 2, "pending"))
		require.Contains(t, rowOf(t, page, "data-wave", "2"), ">PENDING<")
		require.Contains(t, rowOf(t, page, "data-wave", "2"), `style="width: 0.0%"`)

		// The failed tenant with its error, escaped.
		errRow := rowOf(t, page, "data-tenant", tenant)
		require.Contains(t, errRow, `no_such_table`)
		require.Contains(t, errRow, `<td class="num">2</td>`)
	})

	t.Run("running", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, options{})
		id := newRollout(t, e, "r")
		tenant := firstWaveTenant(t, e, id)
		res := e.admin(http.MethodPost, "/admin/tenants/"+tenant+"/migrations", "")
		require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)

		page := string(e.admin(http.MethodGet, "/admin/", "").body)
		require.Equal(t, "RUNNING", byID(t, page, "rollout-state"))
		require.Equal(t, "1", byID(t, page, "rollout-completed"))
		require.Equal(t, "0", byID(t, page, "rollout-failed"))
		require.Equal(t, "2", byID(t, page, "rollout-pending"))
		require.Equal(t, "1", waveCell(t, page, 1, "completed"))
		require.Equal(t, "0", waveCell(t, page, 1, "pending"))
		require.Contains(t, rowOf(t, page, "data-wave", "1"), `style="width: 100.0%"`)
		// No feeder runs here to pass wave 1 (Store.Step): it is still the
		// current one, and wave 2 waits.
		require.Contains(t, rowOf(t, page, "data-wave", "1"), ">RUNNING<")
		require.Contains(t, rowOf(t, page, "data-wave", "2"), ">PENDING<")
		require.Equal(t, "1", byID(t, page, "rollout-wave"))
		// One tenant of three finished, and its run is in the history: an
		// ETA from the history's p50 at the parallelism of wave 1.
		require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, in \S+$`, byID(t, page, "rollout-eta"))
		require.Regexp(t, `^run history p50 \S+ per tenant, 1\.0 at once$`, byID(t, page, "rollout-eta-basis"))
		require.Equal(t, "–", waveETA(t, page, 1))
		require.Regexp(t, `^in \S+s$`, waveETA(t, page, 2))
		require.NotEqual(t, "–", byID(t, page, "rollout-avg"))
		require.NotContains(t, page, `id="rollout-halt-reason"`)
	})

	t.Run("from history", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, options{})
		id := newRollout(t, e, "e")
		tenant := firstWaveTenant(t, e, id)
		// The history holds runs of 1, 2 and 3 s (p50 2 s, p95 2.9 s); the
		// first wave's tenant ran 2 s alone (parallelism 1). Wave 2's two
		// tenants: two rounds of 2 s.
		_, err := e.orch.Pool().Exec(t.Context(), `
			INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, result, started_at, finished_at, process, trigger)
			SELECT 'h' || i, 1, 2, 'completed', now() - interval '1 hour', now() - interval '1 hour' + i * interval '1 second', 'p:1', 'queue'
			FROM generate_series(1, 3) i`)
		require.NoError(t, err)
		_, err = e.orch.Pool().Exec(t.Context(), `UPDATE tenantmigrate.rollout_tenants
			SET state = 'COMPLETED', duration_ms = 2000, finished_at = now() - interval '5 seconds'
			WHERE rollout_id = $1 AND tenant_id = $2`, id, tenant)
		require.NoError(t, err)

		page := string(e.admin(http.MethodGet, "/admin/", "").body)
		require.Equal(t, "2s / 2.9s", byID(t, page, "run-durations"))
		require.Equal(t, "run history p50 2s per tenant, 1.0 at once", byID(t, page, "rollout-eta-basis"))
		// 4 s from the read, shown a few ms later.
		require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, in (4|3\.\d)s$`, byID(t, page, "rollout-eta"))
		require.Equal(t, "–", waveETA(t, page, 1), "wave 1 has nothing pending")
		require.Regexp(t, `^in (4|3\.\d)s$`, waveETA(t, page, 2))
		require.Equal(t, "2", waveCell(t, page, 2, "pending"))

		// The admin API's eta keeps its shape: an RFC 3339 time, here about
		// 4 s ahead.
		res := e.admin(http.MethodGet, "/admin/rollouts/"+id, "")
		require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
		eta, err := time.Parse(time.RFC3339Nano, res.json(t)["eta"].(string))
		require.NoError(t, err)
		require.WithinDuration(t, time.Now().Add(4*time.Second), eta, time.Second)
	})
}
