package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// keyChecker checks admin API keys. Keys are stored as SHA-256 digests, so
// every comparison is of 32 bytes whatever the lengths of the keys, and a
// presented key is compared with every configured key, so the time taken
// says nothing about which key, if any, nearly matched.
type keyChecker struct {
	digests [][sha256.Size]byte
}

func newKeyChecker(keys []string) keyChecker {
	var kc keyChecker
	for _, k := range keys {
		if k != "" {
			kc.digests = append(kc.digests, sha256.Sum256([]byte(k)))
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

// requireKey answers 401 to requests without a valid admin API key and
// passes the others to next. The key is never logged.
func requireKey(kc keyChecker, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg string
		switch key := adminKey(r.Header); {
		case len(kc.digests) == 0:
			msg = "the admin API is disabled: no admin API keys are configured"
		case key == "":
			msg = "missing API key: send it as \"apikey: KEY\" or \"Authorization: Bearer KEY\""
		case !kc.valid(key):
			msg = "invalid API key"
		default:
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="tenantmigrate admin"`)
		writeError(w, http.StatusUnauthorized, msg)
	})
}
