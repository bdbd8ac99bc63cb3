// Package httpapi is tenantmigrate's HTTP surface: the tenant gateway, the
// admin API, the health check and the metrics endpoint, behind one request
// logging middleware.
//
// Routing is by path, on any host:
//
//	/admin, /admin/...   admin API (API key required), see admin.go
//	/admin/              GET: the fleet page, HTML (see fleetpage.go)
//	/admin/login         GET: login form; POST: key -> session cookie (login.go)
//	/admin/logout        POST: clears the session cookie
//	/admin/riverui/...   River UI, when Config.RiverUI is set
//	/health              GET: 200 when the control plane answers, else 503
//	/metrics             GET: Config.Metrics (unauthenticated), 404 without it
//	everything else      tenant traffic, see gateway.go
//
// So a tenant application's own /admin, /health and /metrics paths are
// shadowed: they never reach it through this gateway.
//
// Every response this package writes itself is JSON, errors being
// {"error": "..."}, except the pages for browsers: the fleet page and the
// login form. Browsers log in once with the key and then carry a session
// cookie, which opens GET requests under /admin and everything under
// /admin/riverui/, but not the JSON admin API's state-changing methods
// (see session.go).
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// Service is what the HTTP layer needs from tenantmigrate;
// *tenantmigrate.Orchestrator implements it.
type Service interface {
	// MiddlewareWithErrorHandler resolves the tenant of a request, makes
	// sure it is migrated (answering 400, 404, 500 or 503 itself when it
	// cannot be served, and handing the error behind a 5xx to onError) and
	// passes the request to next with the tenant id in its context.
	MiddlewareWithErrorHandler(next http.Handler, onError func(r *http.Request, tenantID string, status int, err error)) http.Handler

	CreateTenant(ctx context.Context, t controlplane.Tenant) (controlplane.Tenant, error)
	UpsertTenant(ctx context.Context, t controlplane.Tenant) (controlplane.Tenant, bool, error)
	PatchTenant(ctx context.Context, id string, p controlplane.TenantPatch) (controlplane.Tenant, error)
	DeleteTenant(ctx context.Context, id string) error
	// ProvisionTenant creates a tenant with a new database cloned from the
	// template; DeprovisionTenant drops such a database and removes the
	// tenant (see the root package).
	ProvisionTenant(ctx context.Context, id string) (controlplane.Tenant, error)
	DeprovisionTenant(ctx context.Context, id string) error
	GetTenant(ctx context.Context, id string) (controlplane.Tenant, error)
	ListTenants(ctx context.Context, afterCursor int64, limit int) ([]controlplane.Tenant, int64, error)
	// ListTenantsMatching lists the tenants whose labels match a selector;
	// a bad selector is an error wrapping controlplane.ErrInvalid.
	ListTenantsMatching(ctx context.Context, selector string, afterCursor int64, limit int) ([]controlplane.Tenant, int64, error)

	TenantState(ctx context.Context, id string) (controlplane.TenantState, error)
	IsLatest(st controlplane.TenantState) bool
	MigrateTenant(ctx context.Context, id string) (int64, error)
	EnqueueTenants(ctx context.Context, ids ...string) (int, error)
	ScheduleFleet(ctx context.Context, includeStale bool) (int, error)
	Remaining(ctx context.Context) (int64, error)
	ListFailed(ctx context.Context, afterCursor int64, limit int) ([]controlplane.TenantState, int64, error)
	Stats(ctx context.Context) (controlplane.Stats, error)
	Latest() int64

	// TenantRuns pages through a tenant's run history, newest first.
	TenantRuns(ctx context.Context, id, cursor string, limit int) ([]history.Run, string, error)
	// RunDurations measures the recent per-tenant migration durations.
	RunDurations(ctx context.Context, since time.Time) (history.Durations, error)
	// The rollouts (internal/rollouts); see rollouts.go.
	StartRollout(ctx context.Context, createdBy string) (*rollouts.Rollout, bool, error)
	GetRollout(ctx context.Context, id int64) (*rollouts.Rollout, error)
	ListRollouts(ctx context.Context, limit int) ([]*rollouts.Rollout, error)
	CurrentRollout(ctx context.Context) (*rollouts.Rollout, error)
	ResumeRollout(ctx context.Context, id int64) (*rollouts.Rollout, error)
	AbortRollout(ctx context.Context, id int64) (*rollouts.Rollout, error)

	// Ping checks that the control plane answers.
	Ping(ctx context.Context) error
}

// Config configures the handler NewHandler returns.
type Config struct {
	// Service serves every request. Required.
	Service Service

	// TenantIDFromContext returns the tenant id Service.MiddlewareWithErrorHandler put in a
	// request context: tenantmigrate.TenantIDFromContext. Required. (This
	// package cannot import the root package, which sits above it.)
	TenantIDFromContext func(ctx context.Context) (string, bool)

	// AdminAPIKeys are the keys that open the admin API, sent as
	// "apikey: KEY" or "Authorization: Bearer KEY". Empty strings are
	// ignored. Defaults to none: the admin API is off and every /admin
	// request gets 401.
	AdminAPIKeys []string

	// Upstream is where tenant traffic is proxied, with an X-Tenant-Id
	// header naming the tenant. Defaults to none: the gateway answers
	// GET /tenant with the tenant's migration state and 404 otherwise.
	Upstream *url.URL

	// Logger receives one log line per request. Defaults to a logger that
	// discards.
	Logger *slog.Logger

	// Metrics is served at GET /metrics, without authentication, like most
	// exporters. Defaults to none: /metrics answers 404.
	Metrics http.Handler

	// AdminExtra mounts more handlers under /admin/, behind the API key.
	// Keys are http.ServeMux patterns whose path starts with /admin/, e.g.
	// "/admin/extra/". A browser session opens only their GET and HEAD
	// requests (every method under RiverUIPrefix). GET /admin/, /admin/login
	// and /admin/logout are taken. Defaults to none.
	AdminExtra map[string]http.Handler

	// RiverUI is River's job dashboard, served at RiverUIPrefix+"/" behind
	// the API key: a riverqueue.com/riverui Handler built with Prefix
	// RiverUIPrefix and started by the caller. A browser session opens all
	// of its requests, including the POSTs its pages send to retry or
	// cancel jobs (see session.go for why that is safe). Defaults to none:
	// /admin/riverui/ answers 404 and the fleet page does not link to it.
	RiverUI http.Handler

	// MaxBodyBytes bounds the body of admin API requests; a larger one gets
	// 413. Tenant traffic is not bounded here. Defaults to 1 MiB.
	MaxBodyBytes int64

	// AuthFailureLimit limits failed admin authentications (a wrong key in
	// the apikey or Authorization header or in the login form) per client
	// address, the IP of the connection: past the limit, requests with a
	// key and login attempts get 429 with Retry-After, even with a right
	// key. Defaults to a burst of 10 failures, then one more per second,
	// for at most 10,000 tracked addresses (see AuthFailureLimit).
	AuthFailureLimit AuthFailureLimit
}

// DefaultMaxBodyBytes is the default of Config.MaxBodyBytes.
const DefaultMaxBodyBytes = 1 << 20

// RiverUIPrefix is where Config.RiverUI is mounted; give it to River UI as
// its HandlerOpts.Prefix.
const RiverUIPrefix = "/admin/riverui"

// NewHandler returns the handler of the whole HTTP surface (see the package
// doc for the routes), wrapped in request logging and panic recovery.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Service == nil {
		return nil, errors.New("httpapi: Config.Service is required")
	}
	if cfg.TenantIDFromContext == nil {
		return nil, errors.New("httpapi: Config.TenantIDFromContext is required (use tenantmigrate.TenantIDFromContext)")
	}
	if u := cfg.Upstream; u != nil && ((u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		return nil, errors.New("httpapi: Config.Upstream must be an absolute http:// or https:// URL")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	authLimit, err := cfg.AuthFailureLimit.withDefaults()
	if err != nil {
		return nil, err
	}
	// One count of failures for the admin API and the login form.
	failures := newFailLimiter(authLimit)

	// The browser pages sit behind the key like the rest of the admin API.
	adminCfg := cfg
	adminCfg.AdminExtra = make(map[string]http.Handler, len(cfg.AdminExtra)+2)
	maps.Copy(adminCfg.AdminExtra, cfg.AdminExtra)
	own := map[string]http.Handler{"GET " + fleetPath + "{$}": &fleetPage{svc: cfg.Service, riverUI: cfg.RiverUI != nil}}
	if cfg.RiverUI != nil {
		own[RiverUIPrefix+"/"] = cfg.RiverUI
	}
	for pattern, h := range own {
		if _, taken := adminCfg.AdminExtra[pattern]; taken {
			return nil, fmt.Errorf("httpapi: AdminExtra pattern %q is taken by the fleet page or River UI", pattern)
		}
		adminCfg.AdminExtra[pattern] = h
	}
	admin, err := newAdminHandler(adminCfg, failures)
	if err != nil {
		return nil, err
	}
	control := newRouter()
	control.mux.Handle("/admin", admin)
	control.mux.Handle("/admin/", admin)
	lg := &login{kc: newKeyChecker(cfg.AdminAPIKeys), failures: failures}
	control.handle("GET "+loginPath, http.HandlerFunc(lg.form))
	control.handle("POST "+loginPath, http.HandlerFunc(lg.submit))
	control.handle("POST "+logoutPath, http.HandlerFunc(lg.logout))
	control.handle("GET /health", health(cfg.Service, logger))
	metrics := cfg.Metrics
	if metrics == nil {
		metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "metrics are not enabled")
		})
	}
	control.handle("GET /metrics", metrics)
	control.finish()

	// The gate's failure goes on the request's log line, its only line.
	tenant := cfg.Service.MiddlewareWithErrorHandler(newTenantHandler(cfg, logger), func(r *http.Request, id string, _ int, err error) {
		setLogTenant(r, id)
		setLogError(r, err)
	})

	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isControlPath(r.URL.Path) {
			control.mux.ServeHTTP(w, r)
			return
		}
		tenant.ServeHTTP(w, r)
	})
	return logRequests(logger, root), nil
}

// isControlPath reports whether path belongs to this server rather than to
// tenant traffic. Tenant paths are not matched through a ServeMux, so the
// upstream sees them as sent (no cleaning, no redirects).
func isControlPath(path string) bool {
	return path == "/admin" || strings.HasPrefix(path, "/admin/") ||
		path == "/health" || path == "/metrics"
}

// Server timeouts; see NewServer.
const (
	serverReadHeaderTimeout = 10 * time.Second
	serverReadTimeout       = 2 * time.Minute
	serverWriteTimeout      = 16 * time.Minute
	serverIdleTimeout       = 2 * time.Minute
	serverMaxHeaderBytes    = 64 << 10
)

// NewServer returns an http.Server for h on addr with timeouts set:
//
//   - ReadHeaderTimeout 10s and MaxHeaderBytes 64 KiB against slow or large
//     headers.
//   - ReadTimeout 2m for the whole request, body included (tenant uploads
//     through the gateway must finish in that time).
//   - WriteTimeout 16m: a request may wait for an on_request migration
//     (bounded only by an opt-in JobTimeout; the run itself goes on after
//     the response is cut) and then for the upstream; longer responses
//     (long streams through the gateway) are cut.
//   - IdleTimeout 2m between requests of a keep-alive connection.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: serverReadHeaderTimeout,
		ReadTimeout:       serverReadTimeout,
		WriteTimeout:      serverWriteTimeout,
		IdleTimeout:       serverIdleTimeout,
		MaxHeaderBytes:    serverMaxHeaderBytes,
	}
}

// healthTimeout bounds the control-plane ping of GET /health.
const healthTimeout = 2 * time.Second

// health answers 200 {"status":"ok"} when the control plane answers within
// healthTimeout, else 503.
func health(svc Service, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := svc.Ping(ctx); err != nil {
			setLogError(r, err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{
				"status": "unavailable",
				"error":  "control plane unavailable",
			})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// router is a ServeMux whose routes are registered with a method, and which
// answers JSON 405 (with Allow) for the other methods of a registered path
// and JSON 404 for unknown paths under /admin/.
type router struct {
	mux     *http.ServeMux
	methods map[string][]string // path pattern -> methods
	paths   []string            // in registration order
}

func newRouter() *router {
	return &router{mux: http.NewServeMux(), methods: make(map[string][]string)}
}

// handle registers h for pattern, which is "METHOD /path".
func (rt *router) handle(pattern string, h http.Handler) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		panic("httpapi: route without method: " + pattern)
	}
	if _, seen := rt.methods[path]; !seen {
		rt.paths = append(rt.paths, path)
	}
	rt.methods[path] = append(rt.methods[path], method)
	if method == http.MethodGet {
		rt.methods[path] = append(rt.methods[path], http.MethodHead)
	}
	rt.mux.Handle(pattern, h)
}

// finish registers the 405 handlers; call it after the last handle.
func (rt *router) finish() {
	for _, path := range rt.paths {
		allow := strings.Join(rt.methods[path], ", ")
		rt.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed: use %s", r.Method, allow))
		})
	}
}
