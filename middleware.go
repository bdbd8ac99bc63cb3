package tenantmigrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

type tenantIDKey struct{}

// TenantIDFromContext returns the tenant id Middleware put in the request
// context.
func TenantIDFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(tenantIDKey{}).(string)
	return id, ok
}

// TenantID returns the tenant id a request is for, or "" when it names none:
// Config.TenantFromRequest when set, otherwise the first group of
// Config.TenantHostRegexp matched against X-Forwarded-Host (its first value),
// else Host. An id that is not a valid tenant id gives "".
func (o *Orchestrator) TenantID(r *http.Request) string {
	if f := o.cfg.TenantFromRequest; f != nil {
		return validID(f(r))
	}
	return validID(TenantFromHost(o.hostRE, requestHost(r)))
}

func validID(id string) string {
	if controlplane.ValidateTenantID(id) != nil {
		return ""
	}
	return id
}

// requestHost is the host a client asked for: X-Forwarded-Host's first value
// when a proxy set it, else Host.
func requestHost(r *http.Request) string {
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
		host, _, _ := strings.Cut(fh, ",")
		return strings.TrimSpace(host)
	}
	return r.Host
}

// TenantFromHost returns the first group of re matched against host (lower
// cased), or "" when it does not match.
func TenantFromHost(re interface {
	FindStringSubmatch(string) []string
}, host string) string {
	if len(host) > 255 {
		return ""
	}
	m := re.FindStringSubmatch(strings.ToLower(host))
	if len(m) < 2 {
		return ""
	}
	return m[1]
}

// Middleware gates tenant traffic: it finds the request's tenant (TenantID),
// calls EnsureMigrated, and passes the request to next with the tenant id in
// its context (TenantIDFromContext). It answers with a JSON error itself:
// 400 when the request names no tenant, 404 for an unknown tenant, 500 when
// the tenant's migration failed, 503 when the control plane cannot be read,
// 503 {"error", "rollout": ID} with Retry-After when the tenant needs a
// run that a halted rollout refuses (on_request), and 503 with Retry-After
// when the tenant's run waited Limits.InlineServerWait for a slot of its
// full database server (ErrServerFull) or its server is DOWN
// (ErrServerDown).
// The error behind a 5xx is logged, once, at error level, with the tenant id.
func (o *Orchestrator) Middleware(next http.Handler) http.Handler {
	return o.MiddlewareWithErrorHandler(next, func(r *http.Request, tenantID string, status int, err error) {
		o.logger.ErrorContext(r.Context(), "tenant gate failed", "tenant_id", tenantID, "status", status, "err", err)
	})
}

// MiddlewareWithErrorHandler is Middleware that hands the error behind each
// 5xx answer to onError instead of logging it, for a server that logs its
// requests itself and puts the error on the request's line (tenantmigrate
// serve does): a failure is then logged once, not once per layer.
func (o *Orchestrator) MiddlewareWithErrorHandler(next http.Handler, onError func(r *http.Request, tenantID string, status int, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := o.TenantID(r)
		if id == "" {
			writeJSONError(w, http.StatusBadRequest, "no tenant in the request host")
			return
		}
		if err := o.EnsureMigrated(r.Context(), id); err != nil {
			if h, ok := isHalted(err); ok {
				// The halt was logged once, when it happened; each request
				// it turns away is not an error of its own.
				writeHalted(w, h)
				return
			}
			if errors.Is(err, ErrServerFull) {
				// Load shed, not a failure: nothing ran, nothing is
				// recorded, and the client is told when to come back.
				w.Header().Set("Retry-After", strconv.Itoa(ServerFullRetryAfter))
				writeJSONError(w, http.StatusServiceUnavailable, "the tenant's database server is busy with other migrations; try again later")
				return
			}
			status, msg := gateErrorStatus(err)
			if errors.Is(err, ErrServerDown) {
				w.Header().Set("Retry-After", strconv.Itoa(o.downRetryAfter()))
			}
			if status >= 500 && onError != nil {
				onError(r, id, status, err)
			}
			writeJSONError(w, status, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tenantIDKey{}, id)))
	})
}

func gateErrorStatus(err error) (int, string) {
	var merr *MigrationError
	switch {
	case errors.Is(err, ErrTenantNotFound):
		return http.StatusNotFound, "unknown tenant"
	case errors.As(err, &merr):
		// Tenant traffic is anonymous: name the tenant and the failed
		// migration, not the database's error (the admin API has it).
		if merr.FailedVersion != 0 {
			return http.StatusInternalServerError, fmt.Sprintf("migrate tenant %s: migration %d failed", merr.TenantID, merr.FailedVersion)
		}
		return http.StatusInternalServerError, fmt.Sprintf("migrate tenant %s: migration failed", merr.TenantID)
	case errors.Is(err, ErrServerDown):
		return http.StatusServiceUnavailable, "the tenant's database server is down"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request ended before the tenant was ready"
	default:
		return http.StatusServiceUnavailable, "control plane unavailable"
	}
}

// HaltedRetryAfter is the Retry-After (seconds) of the 503 a request gets
// for a tenant behind a halted rollout.
const HaltedRetryAfter = 60

// ServerFullRetryAfter is the Retry-After (seconds) of the 503 a request
// gets when its tenant's database server stayed full for
// Limits.InlineServerWait (ErrServerFull): a slot frees when one of the
// server's migrations ends.
const ServerFullRetryAfter = 2

// downRetryAfter is the Retry-After (seconds) of the 503 a request gets
// when its tenant's database server is DOWN: the probe interval, after
// which the server may be UP again.
func (o *Orchestrator) downRetryAfter() int {
	return max(1, int((o.servers.ProbeInterval()+time.Second-1)/time.Second))
}

// writeHalted answers a request for a tenant the halted rollout h keeps
// behind: 503 {"error", "rollout"} with Retry-After.
func writeHalted(w http.ResponseWriter, h *RolloutHaltedError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", strconv.Itoa(HaltedRetryAfter))
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error":   fmt.Sprintf("tenant not migrated: rollout %d to version %d is halted", h.RolloutID, h.TargetVersion),
		"rollout": h.RolloutID,
	})
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
