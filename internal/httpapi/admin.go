package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// admin serves the admin API. Its routes, all JSON:
//
//	POST   /admin/tenants/{id}             create: 201 tenant, 409 when it exists;
//	                                       {"provision": true}: its database too (provision.go)
//	PUT    /admin/tenants/{id}             upsert: 201 created, 200 updated
//	PATCH  /admin/tenants/{id}             change databaseUrl, schema and/or labels (merged,
//	                                       null removes a label): 200
//	DELETE /admin/tenants/{id}             204; ?dropDatabase=true: a provisioned tenant's database too
//	GET    /admin/tenants/{id}             tenant
//	GET    /admin/tenants?cursor=&limit=&selector=
//	                                       {"tenants": [...], "nextCursor": N|null}
//	GET    /admin/tenants/{id}/migrations  migration state of one tenant
//	POST   /admin/tenants/{id}/migrations  migrate now: 200, or 500 on failure;
//	                                       ?async=true: 202 {"enqueued": bool}
//	GET    /admin/tenants/{id}/runs        run history, newest first (runs.go)
//	GET    /admin/migrations               {"remaining": N, "latestVersion": L, "targetVersion": T, "targetPinned": bool}
//	POST   /admin/migrations/fleet         queue every tenant behind: 202 {"scheduled": N}
//	GET    /admin/migrations/failed        failed tenants, paged like /admin/tenants
//	GET    /admin/stats                    fleet summary
//	GET    /admin/servers                  database servers (see servers.go)
//	PUT    /admin/servers/{server}         {"maxConcurrent": N|null}: 200 server
//	...    /admin/rollouts...              see rollouts.go
//
// Tenant database URLs are only ever shown redacted.
type admin struct {
	svc     Service
	maxBody int64
}

// newAdminHandler returns the admin API behind the API key check, whose
// failures count in failures.
func newAdminHandler(cfg Config, failures *failLimiter) (http.Handler, error) {
	a := &admin{svc: cfg.Service, maxBody: cfg.MaxBodyBytes}
	rt := newRouter()
	a.routes(rt)
	rt.finish()

	for pattern, h := range cfg.AdminExtra {
		if err := mountExtra(rt.mux, pattern, h); err != nil {
			return nil, err
		}
	}
	notFound := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin endpoint")
	})
	rt.mux.Handle("/admin", notFound)
	if _, taken := cfg.AdminExtra["/admin/"]; !taken {
		rt.mux.Handle("/admin/", notFound)
	}
	return requireKey(newKeyChecker(cfg.AdminAPIKeys), failures, rt.mux), nil
}

// routes registers the admin API's endpoints on rt. README.md's admin API
// table lists every one (TestREADMEAdminTable).
func (a *admin) routes(rt *router) {
	rt.handle("GET /admin/tenants", http.HandlerFunc(a.listTenants))
	rt.handle("GET /admin/tenants/{id}", a.withTenantID(a.getTenant))
	rt.handle("POST /admin/tenants/{id}", a.withTenantID(a.createTenant))
	rt.handle("PUT /admin/tenants/{id}", a.withTenantID(a.upsertTenant))
	rt.handle("PATCH /admin/tenants/{id}", a.withTenantID(a.patchTenant))
	rt.handle("DELETE /admin/tenants/{id}", a.withTenantID(a.deleteTenant))
	rt.handle("GET /admin/tenants/{id}/migrations", a.withTenantID(a.getTenantMigrations))
	rt.handle("POST /admin/tenants/{id}/migrations", a.withTenantID(a.migrateTenant))
	rt.handle("GET /admin/tenants/{id}/runs", a.withTenantID(a.listRuns))
	rt.handle("GET /admin/migrations", http.HandlerFunc(a.migrations))
	rt.handle("POST /admin/migrations/fleet", http.HandlerFunc(a.scheduleFleet))
	rt.handle("GET /admin/migrations/failed", http.HandlerFunc(a.listFailed))
	rt.handle("GET /admin/stats", http.HandlerFunc(a.stats))
	a.addWaybackRoutes(rt) // wayback.go
	a.mountServers(rt)
	rt.handle("GET /admin/rollouts", http.HandlerFunc(a.listRollouts))
	rt.handle("POST /admin/rollouts", http.HandlerFunc(a.startRollout))
	rt.handle("GET /admin/rollouts/{id}", a.withRolloutID(a.getRollout))
	rt.handle("POST /admin/rollouts/{id}/resume", a.withRolloutID(a.resumeRollout))
	rt.handle("POST /admin/rollouts/{id}/abort", a.withRolloutID(a.abortRollout))
}

// mountExtra registers one Config.AdminExtra handler, turning the panic of
// a bad or conflicting pattern into an error.
func mountExtra(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = strings.TrimLeft(p, " \t")
	}
	if !strings.HasPrefix(path, "/admin/") {
		return fmt.Errorf("httpapi: AdminExtra pattern %q: the path must start with /admin/", pattern)
	}
	if h == nil {
		return fmt.Errorf("httpapi: AdminExtra pattern %q: nil handler", pattern)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("httpapi: AdminExtra pattern %q: %v", pattern, p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// withTenantID validates the {id} path value and passes it to h; an invalid
// id is 400.
func (a *admin) withTenantID(h func(w http.ResponseWriter, r *http.Request, id string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := controlplane.ValidateTenantID(id); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		setLogTenant(r, id)
		h(w, r, id)
	})
}

func (a *admin) createTenant(w http.ResponseWriter, r *http.Request, id string) {
	t, provision, err := decodeCreate(http.MaxBytesReader(w, r.Body, a.maxBody), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	if provision {
		t, err = a.svc.ProvisionTenant(r.Context(), id)
	} else {
		t, err = a.svc.CreateTenant(r.Context(), t)
	}
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, TenantToJSON(t))
}

func (a *admin) upsertTenant(w http.ResponseWriter, r *http.Request, id string) {
	t, err := decodeTenant(http.MaxBytesReader(w, r.Body, a.maxBody), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	t, created, err := a.svc.UpsertTenant(r.Context(), t)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, TenantToJSON(t))
}

func (a *admin) patchTenant(w http.ResponseWriter, r *http.Request, id string) {
	p, err := decodePatch(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	t, err := a.svc.PatchTenant(r.Context(), id, p)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, TenantToJSON(t))
}

func (a *admin) deleteTenant(w http.ResponseWriter, r *http.Request, id string) {
	drop, err := parseDropDatabase(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	del := a.svc.DeleteTenant
	if drop {
		del = a.svc.DeprovisionTenant
	}
	if err := del(r.Context(), id); err != nil {
		writeServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *admin) getTenant(w http.ResponseWriter, r *http.Request, id string) {
	t, err := a.svc.GetTenant(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, TenantToJSON(t))
}

func (a *admin) listTenants(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := parsePage(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	selector, err := parseSelector(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	tenants, next, err := a.svc.ListTenantsMatching(r.Context(), selector, cursor, limit)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	out := tenantListJSON{Tenants: make([]TenantJSON, len(tenants)), NextCursor: nextCursor(next)}
	for i, t := range tenants {
		out.Tenants[i] = TenantToJSON(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) getTenantMigrations(w http.ResponseWriter, r *http.Request, id string) {
	st, err := a.svc.TenantState(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantMigrationsJSON{
		IsLatest:          a.svc.IsLatest(st),
		MigrationsVersion: st.MigrationsVersion,
		MigrationsStatus:  statusJSON(st.MigrationsStatus),
		LastError:         st.LastError,
		LatestVersion:     a.svc.Latest(),
	})
}

// migrateTenant migrates the tenant now, or with ?async=true queues a job.
func (a *admin) migrateTenant(w http.ResponseWriter, r *http.Request, id string) {
	async, err := parseAsync(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	if async {
		// Check the tenant exists: a job for an unknown id would be queued
		// and do nothing.
		if _, err := a.svc.TenantState(r.Context(), id); err != nil {
			writeServiceError(w, r, err)
			return
		}
		n, err := a.svc.EnqueueTenants(r.Context(), id)
		if err != nil {
			writeServiceError(w, r, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]bool{"enqueued": n > 0})
		return
	}

	// Read the tenant first: it answers 404 for an unknown id, and its
	// password is scrubbed from the migration error, in case a driver
	// message quotes it.
	t, err := a.svc.GetTenant(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	version, err := a.svc.MigrateTenant(r.Context(), id)
	var halted *rollouts.HaltedError
	if errors.As(err, &halted) {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"migrated": false, "error": halted.Error(), "rollout": halted.RolloutID})
		return
	}
	if errors.Is(err, servers.ErrFull) || errors.Is(err, servers.ErrDown) {
		// The tenant's server held the run back (full for the inline
		// wait, or DOWN): nothing ran or was recorded.
		w.Header().Set("Retry-After", "2")
		writeJSON(w, http.StatusServiceUnavailable, migrateResultJSON{Migrated: false, Error: redact.Error(err, t.DatabaseURL).Error()})
		return
	}
	if err != nil {
		err = redact.Error(err, t.DatabaseURL)
		status, msg := serviceErrorStatus(err)
		if status == http.StatusInternalServerError {
			// A failed migration: its message is what the operator needs.
			msg = err.Error()
		}
		setLogError(r, err)
		writeJSON(w, status, migrateResultJSON{Migrated: false, Error: msg})
		return
	}
	writeJSON(w, http.StatusOK, migrateResultJSON{Migrated: true, MigrationsVersion: &version})
}

func (a *admin) migrations(w http.ResponseWriter, r *http.Request) {
	remaining, err := a.svc.Remaining(r.Context())
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	target, pinned := targetOf(a.svc)
	writeJSON(w, http.StatusOK, map[string]any{"remaining": remaining, "latestVersion": a.svc.Latest(),
		"targetVersion": target, "targetPinned": pinned})
}

func (a *admin) scheduleFleet(w http.ResponseWriter, r *http.Request) {
	b, err := decodeFleet(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	n, err := a.svc.ScheduleFleet(r.Context(), b.IncludeStale)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]int{"scheduled": n})
}

func (a *admin) listFailed(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := parsePage(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	states, next, err := a.svc.ListFailed(r.Context(), cursor, limit)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	out := failedListJSON{Tenants: make([]tenantStateJSON, len(states)), NextCursor: nextCursor(next)}
	for i, st := range states {
		out.Tenants[i] = tenantStateJSON{
			ID:                st.ID,
			MigrationsVersion: st.MigrationsVersion,
			MigrationsStatus:  statusJSON(st.MigrationsStatus),
			LastError:         st.LastError,
			UpdatedAt:         st.UpdatedAt,
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) stats(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Stats(r.Context())
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	remaining, err := a.svc.Remaining(r.Context())
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statsToJSON(st, a.svc.Latest(), remaining))
}

// writeServiceError answers an error of the request parsers or the Service
// (see serviceErrorStatus) and records it for the request log line.
func writeServiceError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := serviceErrorStatus(err)
	if status >= 500 {
		setLogError(r, err)
	}
	writeError(w, status, msg)
}

// serviceErrorStatus maps an error to a status and a message for the
// client: bad input is 4xx with its message; a missing encryption key is 503
// (the server is misconfigured); a URL no configured key decrypts is 500
// naming the tenant; other errors are 500 without details, which go to the
// log instead.
func serviceErrorStatus(err error) (int, string) {
	if status, msg, ok := rolloutErrorStatus(err); ok {
		return status, msg
	}
	var reqErr *requestError
	switch {
	case errors.As(err, &reqErr):
		return reqErr.status, reqErr.msg
	case errors.Is(err, controlplane.ErrTenantNotFound):
		return http.StatusNotFound, "unknown tenant"
	case errors.Is(err, controlplane.ErrTenantExists):
		return http.StatusConflict, "tenant already exists"
	case errors.Is(err, history.ErrInvalidCursor):
		return http.StatusBadRequest, "cursor must be the nextCursor of the previous page"
	case errors.Is(err, history.ErrInvalidLimit):
		return http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", history.MaxPageSize)
	case errors.Is(err, controlplane.ErrInvalid):
		// The Store's validation errors never contain a password.
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, provisioning.ErrNotConfigured):
		return http.StatusBadRequest, "provisioning is not configured on this server: start it with a provision URL (PROVISION_URL)"
	case errors.Is(err, provisioning.ErrNotProvisioned), errors.Is(err, provisioning.ErrDatabaseExists),
		errors.Is(err, controlplane.ErrTargetPinned):
		// Names the tenant and the database, never a URL.
		return http.StatusConflict, err.Error()
	case errors.Is(err, provisioning.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, controlplane.ErrNoEncryptionKey):
		return http.StatusServiceUnavailable, "server misconfiguration: started without its encryption key; " + controlplane.ErrNoEncryptionKey.Error()
	case errors.Is(err, controlplane.ErrDecrypt):
		// A tenant URL under a key this server lacks: the message names the
		// tenant and the key id, never the ciphertext or a key.
		return http.StatusInternalServerError, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request cancelled or timed out"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// Response bodies.
type (
	// TenantJSON is a tenant as the admin API and the CLI's --json show it.
	TenantJSON struct {
		ID                string            `json:"id"`
		DatabaseURL       string            `json:"databaseUrl"`
		Schema            string            `json:"schema"`
		Labels            map[string]string `json:"labels"`
		MigrationsVersion *int64            `json:"migrationsVersion"`
		MigrationsStatus  *string           `json:"migrationsStatus"`
		LastError         string            `json:"lastError"`
		CreatedAt         time.Time         `json:"createdAt"`
		UpdatedAt         time.Time         `json:"updatedAt"`
		// DecryptError says why databaseUrl is "<cannot decrypt>".
		DecryptError string `json:"decryptError,omitempty"`
	}
	tenantListJSON struct {
		Tenants    []TenantJSON `json:"tenants"`
		NextCursor *int64       `json:"nextCursor"`
	}
	tenantStateJSON struct {
		ID                string    `json:"id"`
		MigrationsVersion *int64    `json:"migrationsVersion"`
		MigrationsStatus  *string   `json:"migrationsStatus"`
		LastError         string    `json:"lastError"`
		UpdatedAt         time.Time `json:"updatedAt"`
	}
	failedListJSON struct {
		Tenants    []tenantStateJSON `json:"tenants"`
		NextCursor *int64            `json:"nextCursor"`
	}
	tenantMigrationsJSON struct {
		IsLatest          bool    `json:"isLatest"`
		MigrationsVersion *int64  `json:"migrationsVersion"`
		MigrationsStatus  *string `json:"migrationsStatus"`
		LastError         string  `json:"lastError"`
		LatestVersion     int64   `json:"latestVersion"`
	}
	migrateResultJSON struct {
		Migrated          bool   `json:"migrated"`
		MigrationsVersion *int64 `json:"migrationsVersion,omitempty"`
		Error             string `json:"error,omitempty"`
	}
	versionCountJSON struct {
		Version *int64 `json:"version"`
		Count   int64  `json:"count"`
	}
	statsJSON struct {
		Total         int64              `json:"total"`
		Behind        int64              `json:"behind"`
		ByVersion     []versionCountJSON `json:"byVersion"`
		ByStatus      map[string]int64   `json:"byStatus"`
		LatestVersion int64              `json:"latestVersion"`
		Remaining     int64              `json:"remaining"`
	}
)

// TenantToJSON is the API form of a tenant: its URL redacted, and its
// password scrubbed from its last error too.
func TenantToJSON(t controlplane.Tenant) TenantJSON {
	return TenantJSON{
		ID:                t.ID,
		DatabaseURL:       t.RedactedURL(),
		Schema:            t.Schema,
		Labels:            labelsJSON(t.Labels),
		MigrationsVersion: t.MigrationsVersion,
		MigrationsStatus:  statusJSON(t.MigrationsStatus),
		LastError:         redact.String(t.LastError, t.DatabaseURL),
		CreatedAt:         t.CreatedAt,
		UpdatedAt:         t.UpdatedAt,
		DecryptError:      t.DecryptError,
	}
}

// labelsJSON is a tenant's labels for JSON: {} rather than null.
func labelsJSON(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// statusJSON is a status for JSON: null for a tenant never migrated.
func statusJSON(s controlplane.Status) *string {
	if s == "" {
		return nil
	}
	str := string(s)
	return &str
}

// neverMigratedKey is the byStatus key of tenants never migrated.
const neverMigratedKey = "NEVER_MIGRATED"

func statsToJSON(st controlplane.Stats, latest, remaining int64) statsJSON {
	out := statsJSON{
		Total:         st.Total,
		Behind:        st.Behind,
		ByVersion:     make([]versionCountJSON, len(st.ByVersion)),
		ByStatus:      make(map[string]int64, len(st.ByStatus)),
		LatestVersion: latest,
		Remaining:     remaining,
	}
	for i, vc := range st.ByVersion {
		out.ByVersion[i] = versionCountJSON{Version: vc.Version, Count: vc.Count}
	}
	for s, n := range st.ByStatus {
		key := string(s)
		if key == "" {
			key = neverMigratedKey
		}
		out.ByStatus[key] = n
	}
	return out
}
