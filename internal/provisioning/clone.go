package provisioning

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Database is a tenant database Create made.
type Database struct {
	// Name is the database's name on the provision server.
	Name string
	// URL is the URL to store for the tenant (see Config.TenantURLTemplate).
	// It may hold a password: never log it.
	URL string
	// Token is the random token of the database's comment; Drop needs it.
	Token string
	// TemplateBuilt reports whether this call built the template.
	TemplateBuilt bool
}

// Create makes tenant id's database: it makes sure the template exists
// (EnsureTemplate), clones it with CREATE DATABASE ... TEMPLATE ...
// STRATEGY, and marks the clone with a comment holding a new random token.
// A failure leaves no database behind; a name already taken is an error
// wrapping ErrDatabaseExists, and that database is left as it is.
func (p *Provisioner) Create(ctx context.Context, id string) (Database, error) {
	name, err := p.DatabaseName(id)
	if err != nil {
		return Database{}, err
	}
	url, err := p.TenantURL(id, name)
	if err != nil {
		return Database{}, err
	}
	server, err := p.serverID(ctx)
	if err != nil {
		return Database{}, fmt.Errorf("create database %s for tenant %s: %w", name, id, p.redact(err))
	}
	// The token names the server, so that Drop on another one does not take
	// the database for gone.
	db := Database{Name: name, URL: url, Token: server + "-" + newToken()}
	// A template dropped between EnsureTemplate and the clone (by hand, or
	// by DropTemplate) is built again, once.
	for attempt := 1; ; attempt++ {
		built, err := p.EnsureTemplate(ctx)
		if err != nil {
			return Database{}, err
		}
		db.TemplateBuilt = db.TemplateBuilt || built
		err = p.withNameLock(ctx, name, func(conn *pgxpool.Conn) error {
			if err := p.clone(ctx, conn, name); err != nil {
				return err
			}
			return p.mark(ctx, conn, id, name, db.Token)
		})
		if err == nil {
			break
		}
		var me markError
		if errors.As(err, &me) {
			return Database{}, fmt.Errorf("mark database %s of tenant %s: %w", name, id, p.redact(me.err))
		}
		if isCode(err, "3D000") && attempt < 2 { // invalid_catalog_name: no template
			continue
		}
		if isCode(err, "42P04") { // duplicate_database
			return Database{}, fmt.Errorf("create database %s for tenant %s: %w", name, id, ErrDatabaseExists)
		}
		return Database{}, fmt.Errorf("create database %s for tenant %s: %w", name, id, p.redact(err))
	}
	return db, nil
}

// clone runs the CREATE DATABASE of a tenant on conn.
func (p *Provisioner) clone(ctx context.Context, conn *pgxpool.Conn, name string) error {
	_, err := conn.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(p.template)+" STRATEGY "+p.cfg.Strategy)
	return err
}

// markError is a failure of mark, after the clone.
type markError struct{ err error }

func (e markError) Error() string { return e.err.Error() }

// mark puts the comment of tenant id's token on its new database name, and
// drops the database when that fails.
func (p *Provisioner) mark(ctx context.Context, conn *pgxpool.Conn, id, name, token string) error {
	// The mark's commit need not wait for its WAL flush (one fsync less per
	// provision): a crash that loses it leaves a database Drop refuses to
	// drop, the safe side. The database itself is durable, as is the
	// tenant's registration, a later commit.
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "COMMENT ON DATABASE "+ident(name)+" IS "+literal(comment(id, token)))
		return err
	}); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = conn.Exec(cctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)") // the lock's connection, as in goneHere
		return markError{err}
	}
	return nil
}

// nameLockClass is the first key of the session advisory lock (two-int4
// form, in the provision URL's database) that Create holds over a clone and
// its mark and Drop over its check of the mark and the DROP DATABASE: a
// Drop never drops, by name, a database created after its check.
const nameLockClass int32 = 0x746d_7064 // "tmpd"

// withNameLock runs f on a connection holding the lock of database name.
func (p *Provisioner) withNameLock(ctx context.Context, name string, f func(conn *pgxpool.Conn) error) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1, hashtext($2))", nameLockClass, name); err != nil {
			_ = conn.Conn().Close(uctx)
		}
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, hashtext($2))", nameLockClass, name); err != nil {
		return err
	}
	return f(conn)
}

// Drop drops database name of tenant id if it is the one Create made with
// token (its comment says so), ending its sessions (WITH (FORCE)). A
// database that no longer exists is not an error, so a Drop that failed
// half-way can be repeated; but when the token names another server than
// the provision server's (the provision URL changed since), no database of
// that name here says nothing of the one Create made, and the error wraps
// ErrNotProvisioned. A database of that name that Create did not make for
// this token is left alone: the error wraps ErrNotProvisioned. A database
// that carries the token's comment is dropped wherever it now is (moved by
// a dump and restore, which keep the comment).
func (p *Provisioner) Drop(ctx context.Context, id, name, token string) error {
	return p.withNameLock(ctx, name, func(conn *pgxpool.Conn) error {
		var got *string
		err := conn.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`, name).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return p.goneHere(ctx, conn, id, name, token)
		}
		if err != nil {
			return fmt.Errorf("drop database %s of tenant %s: %w", name, id, p.redact(err))
		}
		if got == nil || *got != comment(id, token) {
			return fmt.Errorf("drop database %s of tenant %s: %w: its comment is not the one tenantmigrate set when it created it (another database of that name?); it was left alone",
				name, id, ErrNotProvisioned)
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s of tenant %s: %w", name, id, p.redact(err))
		}
		return nil
	})
}

// goneHere says whether a database of token that the provision server does
// not have is gone (nil: the token names this server, or none, as tokens
// from before servers were named do), or may be on another server.
func (p *Provisioner) goneHere(ctx context.Context, conn *pgxpool.Conn, id, name, token string) error {
	server, _, ok := strings.Cut(token, "-")
	if !ok {
		return nil
	}
	// On the name lock's connection: another one from the pool could wait
	// for connections that Drops like this one hold.
	var here string
	err := conn.QueryRow(ctx, serverIDQuery).Scan(&here)
	if err != nil {
		return fmt.Errorf("drop database %s of tenant %s: %w", name, id, p.redact(err))
	}
	if server != here {
		return fmt.Errorf("drop database %s of tenant %s: %w: it was created on another server than the provision server (was the provision URL changed?), and this one has no database of that name; nothing was dropped",
			name, id, ErrNotProvisioned)
	}
	return nil
}

// serverID returns the provision server's system identifier, which its
// physical replicas share.
func (p *Provisioner) serverID(ctx context.Context) (string, error) {
	var id string
	err := p.pool.QueryRow(ctx, serverIDQuery).Scan(&id)
	return id, err
}

// serverIDQuery reads the server's system identifier.
const serverIDQuery = `SELECT system_identifier::text FROM pg_control_system()`

// comment is the comment Create puts on a tenant's database.
func comment(id, token string) string {
	return "tenantmigrate: provisioned for tenant " + id + ", token " + token
}

// literal quotes s as an SQL string literal (standard_conforming_strings,
// the default since PostgreSQL 9.1).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// newToken returns 16 random hex digits.
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}
