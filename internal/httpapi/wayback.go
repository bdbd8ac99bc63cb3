package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// WaybackService is the part of a Service for the fleet target and
// rollbacks. A Service that implements it (the root package's Orchestrator
// does) gets these admin routes:
//
//	GET    /admin/target             {"version", "pinned", "latestVersion", "updatedAt"}
//	PUT    /admin/target             {"version": V}: pin it; 400 below 0 or above latest
//	DELETE /admin/target             clear the pin
//	POST   /admin/rollbacks          {"to": V, "tenants": [...] | "all": true | "selector": "..." | "rollout": ID, "keepTarget": bool}
//	                                 ("to" optional with "rollout"):
//	                                 202 {"id", "to", "total", ...}; 409 when a version has no Down
//	GET    /admin/rollbacks/{id}     its progress; 404 unknown
type WaybackService interface {
	FleetTarget(ctx context.Context) (tenanttype.FleetTarget, error)
	SetTarget(ctx context.Context, version int64) (tenanttype.FleetTarget, error)
	ClearTarget(ctx context.Context) (tenanttype.FleetTarget, error)
	QueueRollbackRequest(ctx context.Context, req tenanttype.RollbackRequest) (tenanttype.RollbackStatus, error)
	RollbackProgress(ctx context.Context, id string) (tenanttype.RollbackStatus, bool, error)
}

// targetReporter is what the reports need to show a pinned target; the
// root package's Orchestrator implements it.
type targetReporter interface {
	Target() int64
	TargetPinned() bool
}

// targetOf is the target s reports against: its pin, or latest.
func targetOf(s Service) (target int64, pinned bool) {
	if tr, ok := s.(targetReporter); ok {
		return tr.Target(), tr.TargetPinned()
	}
	return s.Latest(), false
}

// addWaybackRoutes registers the routes of WaybackService when svc
// implements it.
func (a *admin) addWaybackRoutes(rt *router) {
	ws, ok := a.svc.(WaybackService)
	if !ok {
		return
	}
	w := &wayback{admin: a, svc: ws}
	rt.handle("GET /admin/target", http.HandlerFunc(w.getTarget))
	rt.handle("PUT /admin/target", http.HandlerFunc(w.putTarget))
	rt.handle("DELETE /admin/target", http.HandlerFunc(w.deleteTarget))
	rt.handle("POST /admin/rollbacks", http.HandlerFunc(w.postRollback))
	rt.handle("GET /admin/rollbacks/{id}", http.HandlerFunc(w.getRollback))
}

type wayback struct {
	*admin
	svc WaybackService
}

func (w *wayback) getTarget(rw http.ResponseWriter, r *http.Request) {
	t, err := w.svc.FleetTarget(r.Context())
	w.writeTarget(rw, r, t, err)
}

func (w *wayback) putTarget(rw http.ResponseWriter, r *http.Request) {
	var b struct {
		Version *int64 `json:"version"`
	}
	if err := decodeJSON(http.MaxBytesReader(rw, r.Body, w.maxBody), &b); err != nil {
		if errors.Is(err, errEmptyBody) {
			err = badRequest(`want a body {"version": V}`)
		}
		writeServiceError(rw, r, err)
		return
	}
	if b.Version == nil {
		writeError(rw, http.StatusBadRequest, `want {"version": V}; DELETE /admin/target clears the pin`)
		return
	}
	t, err := w.svc.SetTarget(r.Context(), *b.Version)
	w.writeTarget(rw, r, t, err)
}

func (w *wayback) deleteTarget(rw http.ResponseWriter, r *http.Request) {
	t, err := w.svc.ClearTarget(r.Context())
	w.writeTarget(rw, r, t, err)
}

func (w *wayback) writeTarget(rw http.ResponseWriter, r *http.Request, t tenanttype.FleetTarget, err error) {
	if err != nil {
		writeServiceError(rw, r, err)
		return
	}
	writeJSON(rw, http.StatusOK, t)
}

func (w *wayback) postRollback(rw http.ResponseWriter, r *http.Request) {
	var b struct {
		To         *int64   `json:"to"`
		Tenants    []string `json:"tenants"`
		All        bool     `json:"all"`
		Selector   string   `json:"selector"`
		Rollout    *int64   `json:"rollout"`
		KeepTarget bool     `json:"keepTarget"`
	}
	if err := decodeJSON(http.MaxBytesReader(rw, r.Body, w.maxBody), &b); err != nil {
		if errors.Is(err, errEmptyBody) {
			err = badRequest(`want a body {"to": V, "tenants": [...]}, {"to": V, "all": true}, {"to": V, "selector": "..."} or {"rollout": ID}`)
		}
		writeServiceError(rw, r, err)
		return
	}
	ways := 0
	for _, given := range []bool{len(b.Tenants) > 0, b.All, b.Selector != "", b.Rollout != nil} {
		if given {
			ways++
		}
	}
	switch {
	case b.Rollout != nil && *b.Rollout < 1:
		writeError(rw, http.StatusBadRequest, `"rollout" must be a rollout id (1 or more)`)
		return
	case b.To == nil && b.Rollout == nil:
		writeError(rw, http.StatusBadRequest, `"to" is required: the version to go back to`)
		return
	case b.To != nil && *b.To < 0:
		writeError(rw, http.StatusBadRequest, `"to" must be a version, 0 or more`)
		return
	case ways != 1:
		writeError(rw, http.StatusBadRequest, `give one of "tenants": [...], "all": true, "selector": "..." and "rollout": ID`)
		return
	}
	for _, id := range b.Tenants {
		if err := controlplane.ValidateTenantID(id); err != nil {
			writeError(rw, http.StatusBadRequest, err.Error())
			return
		}
	}
	req := tenanttype.RollbackRequest{To: -1, Tenants: b.Tenants, All: b.All, Selector: b.Selector, KeepTarget: b.KeepTarget}
	if b.To != nil {
		req.To = *b.To
	}
	if b.Rollout != nil {
		req.Rollout = *b.Rollout
	}
	st, err := w.svc.QueueRollbackRequest(r.Context(), req)
	switch {
	case errors.Is(err, migrator.ErrNoDown):
		writeError(rw, http.StatusConflict, err.Error()) // names files, nothing secret
		return
	case err != nil:
		writeServiceError(rw, r, err)
		return
	}
	writeJSON(rw, http.StatusAccepted, st)
}

func (w *wayback) getRollback(rw http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) == 0 || len(id) > 64 {
		writeError(rw, http.StatusBadRequest, "invalid rollback id")
		return
	}
	st, found, err := w.svc.RollbackProgress(r.Context(), id)
	switch {
	case err != nil:
		writeServiceError(rw, r, err)
	case !found:
		writeError(rw, http.StatusNotFound, "unknown rollback (or finished more than a day ago)")
	default:
		writeJSON(rw, http.StatusOK, st)
	}
}
