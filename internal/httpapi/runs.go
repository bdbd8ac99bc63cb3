package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/history"
)

// GET /admin/tenants/{id}/runs?cursor=&limit=: the tenant's run history,
// newest first, {"runs": [...], "nextCursor": "..."|null}. An unknown tenant
// is 404; a cursor the API did not hand out, or a limit outside 1 to
// history.MaxPageSize, is 400.

// RunJSON is a run of the history as the admin API and the CLI's --json
// show it.
type RunJSON struct {
	ID          int64     `json:"id"`
	TenantID    string    `json:"tenantId"`
	RolloutID   *string   `json:"rolloutId"`
	FromVersion *int64    `json:"fromVersion"`
	ToVersion   *int64    `json:"toVersion"`
	Direction   string    `json:"direction"`
	Result      string    `json:"result"`
	Error       string    `json:"error"`
	Attempt     int       `json:"attempt"`
	StartedAt   time.Time `json:"startedAt"`
	FinishedAt  time.Time `json:"finishedAt"`
	DurationMS  int64     `json:"durationMs"`
	Process     string    `json:"process"`
	Trigger     string    `json:"trigger"`
}

// RunToJSON is the API form of a run. Its error was masked when it was
// recorded.
func RunToJSON(r history.Run) RunJSON {
	out := RunJSON{
		ID:          r.ID,
		TenantID:    r.TenantID,
		FromVersion: r.FromVersion,
		ToVersion:   r.ToVersion,
		Direction:   r.Direction,
		Result:      string(r.Result),
		Error:       r.Error,
		Attempt:     r.Attempt,
		StartedAt:   r.StartedAt,
		FinishedAt:  r.FinishedAt,
		DurationMS:  r.Duration().Milliseconds(),
		Process:     r.Process,
		Trigger:     r.Trigger,
	}
	if r.RolloutID != "" {
		out.RolloutID = &r.RolloutID
	}
	return out
}

type runListJSON struct {
	Runs       []RunJSON `json:"runs"`
	NextCursor *string   `json:"nextCursor"`
}

func (a *admin) listRuns(w http.ResponseWriter, r *http.Request, id string) {
	cursor, limit, err := parseRunsPage(r.URL.RawQuery)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	runs, next, err := a.svc.TenantRuns(r.Context(), id, cursor, limit)
	if err != nil {
		writeServiceError(w, r, err)
		return
	}
	out := runListJSON{Runs: make([]RunJSON, len(runs))}
	for i, run := range runs {
		out.Runs[i] = RunToJSON(run)
	}
	if next != "" {
		out.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, out)
}

// parseRunsPage parses the cursor (opaque, "" for the first page; the
// history checks it) and limit (1 to history.MaxPageSize, default
// history.DefaultPageSize) of GET /admin/tenants/{id}/runs.
func parseRunsPage(rawQuery string) (cursor string, limit int, err error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", 0, badRequest("malformed query string")
	}
	if cursor, _, err = singleParam(q, "cursor"); err != nil {
		return "", 0, err
	}
	limit = history.DefaultPageSize
	if s, ok, err := singleParam(q, "limit"); err != nil {
		return "", 0, err
	} else if ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > history.MaxPageSize {
			return "", 0, badRequest("limit must be an integer from 1 to %d", history.MaxPageSize)
		}
		limit = n
	}
	return cursor, limit, nil
}
