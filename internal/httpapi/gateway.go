package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"
)

// tenantIDHeader names the tenant of a request proxied upstream. A value
// sent by the client is always removed first.
const tenantIDHeader = "X-Tenant-Id"

// newTenantHandler returns the handler of tenant traffic, which runs after
// Service.MiddlewareWithErrorHandler has resolved and gated the tenant: the reverse proxy to
// Config.Upstream, or without one the tenant info endpoint.
func newTenantHandler(cfg Config, logger *slog.Logger) http.Handler {
	tenantID := cfg.TenantIDFromContext
	var next http.Handler
	if cfg.Upstream != nil {
		next = newProxy(cfg, logger)
	} else {
		next = tenantInfo(cfg.Service, tenantID)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := tenantID(r.Context())
		if !ok || id == "" {
			// Service.MiddlewareWithErrorHandler passed a request without a tenant: a
			// wiring mistake (TenantIDFromContext of another package?).
			setLogError(r, errors.New("no tenant id in the request context after Service.MiddlewareWithErrorHandler"))
			writeError(w, http.StatusInternalServerError, "internal error")
			return
		}
		setLogTenant(r, id)
		next.ServeHTTP(w, r)
	})
}

// newProxy returns a reverse proxy to cfg.Upstream that sets X-Forwarded-*
// and X-Tenant-Id, and answers 502 JSON when the upstream cannot be reached.
// The outbound Host is the upstream's; the client's is in X-Forwarded-Host.
func newProxy(cfg Config, logger *slog.Logger) http.Handler {
	upstream := cfg.Upstream
	tenantID := cfg.TenantIDFromContext
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
			// The tenant was resolved from X-Forwarded-Host's first value
			// when the client sent one (tenantmigrate.Orchestrator.TenantID):
			// tell the upstream that host, not the connection's Host.
			if fh := pr.In.Header.Get("X-Forwarded-Host"); fh != "" {
				host, _, _ := strings.Cut(fh, ",")
				pr.Out.Header.Set("X-Forwarded-Host", strings.TrimSpace(host))
			}
			// Drop the client's spellings of the headers set here that
			// CGI-style servers (WSGI, Rack, PHP) fold into the same
			// HTTP_X_TENANT_ID variable: X_Tenant_Id and the like.
			for k := range pr.Out.Header {
				if strings.ContainsRune(k, '_') {
					switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
					case "x-tenant-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
						delete(pr.Out.Header, k)
					}
				}
			}
			pr.Out.Header.Del(tenantIDHeader)
			if id, ok := tenantID(pr.In.Context()); ok {
				pr.Out.Header.Set(tenantIDHeader, id)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := http.StatusBadGateway, "upstream unavailable"
			if errors.Is(err, context.Canceled) {
				// The client went away; nobody reads this answer. 499 is
				// nginx's code for it, and keeps the log line at warn.
				status, msg = 499, "client closed the request"
			}
			setLogError(r, err)
			writeError(w, status, msg)
		},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// tenantInfo answers GET /tenant with the tenant's migration state and 404
// for every other path.
func tenantInfo(svc Service, tenantID func(context.Context) (string, bool)) http.Handler {
	rt := newRouter()
	rt.handle("GET /tenant", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := tenantID(r.Context())
		st, err := svc.TenantState(r.Context(), id)
		if err != nil {
			writeServiceError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, tenantInfoJSON{
			TenantID:          id,
			MigrationsVersion: st.MigrationsVersion,
			MigrationsStatus:  statusJSON(st.MigrationsStatus),
			IsLatest:          svc.IsLatest(st),
		})
	}))
	rt.finish()
	rt.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not found: without an upstream, the gateway serves only GET /tenant")
	})
	return rt.mux
}

type tenantInfoJSON struct {
	TenantID          string  `json:"tenantId"`
	MigrationsVersion *int64  `json:"migrationsVersion"`
	MigrationsStatus  *string `json:"migrationsStatus"`
	IsLatest          bool    `json:"isLatest"`
}
