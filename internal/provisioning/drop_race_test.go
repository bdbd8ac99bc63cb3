package provisioning

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// pauseTracer blocks the first query starting with prefix until release is
// closed, after telling reached.
type pauseTracer struct {
	prefix  string
	reached chan struct{}
	release chan struct{}
	done    bool
}

func (tr *pauseTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if !tr.done && strings.HasPrefix(d.SQL, tr.prefix) {
		tr.done = true
		close(tr.reached)
		<-tr.release
	}
	return ctx
}

func (tr *pauseTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func raceProvisioner(t *testing.T, prefix string) *Provisioner {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	m, err := migrator.New(migrator.Config{FS: fleettest.Migrations("CREATE TABLE a (id int);", "SELECT '"+hex.EncodeToString(b)+"';")})
	require.NoError(t, err)
	p, err := New(Config{URL: pgtest.ServerURL(t), NameTemplate: prefix + "_{id}", Migrator: m})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = p.DropTemplate(ctx)
		p.Close()
	})
	return p
}

func dbComment(t *testing.T, name string) *string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.ServerURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var c *string
	err = conn.QueryRow(t.Context(), `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`, name).Scan(&c)
	if err == pgx.ErrNoRows {
		return nil
	}
	require.NoError(t, err)
	return c
}

// TestDropChecksThenDropsByName: Drop checks the database's comment in
// one statement and drops it by name in another. Two deprovisions of one
// tenant (a client retrying) and a new provision of that id between them:
// the first Drop, checked against the old token, drops the new tenant's
// database.
func TestDropChecksThenDropsByName(t *testing.T) {
	t.Parallel()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "a" + hex.EncodeToString(b)
	p := raceProvisioner(t, prefix)
	ctx := t.Context()
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), pgtest.ServerURL(t))
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident(prefix+"_x")+" WITH (FORCE)")
			conn.Close(context.Background())
		}
	})

	old, err := p.Create(ctx, "x")
	require.NoError(t, err)

	// Deprovision A: its pool stops just before its DROP DATABASE.
	tr := &pauseTracer{prefix: "DROP DATABASE", reached: make(chan struct{}), release: make(chan struct{})}
	pcfg, err := pgxpool.ParseConfig(pgtest.ServerURL(t))
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = tr
	poolA, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	defer poolA.Close()
	pA := &Provisioner{cfg: p.cfg, pool: poolA, template: p.template}
	errA := make(chan error, 1)
	go func() { errA <- pA.Drop(context.Background(), "x", old.Name, old.Token) }()
	select {
	case <-tr.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("Drop A never reached its DROP DATABASE")
	}

	// Deprovision B of the same tenant, then the id is provisioned again:
	// either both complete while A is paused, or B waits for a lock A holds.
	type created struct {
		db  Database
		err error
	}
	bc := make(chan created, 1)
	go func() {
		if err := p.Drop(ctx, "x", old.Name, old.Token); err != nil {
			bc <- created{err: err}
			return
		}
		db, err := p.Create(ctx, "x")
		bc <- created{db, err}
	}()
	conn, err := pgx.Connect(ctx, pgtest.ServerURL(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var res *created
	for deadline := time.Now().Add(30 * time.Second); res == nil; {
		select {
		case r := <-bc:
			res = &r
			continue
		default:
		}
		var waiting bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '%pg_advisory_lock%')`).Scan(&waiting))
		if waiting {
			break
		}
		require.True(t, time.Now().Before(deadline), "B neither finished nor waited")
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
	close(tr.release)
	require.NoError(t, <-errA)
	if res == nil {
		r := <-bc
		res = &r
	}
	require.NoError(t, res.err)
	fresh := res.db
	require.NotEqual(t, old.Token, fresh.Token)
	c := dbComment(t, fresh.Name)
	require.NotNil(t, c, "the new tenant's database %s (token %s) was dropped by a Drop checked against the old token %s", fresh.Name, fresh.Token, old.Token)
	require.Equal(t, comment("x", fresh.Token), *c)
	fmt.Println("ok")
}
