package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// writeJSON writes v as the JSON body of a response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

type errorBody struct {
	Error string `json:"error"`
}

// requestError is bad client input: it becomes a 4xx response with its
// message, which must not contain secrets.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes the one JSON value of body into dst, strictly: unknown
// fields, wrong types and trailing data are errors. An empty body is
// errEmptyBody. Every error is a *requestError (413 for a body over the
// http.MaxBytesReader limit, 400 otherwise).
func decodeJSON(body io.Reader, dst any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return errEmptyBody
		}
		return jsonError(err)
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return badRequest("invalid JSON body: trailing data after the first value")
	default:
		return jsonError(err)
	}
}

var errEmptyBody = badRequest("empty body: send a JSON object")

// jsonError turns a decoding error into a *requestError with a message that
// names the problem without quoting the body.
func jsonError(err error) *requestError {
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return &requestError{
			status: http.StatusRequestEntityTooLarge,
			msg:    fmt.Sprintf("request body larger than %d bytes", maxErr.Limit),
		}
	case errors.As(err, &syntaxErr):
		return badRequest("invalid JSON body at byte %d", syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid JSON body: it ends early")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" || typeErr.Type == nil {
			return badRequest("invalid JSON body: want an object, got %s", typeErr.Value)
		}
		return badRequest("invalid JSON body: field %s must be a %s, got %s", shorten(typeErr.Field), jsonTypeName(typeErr.Type.String()), typeErr.Value)
	default:
		// Unknown fields ("json: unknown field \"x\"") and the rest: the
		// message names the field, not its value.
		return badRequest("invalid JSON body: %s", shorten(err.Error()))
	}
}

// shorten cuts s, which may come from the request, to a length fit for an
// error message.
func shorten(s string) string {
	const maxLen = 100
	if len(s) <= maxLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxLen], "") + "..."
}

func jsonTypeName(goType string) string {
	switch goType {
	case "string", "*string":
		return "string"
	case "bool", "*bool":
		return "boolean"
	}
	return goType
}

// tenantBody is the body of POST and PUT /admin/tenants/{id}.
type tenantBody struct {
	DatabaseURL string            `json:"databaseUrl"`
	Schema      string            `json:"schema"`
	Labels      map[string]string `json:"labels"`
	// Provision (POST only) creates the tenant's database from the template
	// instead of registering one: no databaseUrl, no schema.
	Provision bool `json:"provision"`
}

// decodeTenant decodes and validates a tenantBody for tenant id, without
// provision (PUT).
func decodeTenant(body io.Reader, id string) (controlplane.Tenant, error) {
	t, provision, err := decodeCreate(body, id)
	if err == nil && provision {
		return controlplane.Tenant{}, badRequest("provision is only for POST /admin/tenants/{id}, which creates the tenant")
	}
	return t, err
}

// decodeCreate decodes and validates a tenantBody for tenant id (POST): a
// tenant to register, or provision true alone.
func decodeCreate(body io.Reader, id string) (controlplane.Tenant, bool, error) {
	var b tenantBody
	if err := decodeJSON(body, &b); err != nil {
		return controlplane.Tenant{}, false, err
	}
	if b.Provision {
		if b.DatabaseURL != "" || b.Schema != "" {
			return controlplane.Tenant{}, false, badRequest("provision creates the tenant's database: send it without databaseUrl and schema")
		}
		if len(b.Labels) > 0 {
			return controlplane.Tenant{}, false, badRequest("provision sets no labels: send them afterwards with PATCH /admin/tenants/{id}")
		}
		return controlplane.Tenant{ID: id}, true, nil
	}
	if b.DatabaseURL == "" {
		return controlplane.Tenant{}, false, badRequest("databaseUrl is required (or provision: true, to create the tenant's database)")
	}
	if err := validateURL(b.DatabaseURL); err != nil {
		return controlplane.Tenant{}, false, err
	}
	if err := validateSchema(b.Schema); err != nil {
		return controlplane.Tenant{}, false, err
	}
	if err := controlplane.ValidateLabels(b.Labels); err != nil {
		return controlplane.Tenant{}, false, badRequest("%v", err)
	}
	if b.Labels == nil {
		// PUT replaces the tenant: no labels in the body, none kept.
		b.Labels = map[string]string{}
	}
	return controlplane.Tenant{ID: id, DatabaseURL: b.DatabaseURL, Schema: b.Schema, Labels: b.Labels}, false, nil
}

// parseDropDatabase reads ?dropDatabase= of DELETE /admin/tenants/{id}.
func parseDropDatabase(rawQuery string) (bool, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false, badRequest("malformed query string")
	}
	s, ok, err := singleParam(q, "dropDatabase")
	if err != nil || !ok {
		return false, err
	}
	drop, perr := strconv.ParseBool(s)
	if perr != nil {
		return false, badRequest("dropDatabase must be true or false")
	}
	return drop, nil
}

// patchBody is the body of PATCH /admin/tenants/{id}; absent (or null)
// fields are left as they are.
type patchBody struct {
	DatabaseURL *string            `json:"databaseUrl"`
	Schema      *string            `json:"schema"`
	Labels      map[string]*string `json:"labels"`
}

// decodePatch decodes and validates a patchBody.
func decodePatch(body io.Reader) (controlplane.TenantPatch, error) {
	var b patchBody
	if err := decodeJSON(body, &b); err != nil {
		return controlplane.TenantPatch{}, err
	}
	if b.DatabaseURL == nil && b.Schema == nil && b.Labels == nil {
		return controlplane.TenantPatch{}, badRequest("nothing to change: set databaseUrl, schema and/or labels")
	}
	for _, k := range slices.Sorted(maps.Keys(b.Labels)) {
		m := map[string]string{k: ""}
		if v := b.Labels[k]; v != nil {
			m[k] = *v
		}
		if err := controlplane.ValidateLabels(m); err != nil {
			return controlplane.TenantPatch{}, badRequest("%v", err)
		}
	}
	if b.DatabaseURL != nil {
		if err := validateURL(*b.DatabaseURL); err != nil {
			return controlplane.TenantPatch{}, err
		}
	}
	if b.Schema != nil {
		if err := validateSchema(*b.Schema); err != nil {
			return controlplane.TenantPatch{}, err
		}
	}
	return controlplane.TenantPatch{DatabaseURL: b.DatabaseURL, Schema: b.Schema, Labels: b.Labels}, nil
}

// validateURL checks a tenant database URL; the error never contains its
// password (ValidateDatabaseURL redacts).
func validateURL(u string) error {
	if err := controlplane.ValidateDatabaseURL(u); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// validateSchema checks a tenant schema; "" (database-per-tenant) is valid.
func validateSchema(s string) error {
	if s == "" {
		return nil
	}
	if err := controlplane.ValidateSchemaName(s); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// fleetBody is the optional body of POST /admin/migrations/fleet.
type fleetBody struct {
	IncludeStale bool `json:"includeStale"`
}

// decodeFleet decodes an optional fleetBody: an empty body is the zero value.
func decodeFleet(body io.Reader) (fleetBody, error) {
	var b fleetBody
	if err := decodeJSON(body, &b); err != nil && !errors.Is(err, errEmptyBody) {
		return fleetBody{}, err
	}
	return b, nil
}

// Page sizes of the list endpoints.
const (
	defaultLimit = controlplane.DefaultPageSize
	maxLimit     = 1000
)

// parsePage parses the cursor and limit query parameters of a raw query
// string: cursor defaults to 0 (the first page) and must be a non-negative
// integer; limit defaults to defaultLimit and must be 1 to maxLimit.
func parsePage(rawQuery string) (cursor int64, limit int, err error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return 0, 0, badRequest("malformed query string")
	}
	limit = defaultLimit
	if s, ok, err := singleParam(q, "cursor"); err != nil {
		return 0, 0, err
	} else if ok {
		if cursor, err = strconv.ParseInt(s, 10, 64); err != nil || cursor < 0 {
			return 0, 0, badRequest("cursor must be a non-negative integer (the nextCursor of the previous page)")
		}
	}
	if s, ok, err := singleParam(q, "limit"); err != nil {
		return 0, 0, err
	} else if ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return 0, 0, badRequest("limit must be an integer from 1 to %d", maxLimit)
		}
		limit = n
	}
	return cursor, limit, nil
}

// parseSelector returns the selector query parameter of a raw query string
// ("" when absent); the Service validates it.
func parseSelector(rawQuery string) (string, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", badRequest("malformed query string")
	}
	s, _, err := singleParam(q, "selector")
	return s, err
}

// parseAsync parses the async query parameter of POST
// /admin/tenants/{id}/migrations; absent is false.
func parseAsync(rawQuery string) (bool, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false, badRequest("malformed query string")
	}
	s, ok, err := singleParam(q, "async")
	if err != nil || !ok {
		return false, err
	}
	async, perr := strconv.ParseBool(s)
	if perr != nil {
		return false, badRequest("async must be true or false")
	}
	return async, nil
}

// singleParam returns the value of a query parameter that may be given at
// most once; an empty value counts as absent.
func singleParam(q url.Values, name string) (string, bool, error) {
	vs := q[name]
	switch {
	case len(vs) == 0:
		return "", false, nil
	case len(vs) > 1:
		return "", false, badRequest("%s given more than once", name)
	case vs[0] == "":
		return "", false, nil
	}
	return vs[0], true, nil
}

// nextCursor is the JSON form of a next-page cursor: null on the last page.
func nextCursor(c int64) *int64 {
	if c == 0 {
		return nil
	}
	return &c
}
