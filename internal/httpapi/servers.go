package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// ServersService is the part of Service that shows and configures the
// database servers of the fleet; when Service implements it (the
// Orchestrator does), the admin API serves
//
//	GET /admin/servers             {"servers": [ServerJSON, ...]}
//	PUT /admin/servers/{server}    {"maxConcurrent": N|null}: 200 ServerJSON
type ServersService interface {
	ListServers(ctx context.Context) ([]tenanttype.Server, error)
	// SetServerMaxConcurrent sets (nil: removes) the cap of one server.
	SetServerMaxConcurrent(ctx context.Context, server string, n *int) error
}

// ServerJSON is a database server in the admin API and in status --json.
type ServerJSON struct {
	Server        string    `json:"server"`
	State         string    `json:"state"`
	Since         time.Time `json:"since"`
	Running       int       `json:"running"`
	Waiting       int       `json:"waiting"`
	Tenants       int       `json:"tenants"`
	MaxConcurrent int       `json:"maxConcurrent"`
	LastError     *string   `json:"lastError"`
}

// ServerToJSON is the JSON form of s.
func ServerToJSON(s tenanttype.Server) ServerJSON {
	j := ServerJSON{Server: s.Server, State: string(s.State), Since: s.Since.UTC(), Running: s.Running,
		Waiting: s.Waiting, Tenants: s.Tenants, MaxConcurrent: s.MaxConcurrent}
	if s.LastError != "" {
		j.LastError = &s.LastError
	}
	return j
}

// maxServerCap mirrors servers.MaxConcurrentLimit for the 400 message.
const maxServerCap = 1000

func (a *admin) mountServers(rt *router) {
	ss, ok := a.svc.(ServersService)
	if !ok {
		return
	}
	rt.handle("GET /admin/servers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := ss.ListServers(r.Context())
		if err != nil {
			writeServiceError(w, r, err)
			return
		}
		out := make([]ServerJSON, len(list))
		for i, s := range list {
			out[i] = ServerToJSON(s)
		}
		writeJSON(w, http.StatusOK, map[string]any{"servers": out})
	}))
	rt.handle("PUT /admin/servers/{server}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		server := r.PathValue("server")
		if err := validateServerName(server); err != nil {
			writeServiceError(w, r, err)
			return
		}
		var body struct {
			MaxConcurrent *int `json:"maxConcurrent"`
		}
		if err := decodeJSON(http.MaxBytesReader(w, r.Body, a.maxBody), &body); err != nil {
			writeServiceError(w, r, err)
			return
		}
		if body.MaxConcurrent != nil && (*body.MaxConcurrent < 1 || *body.MaxConcurrent > maxServerCap) {
			writeServiceError(w, r, badRequest("maxConcurrent must be from 1 to %d, or null for the default", maxServerCap))
			return
		}
		if err := ss.SetServerMaxConcurrent(r.Context(), server, body.MaxConcurrent); err != nil {
			writeServiceError(w, r, err)
			return
		}
		list, err := ss.ListServers(r.Context())
		if err != nil {
			writeServiceError(w, r, err)
			return
		}
		for _, s := range list {
			if s.Server == server {
				writeJSON(w, http.StatusOK, ServerToJSON(s))
				return
			}
		}
		writeServiceError(w, r, errors.New("server vanished after its update"))
	}))
}

// maxServerNameBytes bounds a server name: a "server" label's value (255
// characters, up to 1020 bytes) or a URL's host:port.
const maxServerNameBytes = 1024

// validateServerName accepts what servers.Of produces: a lower-case UTF-8
// name of 1 to maxServerNameBytes bytes (a "server" label may hold spaces
// and control characters), without NUL.
func validateServerName(s string) error {
	if s == "" || len(s) > maxServerNameBytes || !utf8.ValidString(s) {
		return badRequest("server must be 1 to %d bytes of UTF-8 text, e.g. db1.internal:5432", maxServerNameBytes)
	}
	if strings.ToLower(s) != s {
		return badRequest("server must be lower-case, as GET /admin/servers lists it")
	}
	if strings.IndexByte(s, 0) >= 0 {
		// No listed server has one (PostgreSQL text cannot hold it); a
		// "server" label may hold any other character, a tab included.
		return badRequest("server must not contain NUL")
	}
	return nil
}
