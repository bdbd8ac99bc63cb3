package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Login for browsers, which cannot send the apikey header from a link:
//
//	GET  /admin/login    the login form
//	POST /admin/login    form field "key": a valid admin API key sets the
//	                     session cookie (see session.go) and redirects (303)
//	                     to /admin/; a wrong one is 401 with the form again;
//	                     too many wrong ones from the client's address, 429
//	                     with Retry-After and the form (see ratelimit.go)
//	POST /admin/logout   clears the cookie and redirects (303) to the form
//
// These routes need no key. The key travels in the POST body, never in a
// URL, which would leave it in logs and browser history.
const (
	loginPath  = "/admin/login"
	logoutPath = "/admin/logout"
	// fleetPath is where a login lands.
	fleetPath = "/admin/"
	// maxLoginBody bounds the login form: one key.
	maxLoginBody = 16 << 10
)

// login serves the login routes.
type login struct {
	kc keyChecker
	// failures counts wrong keys, shared with the admin API.
	failures *failLimiter
}

// loginPage is the data of the "login" template.
type loginPage struct {
	pageFrame
	Disabled     bool
	Error        string
	SessionHours int
}

func (l *login) page(errMsg string) loginPage {
	return loginPage{
		pageFrame:    pageFrame{Title: "Log in"},
		Disabled:     len(l.kc.digests) == 0,
		Error:        errMsg,
		SessionHours: int(sessionMaxAge / time.Hour),
	}
}

// form serves GET /admin/login.
func (l *login) form(w http.ResponseWriter, r *http.Request) {
	renderPage(w, r, http.StatusOK, "login", l.page(""))
}

// submit serves POST /admin/login.
func (l *login) submit(w http.ResponseWriter, r *http.Request) {
	// A login form posted from another site would log the browser in with
	// the other site's key (login CSRF).
	if err := l.kc.crossOrigin.Check(r); err != nil {
		setLogError(r, errors.New("admin login: cross-origin request refused"))
		renderPage(w, r, http.StatusForbidden, "login", l.page("Cross-origin login refused."))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		renderPage(w, r, http.StatusBadRequest, "login", l.page("The form could not be read."))
		return
	}
	if len(l.kc.digests) == 0 {
		renderPage(w, r, http.StatusUnauthorized, "login", l.page(""))
		return
	}
	// Too many wrong keys from this address: refused before the key is
	// compared, so a right key tells a guesser nothing until the wait is
	// over.
	if wait := l.failures.refused(r); wait > 0 {
		setLogError(r, errTooManyFailures)
		secs := setRetryAfter(w, wait)
		renderPage(w, r, http.StatusTooManyRequests, "login",
			l.page(fmt.Sprintf("Too many failed attempts from your address. Try again in %s.", plural(secs, "second"))))
		return
	}
	// valid takes the same time for every key, right or wrong (see
	// keyChecker).
	key := strings.TrimSpace(r.PostForm.Get("key"))
	if !l.kc.valid(key) {
		// An empty form guesses nothing; it does not count.
		if key != "" {
			l.failures.fail(r)
		}
		setLogError(r, errors.New("admin login: invalid key"))
		renderPage(w, r, http.StatusUnauthorized, "login", l.page("Invalid key."))
		return
	}
	http.SetCookie(w, sessionCookie(r, newSessionToken(key, time.Now())))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, fleetPath, http.StatusSeeOther)
}

// logout serves POST /admin/logout. It needs no session: clearing a cookie
// is harmless, and SameSite=Strict keeps other sites from posting it with
// the cookie anyway.
func (l *login) logout(w http.ResponseWriter, r *http.Request) {
	if err := l.kc.crossOrigin.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	http.SetCookie(w, sessionCookie(r, ""))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, loginPath, http.StatusSeeOther)
}

// plural returns "1 second", "2 seconds" and so on.
func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
