package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"
)

// keyChecker checks admin API keys and the browser sessions they open (see
// session.go). Keys are stored as SHA-256 digests, so every comparison is of
// 32 bytes whatever the lengths of the keys, and a presented key is compared
// with every configured key, so the time taken says nothing about which key,
// if any, nearly matched.
type keyChecker struct {
	digests [][sha256.Size]byte
	// sessionSecrets[i] signs the sessions of key i.
	sessionSecrets [][]byte
	// crossOrigin guards the state-changing requests a session opens.
	crossOrigin *http.CrossOriginProtection
}

func newKeyChecker(keys []string) keyChecker {
	kc := keyChecker{crossOrigin: http.NewCrossOriginProtection()}
	for _, k := range keys {
		if k != "" {
			d := sha256.Sum256([]byte(k))
			kc.digests = append(kc.digests, d)
			kc.sessionSecrets = append(kc.sessionSecrets, sessionSecret(d))
		}
	}
	return kc
}

// valid reports whether key is one of the configured keys.
func (kc keyChecker) valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	match := 0
	for i := range kc.digests {
		match |= subtle.ConstantTimeCompare(d[:], kc.digests[i][:])
	}
	return match == 1
}

// adminKey returns the API key a request presents: the apikey header, else
// the token of "Authorization: Bearer TOKEN" (scheme case-insensitive). It
// returns "" when there is none.
func adminKey(h http.Header) string {
	if k := strings.TrimSpace(h.Get("apikey")); k != "" {
		return k
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// requireKey passes to next the requests that present a valid admin API key
// or, failing a key, a browser session cookie that opens the request (see
// session.go); it answers the others 401 (403 for a cross-origin request
// with a session), in JSON, except that a browser asking for a page without
// a key is redirected (303) to the login page. A key, when presented, is
// what counts: a wrong key is 401 whatever the cookie, and counts against
// the client's address in failures; an address with too many failures gets
// 429 with Retry-After for any key, right or wrong (see ratelimit.go). The
// key is never logged.
func requireKey(kc keyChecker, failures *failLimiter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, msg := http.StatusUnauthorized, ""
		key := adminKey(r.Header)
		switch {
		case len(kc.digests) == 0:
			msg = "the admin API is disabled: no admin API keys are configured"
		case key != "":
			// Refused before the key is compared: a right key does not
			// tell a guesser anything until the wait is over.
			if wait := failures.refused(r); wait > 0 {
				setLogError(r, errTooManyFailures)
				secs := setRetryAfter(w, wait)
				writeError(w, http.StatusTooManyRequests, tooManyFailures(secs))
				return
			}
			if kc.valid(key) {
				next.ServeHTTP(w, r)
				return
			}
			failures.fail(r)
			msg = "invalid API key"
		default:
			err := kc.checkSession(r, time.Now())
			if err == nil {
				next.ServeHTTP(w, r)
				return
			}
			msg = err.Error()
			var reqErr *requestError
			if errors.As(err, &reqErr) {
				status = reqErr.status
			}
		}
		if key == "" && status == http.StatusUnauthorized && wantsPage(r) {
			http.Redirect(w, r, loginPath, http.StatusSeeOther)
			return
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tenantmigrate admin"`)
		}
		writeError(w, status, msg)
	})
}
