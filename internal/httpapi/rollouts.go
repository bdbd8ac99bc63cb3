package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// The rollout routes of the admin API:
//
//	GET  /admin/rollouts              {"rollouts": [...]}, newest first (?limit=, at most 100)
//	POST /admin/rollouts              start the rollout to the latest version: 201 created,
//	                                  200 when it exists, 409 when no tenant is behind
//	GET  /admin/rollouts/{id}         one rollout
//	POST /admin/rollouts/{id}/resume  clear a halt: 200 rollout, 409 when not halted
//	POST /admin/rollouts/{id}/abort   stop it for good: 200 rollout, 409 when it has ended

func (a *admin) listRollouts(w http.ResponseWriter, r *http.Request) {
	_, limit, err := parsePage(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	if r.URL.Query().Get("limit") == "" {
		limit = 20
	}
	rs, err := a.svc.ListRollouts(r.Context(), min(limit, 100))
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	out := rolloutListJSON{Rollouts: make([]RolloutJSON, len(rs))}
	for i, ro := range rs {
		out.Rollouts[i] = RolloutToJSON(ro)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) startRollout(w http.ResponseWriter, r *http.Request) {
	ro, created, err := a.svc.StartRollout(r.Context(), "admin API")
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	if ro == nil {
		writeError(w, http.StatusConflict, "no tenant is behind version "+strconv.FormatInt(a.svc.Latest(), 10)+" (or a newer release's rollout is under way): nothing to roll out")
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, RolloutToJSON(ro))
}

func (a *admin) withRolloutID(h func(w http.ResponseWriter, r *http.Request, id int64)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id <= 0 {
			writeError(w, http.StatusBadRequest, "rollout id must be a positive integer")
			return
		}
		h(w, r, id)
	})
}

func (a *admin) getRollout(w http.ResponseWriter, r *http.Request, id int64) {
	ro, err := a.svc.GetRollout(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RolloutToJSON(ro))
}

func (a *admin) resumeRollout(w http.ResponseWriter, r *http.Request, id int64) {
	ro, err := a.svc.ResumeRollout(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RolloutToJSON(ro))
}

func (a *admin) abortRollout(w http.ResponseWriter, r *http.Request, id int64) {
	ro, err := a.svc.AbortRollout(r.Context(), id)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RolloutToJSON(ro))
}

// rolloutErrorStatus maps the errors of package rollouts.
func rolloutErrorStatus(err error) (int, string, bool) {
	switch {
	case errors.Is(err, rollouts.ErrNotFound):
		return http.StatusNotFound, "unknown rollout", true
	case errors.Is(err, rollouts.ErrInvalid):
		return http.StatusConflict, err.Error(), true
	}
	return 0, "", false
}

type (
	// RolloutJSON is a rollout as the admin API and the CLI's --json show
	// it.
	RolloutJSON struct {
		ID              int64              `json:"id"`
		TargetVersion   int64              `json:"targetVersion"`
		State           string             `json:"state"`
		HaltReason      string             `json:"haltReason"`
		CanarySelector  string             `json:"canarySelector"`
		HaltFailureRate float64            `json:"haltFailureRate"`
		Total           int64              `json:"total"`
		Completed       int64              `json:"completed"`
		Failed          int64              `json:"failed"`
		Pending         int64              `json:"pending"`
		Removed         int64              `json:"removed"`
		CurrentWave     int                `json:"currentWave"`
		Waves           []RolloutWaveJSON  `json:"waves"`
		StartedAt       time.Time          `json:"startedAt"`
		FinishedAt      *time.Time         `json:"finishedAt"`
		ETA             *time.Time         `json:"eta"`
		AvgDurationMS   int64              `json:"avgDurationMs"`
		FirstErrors     []RolloutErrorJSON `json:"firstErrors"`
	}
	// RolloutWaveJSON is one wave of a RolloutJSON.
	RolloutWaveJSON struct {
		Size      int64  `json:"size"`
		Completed int64  `json:"completed"`
		Failed    int64  `json:"failed"`
		Pending   int64  `json:"pending"`
		State     string `json:"state"`
	}
	// RolloutErrorJSON is a failed tenant of a RolloutJSON.
	RolloutErrorJSON struct {
		TenantID      string `json:"tenantId"`
		FailedVersion *int64 `json:"failedVersion"`
		Error         string `json:"error"`
	}
	rolloutListJSON struct {
		Rollouts []RolloutJSON `json:"rollouts"`
	}
)

// RolloutToJSON is the API form of a rollout.
func RolloutToJSON(r *rollouts.Rollout) RolloutJSON {
	out := RolloutJSON{
		ID: r.ID, TargetVersion: r.TargetVersion, State: string(r.State), HaltReason: r.HaltReason,
		CanarySelector: r.CanarySelector, HaltFailureRate: r.HaltFailureRate,
		Total: r.Total, Completed: r.Completed, Failed: r.Failed, Pending: r.Pending, Removed: r.Removed,
		CurrentWave: r.CurrentWave + 1, Waves: make([]RolloutWaveJSON, len(r.Waves)),
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, ETA: r.ETA, AvgDurationMS: r.AvgDuration.Milliseconds(),
		FirstErrors: make([]RolloutErrorJSON, len(r.FirstErrors)),
	}
	for i, w := range r.Waves {
		out.Waves[i] = RolloutWaveJSON{Size: w.Size, Completed: w.Completed, Failed: w.Failed, Pending: w.Pending, State: w.State}
	}
	for i, e := range r.FirstErrors {
		out.FirstErrors[i] = RolloutErrorJSON{TenantID: e.TenantID, Error: e.Error}
		if e.FailedVersion > 0 {
			v := e.FailedVersion
			out.FirstErrors[i].FailedVersion = &v
		}
	}
	return out
}
