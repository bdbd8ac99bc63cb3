package servers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// state is a server's state as stored.
type state string

const (
	stateUp   state = "UP"
	stateDown state = "DOWN"
)

// IsShutdown reports whether err is PostgreSQL telling that the server is
// stopping (57P01 admin_shutdown, which ends a migration a fast shutdown
// or restart cuts off) or starting (57P03 cannot_connect_now): a failure of
// the server, not of the tenant or its migration. A lost connection is not
// one: it may be the migration crashing the server.
func IsShutdown(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "57P01" || pgErr.Code == "57P03")
}

// IsConnectionError reports whether err, of a run or a probe, says that the
// server could not be reached or dropped the connection: refused, timed out
// or not resolved while connecting, a connection lost (EOF, reset), or the
// server refusing sessions while it starts or stops (SQLSTATE 57P01, 57P02,
// 57P03). An error the server sent otherwise (authentication, a missing
// database, a failed statement) is not, nor is a cancelled context or a
// failed migration (*migrator.ApplyError is never passed here).
func IsConnectionError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		// Dial, timeout, or the connection closed while connecting: the
		// server answered no message. A TLS or authentication setting the
		// server refuses (sslmode=require to a server without TLS, a
		// certificate that does not verify) is the tenant's configuration,
		// not an outage of its server.
		var netErr net.Error
		return errors.As(err, &netErr) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return false // a run's own deadline, after it connected
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Summary describes a connection-level error without anything that may be
// secret (the URL, the user): the SQLSTATE and message of a server error,
// the network operation's error, or that it timed out.
func Summary(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code + ": " + pgErr.Message
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Error()
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return "timed out"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed by the server"
	}
	return "connection failed"
}

// ReportFailure counts a connection-level failure (IsConnectionError) of
// server; the FailureThreshold-th within FailureWindow makes it DOWN. It
// reports whether the server is DOWN now.
func (m *Manager) ReportFailure(ctx context.Context, server string, cause error) (down bool, err error) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	var st state
	var failures int
	err = m.cfg.Pool.QueryRow(ctx, `
		WITH u AS (
			UPDATE tenantmigrate.servers AS s SET
				failures = CASE WHEN s.failures_since > now() - make_interval(secs => $3) THEN s.failures + 1 ELSE 1 END,
				failures_since = CASE WHEN s.failures_since > now() - make_interval(secs => $3) THEN s.failures_since ELSE now() END,
				last_error = $2,
				updated_at = now()
			WHERE s.server = $1
			RETURNING state, failures
		), i AS (
			-- Inserted only when missing: an INSERT draws an id (of the
			-- bounded servers_id_range) even when it ends in its ON CONFLICT.
			INSERT INTO tenantmigrate.servers AS s (server, failures, failures_since, last_error)
			SELECT $1, 1, now(), $2 WHERE NOT EXISTS (SELECT FROM u)
			ON CONFLICT (server) DO UPDATE SET
				failures = CASE WHEN s.failures_since > now() - make_interval(secs => $3) THEN s.failures + 1 ELSE 1 END,
				failures_since = CASE WHEN s.failures_since > now() - make_interval(secs => $3) THEN s.failures_since ELSE now() END,
				last_error = EXCLUDED.last_error,
				updated_at = now()
			RETURNING state, failures
		)
		SELECT state, failures FROM u UNION ALL SELECT state, failures FROM i`,
		server, Summary(cause), m.cfg.FailureWindow.Seconds()).Scan(&st, &failures)
	if err != nil {
		return false, fmt.Errorf("record failure of server %s: %w", server, err)
	}
	if st == stateDown {
		return true, nil
	}
	if failures < m.cfg.FailureThreshold {
		return false, nil
	}
	// Only while the count still stands: a run that reached the server since
	// (ReportReachable) cleared it, and the server stays UP.
	tag, err := m.cfg.Pool.Exec(ctx, `
		UPDATE tenantmigrate.servers SET state = 'DOWN', since = now(), probed_at = now(), updated_at = now()
		WHERE server = $1 AND state = 'UP' AND failures >= $2`, server, m.cfg.FailureThreshold)
	if err != nil {
		return false, fmt.Errorf("mark server %s down: %w", server, err)
	}
	if tag.RowsAffected() == 1 {
		m.cfg.Logger.Warn("database server down: its tenants wait until it answers",
			"server", server, "failures", failures, "err", Summary(cause))
		return true, nil
	}
	// Marked DOWN by another process meanwhile, or UP again.
	d, err := m.IsDown(ctx, server)
	return d != nil, err
}

// ReportReachable records that server answered: it clears its failures and,
// if it was DOWN, makes it UP (and calls Config.OnUp). It writes nothing for
// a server that had no failure, so that every run may call it.
func (m *Manager) ReportReachable(ctx context.Context, server string) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	var was state
	err := m.cfg.Pool.QueryRow(ctx, `
		WITH old AS (SELECT state FROM tenantmigrate.servers WHERE server = $1 FOR UPDATE)
		UPDATE tenantmigrate.servers s SET failures = 0, failures_since = NULL, state = 'UP',
			since = CASE WHEN s.state = 'DOWN' THEN now() ELSE s.since END, updated_at = now()
		FROM old
		WHERE s.server = $1 AND (s.failures > 0 OR s.state = 'DOWN')
		RETURNING old.state`, server).Scan(&was)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record server %s reachable: %w", server, err)
	}
	if was == stateDown {
		m.cfg.Logger.Info("database server up again: its tenants continue", "server", server)
		m.cfg.OnUp(ctx, server)
	}
	return nil
}

// IsDown reports whether server is DOWN, with its *DownError.
func (m *Manager) IsDown(ctx context.Context, server string) (*DownError, error) {
	var since time.Time
	var lastErr string
	err := m.cfg.Pool.QueryRow(ctx, `SELECT since, coalesce(last_error, '') FROM tenantmigrate.servers
		WHERE server = $1 AND state = 'DOWN'`, server).Scan(&since, &lastErr)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read server %s: %w", server, err)
	}
	return &DownError{Server: server, Since: since, LastError: lastErr}, nil
}

// ProbeIfDue probes server if it is DOWN and no process probed it within
// ProbeInterval (this call claims the probe, so that one process probes for
// all), and records the result. It reports whether it probed.
func (m *Manager) ProbeIfDue(ctx context.Context, server string) (bool, error) {
	if m.cfg.Probe == nil {
		return false, nil
	}
	tag, err := m.cfg.Pool.Exec(ctx, `
		UPDATE tenantmigrate.servers SET probed_at = now()
		WHERE server = $1 AND state = 'DOWN'
			AND (probed_at IS NULL OR probed_at <= now() - make_interval(secs => $2))`,
		server, m.cfg.ProbeInterval.Seconds())
	if err != nil {
		return false, fmt.Errorf("claim probe of server %s: %w", server, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	pctx, cancel := context.WithTimeout(ctx, max(m.cfg.ProbeInterval, 5*time.Second))
	perr := m.cfg.Probe(pctx, server)
	cancel()
	if IsConnectionError(perr) {
		_, err := m.ReportFailure(ctx, server, perr)
		return true, err
	}
	if perr != nil && ctx.Err() != nil {
		return true, nil
	}
	// Answered: up, even if the probe itself failed otherwise (a tenant's
	// credentials are that tenant's problem).
	return true, m.ReportReachable(ctx, server)
}

// Start runs the prober in the background, under a context detached from
// ctx's cancellation: every ProbeInterval/2 it probes each DOWN server whose
// probe is due (ProbeIfDue). Start on a running prober does nothing; a
// stopped one starts again.
func (m *Manager) Start(ctx context.Context) {
	ctx, shouldStart, started, stopped := m.prober.StartInit(context.WithoutCancel(ctx))
	if !shouldStart {
		return
	}
	go func() {
		started()
		defer stopped()
		m.probeLoop(ctx)
	}()
}

// Stop ends the prober and waits for it. It is safe to call more than once
// and without Start.
func (m *Manager) Stop() { m.prober.Stop() }

func (m *Manager) probeLoop(ctx context.Context) {
	tick := time.NewTicker(max(m.cfg.ProbeInterval/2, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		down, err := m.downServers(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Logger.Warn("list down database servers", "err", err)
			}
			continue
		}
		for _, s := range down {
			if _, err := m.ProbeIfDue(ctx, s); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Warn("probe database server", "server", s, "err", err)
			}
		}
	}
}

func (m *Manager) downServers(ctx context.Context) ([]string, error) {
	rows, err := m.cfg.Pool.Query(ctx, `SELECT server FROM tenantmigrate.servers WHERE state = 'DOWN' ORDER BY server`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
