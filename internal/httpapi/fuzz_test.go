package httpapi

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// The fuzz targets check the parsers of outside input: no panic, every
// error a 4xx *requestError, and what they accept is valid. Seed corpora are
// in testdata/fuzz/.

func FuzzDecodeTenant(f *testing.F) {
	for _, s := range []string{
		`{"databaseUrl": "postgres://app:pw@db:5432/acme", "schema": "acme"}`,
		`{"databaseUrl": "postgres://h/db"}`,
		`{"databaseUrl": 5}`,
		`{"databaseUrl": "postgres://h/db"} {}`,
		`{"schema": null}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add(s, int64(DefaultMaxBodyBytes))
	}
	f.Add(`{"databaseUrl": "postgres://h/db"}`, int64(8))
	f.Fuzz(func(t *testing.T, body string, limit int64) {
		if limit <= 0 {
			limit = DefaultMaxBodyBytes
		}
		rd := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(body)), limit)
		tenant, err := decodeTenant(rd, "acme")
		if err != nil {
			checkRequestError(t, err)
		} else {
			if controlplane.ValidateDatabaseURL(tenant.DatabaseURL) != nil {
				t.Fatalf("accepted an invalid URL")
			}
			if tenant.Schema != "" && controlplane.ValidateSchemaName(tenant.Schema) != nil {
				t.Fatalf("accepted an invalid schema %q", tenant.Schema)
			}
			if int64(len(body)) > limit {
				t.Fatalf("accepted a body of %d bytes over the limit %d", len(body), limit)
			}
		}

		patch, err := decodePatch(strings.NewReader(body))
		if err != nil {
			checkRequestError(t, err)
		} else if patch.DatabaseURL == nil && patch.Schema == nil {
			t.Fatalf("accepted an empty patch")
		}

		if _, err := decodeFleet(strings.NewReader(body)); err != nil {
			checkRequestError(t, err)
		}
	})
}

func FuzzParsePage(f *testing.F) {
	for _, s := range []string{
		"", "cursor=0&limit=100", "cursor=42", "limit=1000", "limit=1001", "limit=0",
		"cursor=-1", "cursor=abc", "limit=1&limit=2", "cursor=%zz", "cursor=1;limit=2",
		"cursor=99999999999999999999", "limit=+5", "async=true",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		cursor, limit, err := parsePage(rawQuery)
		if err != nil {
			checkRequestError(t, err)
		} else if cursor < 0 || limit < 1 || limit > maxLimit {
			t.Fatalf("parsePage(%q) = %d, %d", rawQuery, cursor, limit)
		}
		if _, err := parseAsync(rawQuery); err != nil {
			checkRequestError(t, err)
		}
	})
}

func FuzzAdminKey(f *testing.F) {
	for _, s := range [][2]string{
		{"k1", ""},
		{"", "Bearer k1"},
		{"", "bearer  k1 "},
		{"", "Basic k1"},
		{"", "Bearer"},
		{"wrong", "Bearer k1"},
		{" ", "Bearer "},
	} {
		f.Add(s[0], s[1])
	}
	kc := newKeyChecker([]string{"k1", "", "a-much-longer-second-key-0123456789"})
	f.Fuzz(func(t *testing.T, apikey, authorization string) {
		h := http.Header{}
		h.Set("apikey", apikey)
		h.Set("Authorization", authorization)
		key := adminKey(h)
		if key != strings.TrimSpace(key) {
			t.Fatalf("adminKey returned %q with surrounding space", key)
		}
		if key != "" && !strings.Contains(apikey+authorization, key) {
			t.Fatalf("adminKey returned %q, which is in neither header", key)
		}
		want := key == "k1" || key == "a-much-longer-second-key-0123456789"
		if got := kc.valid(key); got != want {
			t.Fatalf("valid(%q) = %v, want %v", key, got, want)
		}
		if newKeyChecker(nil).valid(key) {
			t.Fatalf("a checker without keys accepted %q", key)
		}
	})
}

// checkRequestError fails the test unless err is a 4xx *requestError with a
// message.
func checkRequestError(t *testing.T, err error) {
	t.Helper()
	var reqErr *requestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("error is not a *requestError: %T %v", err, err)
	}
	if reqErr.status < 400 || reqErr.status > 499 {
		t.Fatalf("status %d for %v", reqErr.status, err)
	}
	if reqErr.msg == "" {
		t.Fatalf("bad message %q", reqErr.msg)
	}
}
