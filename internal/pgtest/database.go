package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN less one.
const maxIdentifierLen = 63

// NewDatabase creates a fresh database on the test server (see ServerURL), named after
// the test, and returns its URL, as the same user as ServerURL. The database is dropped,
// with its sessions ended, at cleanup. It is safe to call from parallel tests.
func NewDatabase(t testing.TB) string {
	t.Helper()
	serverURL := ServerURL(t)
	name := databaseName(t.Name())
	dbURL, err := withDatabase(serverURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ident := pgx.Identifier{name}.Sanitize()

	if err := execAdmin(t.Context(), serverURL, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := execAdmin(ctx, serverURL, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return dbURL
}

// databaseName returns "t_<test name>_<random>": lowercase letters, digits and
// underscores, at most maxIdentifierLen bytes, unique.
func databaseName(testName string) string {
	var random [6]byte
	_, _ = rand.Read(random[:]) // never fails
	suffix := "_" + hex.EncodeToString(random[:])

	var b strings.Builder
	underscore := false
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			underscore = false
		} else if !underscore {
			b.WriteByte('_')
			underscore = true
		}
	}
	prefix := "t_" + strings.Trim(b.String(), "_")
	prefix = strings.TrimRight(prefix[:min(len(prefix), maxIdentifierLen-len(suffix))], "_")
	return prefix + suffix
}

// withDatabase returns connString pointed at database, for a URL or a keyword/value
// connection string. database must need no quoting.
func withDatabase(connString, database string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			// Not err: it holds the URL, and so maybe a password.
			return "", errors.New("server URL is not a valid URL")
		}
		u.Path, u.RawPath = "/"+database, ""
		return u.String(), nil
	}
	// Keyword/value: a later keyword overrides an earlier one.
	return connString + " dbname=" + database, nil
}

// execAdmin runs sql on the server's maintenance connection.
func execAdmin(ctx context.Context, serverURL, sql string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}
