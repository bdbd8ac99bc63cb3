package provisioning

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// buildLockKey is the session advisory lock (bigint form, in the provision
// URL's database) that serialises template builds across instances:
// "tmprovsn" in ASCII.
const buildLockKey int64 = 0x746d_7072_6f76_736e

// buildSuffix names the database a template is built in before it is
// renamed to its own name.
const buildSuffix = "_build"

// renameWait bounds the wait for the sessions of a build database to end
// before its rename (a closed connection's backend exits asynchronously).
const renameWait = 10 * time.Second

// EnsureTemplate returns once the template of the source exists, building
// it if it does not: the first call on a server builds it, concurrent calls
// (in any process using the same provision URL database) wait for that build
// under the advisory lock and then find it. built reports whether this call
// built it.
func (p *Provisioner) EnsureTemplate(ctx context.Context) (built bool, err error) {
	if p.cfg.Migrator == nil {
		return false, errors.New("provisioning: no migrations to build a template from")
	}
	if ready, err := p.templateReady(ctx, p.pool); err != nil || ready {
		return false, err
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("template %s: connect to provision server: %w", p.template, p.redact(err))
	}
	defer p.unlockAndRelease(ctx, conn)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", buildLockKey); err != nil {
		return false, fmt.Errorf("template %s: take build lock: %w", p.template, p.redact(err))
	}
	// Another instance may have built it while this one waited.
	if ready, err := p.templateReady(ctx, conn); err != nil || ready {
		return false, err
	}
	if err := p.build(ctx, conn.Conn()); err != nil {
		return false, fmt.Errorf("build template %s: %w", p.template, err)
	}
	return true, nil
}

// unlockAndRelease releases the build lock (if held) and conn; a connection
// whose unlock fails is closed, which releases the lock too.
func (p *Provisioner) unlockAndRelease(ctx context.Context, conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", buildLockKey); err != nil {
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// templateReady reports whether the template exists; one that exists but
// accepts connections or is not a template was changed by hand, and is an
// error naming the fix.
func (p *Provisioner) templateReady(ctx context.Context, q querier) (bool, error) {
	var isTemplate, allowConn bool
	err := q.QueryRow(ctx, `SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1`, p.template).
		Scan(&isTemplate, &allowConn)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("template %s: read pg_database: %w", p.template, p.redact(err))
	case !isTemplate || allowConn:
		return false, fmt.Errorf("template %s exists but is not marked IS_TEMPLATE true with ALLOW_CONNECTIONS false: "+
			"it may have been changed by hand; drop it (ALTER DATABASE ... IS_TEMPLATE false; DROP DATABASE ...) and it is built again", p.template)
	}
	return true, nil
}

// build builds the template on conn, which holds the build lock: an empty
// database under a temporary name, migrated as any tenant, then closed to
// connections, marked a template and renamed to its own name. Until the
// rename no clone can find it, so a clone never copies a half-migrated
// template; a build that fails leaves nothing (a crashed one leaves the
// temporary database, which the next build drops).
func (p *Provisioner) build(ctx context.Context, conn *pgx.Conn) error {
	start := time.Now()
	buildName := p.template + buildSuffix
	if err := dropDatabase(ctx, conn, buildName); err != nil {
		return fmt.Errorf("drop leftover %s: %w", buildName, p.redact(err))
	}
	// From template1, as a database created by hand for a tenant would be.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(buildName)); err != nil {
		return fmt.Errorf("create %s: %w", buildName, p.redact(err))
	}
	ok := false
	defer func() {
		if !ok {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = dropDatabase(cctx, conn, buildName)
		}
	}()

	buildURL, err := withDatabase(p.cfg.URL, buildName)
	if err != nil {
		return err
	}
	res, err := p.cfg.Migrator.Migrate(ctx, migrator.Target{DatabaseURL: buildURL})
	p.cfg.RecordChecksums(ctx, res.Applied)
	if err != nil {
		return fmt.Errorf("migrate: %w", p.redact(err))
	}
	if latest := p.cfg.Migrator.Latest(); res.Version != latest {
		return fmt.Errorf("migrated to version %d, not the latest %d", res.Version, latest)
	}

	for _, sql := range []string{
		"ALTER DATABASE " + ident(buildName) + " WITH ALLOW_CONNECTIONS false",
		"ALTER DATABASE " + ident(buildName) + " WITH IS_TEMPLATE true",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("close %s: %w", buildName, p.redact(err))
		}
	}
	if err := p.rename(ctx, conn, buildName); err != nil {
		return err
	}
	ok = true
	p.cfg.Logger.Info("provisioning template built", "template", p.template, "version", res.Version,
		"applied", len(res.Applied), "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// rename renames the build database to the template's name, ending the
// sessions still on it first and retrying while one is exiting.
func (p *Provisioner) rename(ctx context.Context, conn *pgx.Conn, buildName string) error {
	deadline := time.Now().Add(renameWait)
	for {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, buildName); err != nil {
			return fmt.Errorf("end sessions on %s: %w", buildName, p.redact(err))
		}
		_, err := conn.Exec(ctx, "ALTER DATABASE "+ident(buildName)+" RENAME TO "+ident(p.template))
		if err == nil {
			return nil
		}
		if !isCode(err, "55006") || time.Now().After(deadline) { // object_in_use
			return fmt.Errorf("rename %s: %w", buildName, p.redact(err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// DropTemplate drops the template of this source, if it exists, ending any
// session on it; the next EnsureTemplate builds it again. Clones made from it
// are not affected.
func (p *Provisioner) DropTemplate(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("drop template %s: %w", p.template, p.redact(err))
	}
	defer p.unlockAndRelease(ctx, conn)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", buildLockKey); err != nil {
		return fmt.Errorf("drop template %s: take build lock: %w", p.template, p.redact(err))
	}
	if err := dropDatabase(ctx, conn.Conn(), p.template); err != nil {
		return fmt.Errorf("drop template %s: %w", p.template, p.redact(err))
	}
	return nil
}

// dropDatabase drops database name if it exists, a template too, with its
// sessions ended.
func dropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	var isTemplate bool
	err := conn.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&isTemplate)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if isTemplate {
		// PostgreSQL refuses to drop a template database.
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE false"); err != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	return err
}

func (p *Provisioner) redact(err error) error { return redact.Error(err, p.cfg.URL) }

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
