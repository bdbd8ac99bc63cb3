package httpapi

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"strings"
)

// The admin pages for browsers (fleetpage.go, login.go) are server-rendered
// with html/template, which escapes every value for its context: tenant ids
// and migration errors are user data.

//go:embed pages/*.html
var pageFiles embed.FS

// pageTemplates holds the templates of pages/; parsed once, read-only.
var pageTemplates = template.Must(template.ParseFS(pageFiles, "pages/*.html"))

// pageCSP lets a page load nothing: no scripts, no external styles, images or
// fonts; only its own inline styles, and forms that post to this server.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pageFrame is what the "head" template reads; every page's data embeds it.
type pageFrame struct {
	Title string
	// Refresh, when not 0, reloads the page every Refresh seconds.
	Refresh int
}

// errorPage is the data of the "error" template.
type errorPage struct {
	pageFrame
	Error string
}

// renderPage writes template name with data as an HTML response with status.
// It renders into a buffer first, so a template error is a clean 500.
func renderPage(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		setLogError(r, err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// wantsPage reports whether r is a browser asking for a page: a GET or HEAD
// that accepts text/html. Scripts (curl's "*/*", JSON clients) do not.
func wantsPage(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		mediaType, _, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(mediaType), "text/html") {
			return true
		}
	}
	return false
}
