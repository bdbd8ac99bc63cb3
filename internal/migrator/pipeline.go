package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// This file sends a TransactionModeTenant group's statements to the server without waiting for
// each one's answer (pgconn's pipeline mode), so the server runs the group's files back to back.
//
// File by file, goose waits for every statement's answer before it sends the next: on a tenant
// with 45 migrations that is about 300 round trips, and with the two runs a server allows at once
// (the per-server cap) the server's cores wait for the client for about a seventh of the run
// (BENCHMARKS.md, section 9). In a group nothing needs an answer before the next statement: the
// first failure rolls the whole group back. So the group's files are written to the connection at
// once, each file's statements followed by its version row and a Flush, and the answers are read
// as they come, file by file.
//
//   - Each statement is still its own query, parsed on its own by the server, exactly as goose
//     sends it (not joined into one string, which would let a statement goose split wrongly run
//     whole). The pipeline uses the extended protocol; statement_timeout and lock_timeout apply
//     per statement in it as in the simple one.
//   - The version row is goose's own INSERT: the statement and arguments store.Insert runs,
//     recorded on a connection that runs nothing (versionInsert).
//   - After a failure the server skips the rest of the pipeline: the answers say which file
//     failed, and its error is the statement's, as in file mode.
//   - The extended protocol refuses a statement that holds several commands ("cannot insert
//     multiple commands into a prepared statement", SQLSTATE 42601), which goose runs as one
//     simple query (a StatementBegin block may hold several). A file whose pipelined statement
//     fails with a syntax error is therefore run again, in the group's retry, statement by
//     statement as goose runs it, and the Migrator remembers it (stepwise); a real syntax error
//     fails there as it would in file mode.
//   - A URL that chose the simple protocol (default_query_exec_mode=simple_protocol, for a proxy
//     without the extended one) gets no pipeline: its files run statement by statement.

// pipelined reports whether the group's file s may go into a pipeline.
func (r *tenantRun) pipelined(s *goose.Source) bool {
	_, stepwise := r.m.stepwise.Load(s.Version)
	return !stepwise && !r.simpleProtocol
}

// execFile applies one file statement by statement on db (a group's transaction, or the locked
// session for a NO TRANSACTION file), with its version row, as goose does.
func (r *tenantRun) execFile(ctx context.Context, db database.DBTxConn, s *goose.Source) (*goose.MigrationResult, error) {
	start := time.Now()
	statements := r.m.parsed[path.Base(s.Path)].statements
	for _, stmt := range statements {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, err
		}
	}
	if err := r.store.Insert(ctx, db, database.InsertRequest{Version: s.Version}); err != nil {
		return nil, err
	}
	res := newResult(s)
	res.Empty = len(statements) == 0
	res.Duration = time.Since(start)
	return res, nil
}

// pipeline applies files, the next files of a group, in the group's open transaction on the
// locked session, in one pipeline (see the file comment). It returns the results of the files
// done and, on failure, how many of them were done before the failing one and its error. A
// failure after the last file's answers (at the sync: the session ended, or a file's own COMMIT
// left a deferred check to it) is the last file's, as a failed COMMIT of the group is.
func (r *tenantRun) pipeline(ctx context.Context, files []*goose.Source) (results []*goose.MigrationResult, done int, retErr error) {
	inserts, err := versionInserts(r.store, files)
	if err != nil {
		return nil, 0, err
	}
	err = r.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("tenant mode pipeline: connection is a %T, not pgx's", dc)
		}
		conn := sc.Conn()
		params := make([]encodedArgs, len(inserts))
		for i, ins := range inserts {
			var err error
			if params[i], err = encodeArgs(conn.TypeMap(), ins.args); err != nil {
				return fmt.Errorf("failed to insert version %d: %w", files[i].Version, err)
			}
		}

		p := conn.PgConn().StartPipeline(ctx)
		for i, s := range files {
			for _, stmt := range r.m.parsed[path.Base(s.Path)].statements {
				p.SendQueryParams(stmt, nil, nil, nil, nil)
			}
			p.SendQueryParams(inserts[i].sql, params[i].values, params[i].oids, nil, nil)
			p.SendFlushRequest() // this file's answers come as soon as it is done
		}
		p.SendPipelineSync()
		if err := p.Flush(); err != nil {
			_ = p.Close()
			return err
		}
		start := time.Now()
		for i, s := range files {
			done = i
			statements := r.m.parsed[path.Base(s.Path)].statements
			for q := range len(statements) + 1 {
				if err := nextResult(p); err != nil {
					_ = p.Close() // reads to the sync; the first error is the one to report
					if q == len(statements) {
						err = fmt.Errorf("failed to insert version %d: %w", s.Version, err)
					}
					return err
				}
			}
			res := newResult(s)
			res.Empty = len(statements) == 0
			res.Duration = time.Since(start)
			start = time.Now()
			results = append(results, res)
		}
		done = len(files) - 1 // the sync's error is the last file's
		if res, err := p.GetResults(); err != nil {
			_ = p.Close()
			return err
		} else if _, ok := res.(*pgconn.PipelineSync); !ok {
			_ = p.Close()
			return fmt.Errorf("tenant mode pipeline: got %T, want the sync", res)
		}
		if err := p.Close(); err != nil {
			return err
		}
		done = len(files)
		return nil
	})
	if err != nil && done == len(files)-1 && len(results) == len(files) {
		results = results[:done] // the last file's answers came, but it failed at the sync
	}
	return results, done, err
}

// nextResult reads the pipeline's next answer, a query's, to its end.
func nextResult(p *pgconn.Pipeline) error {
	res, err := p.GetResults()
	if err != nil {
		return err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return fmt.Errorf("tenant mode pipeline: got %T, want a query's result", res)
	}
	_, err = rr.Close()
	return err
}

// recordedExec is one statement run on a recording connection, with its arguments.
type recordedExec struct {
	sql  string
	args []any
}

// versionInserts returns the statement goose's store runs to record each of files' versions, and
// its arguments: store.Insert on a connection that records instead of running.
func versionInserts(store database.Store, files []*goose.Source) ([]recordedExec, error) {
	rec := &recording{}
	db := sql.OpenDB(recordingConnector{rec: rec})
	defer func() { _ = db.Close() }()
	out := make([]recordedExec, len(files))
	for i, s := range files {
		rec.statements, rec.args = nil, nil
		if err := store.Insert(context.Background(), db, database.InsertRequest{Version: s.Version}); err != nil {
			return nil, err
		}
		if len(rec.statements) != 1 {
			return nil, fmt.Errorf("goose's store ran %d statements to record version %d, want 1", len(rec.statements), s.Version)
		}
		out[i] = recordedExec{sql: rec.statements[0], args: rec.args[0]}
	}
	return out, nil
}

// encodedArgs are query arguments in the text format, with their type OIDs.
type encodedArgs struct {
	values [][]byte
	oids   []uint32
}

// encodeArgs encodes args for the extended protocol as pgx would.
func encodeArgs(tm *pgtype.Map, args []any) (encodedArgs, error) {
	var out encodedArgs
	for _, a := range args {
		t, ok := tm.TypeForValue(a)
		if !ok {
			return encodedArgs{}, fmt.Errorf("no PostgreSQL type for %T", a)
		}
		buf, err := tm.Encode(t.OID, pgtype.TextFormatCode, a, nil)
		if err != nil {
			return encodedArgs{}, err
		}
		out.values = append(out.values, buf)
		out.oids = append(out.oids, t.OID)
	}
	return out, nil
}

// simpleProtocol reports whether the locked session's URL chose the simple protocol.
func simpleProtocol(conn *sql.Conn) (bool, error) {
	var simple bool
	err := conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("tenant mode: connection is a %T, not pgx's", dc)
		}
		simple = sc.Conn().Config().DefaultQueryExecMode == pgx.QueryExecModeSimpleProtocol
		return nil
	})
	return simple, err
}

// isSyntaxError reports whether err is SQLSTATE 42601, syntax_error, which the extended protocol
// also gives a statement that holds several commands.
func isSyntaxError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == sqlSyntaxError
}

// sqlSyntaxError is SQLSTATE 42601, syntax_error.
const sqlSyntaxError = "42601"
