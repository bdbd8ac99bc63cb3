package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// requestLog collects what handlers learn about a request for its log line.
type requestLog struct {
	tenantID string
	err      error
}

type requestLogKey struct{}

// setLogTenant records the request's tenant id for its log line.
func setLogTenant(r *http.Request, id string) {
	if rl, ok := r.Context().Value(requestLogKey{}).(*requestLog); ok {
		rl.tenantID = id
	}
}

// setLogError records the error behind a failed response for its log line.
// It must not contain secrets (pgx and controlplane errors do not).
func setLogError(r *http.Request, err error) {
	if rl, ok := r.Context().Value(requestLogKey{}).(*requestLog); ok {
		rl.err = err
	}
}

// logRequests logs one line per request: method, path (without the query
// string, which may carry secrets), status, duration_ms, bytes, and
// tenant_id and err when known; at info level for 1xx-3xx, warn for 4xx and
// error for 5xx. It recovers a panic of next into a 500 (unless the response
// had begun) and logs its stack.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rl := &requestLog{}
		rw := &responseRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), requestLogKey{}, rl))

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					// The handler asks to abort the response (e.g. the
					// reverse proxy lost its upstream mid-body); let the
					// server do so.
					logLine(logger, r, rw, rl, start)
					panic(p)
				}
				rl.err = fmt.Errorf("panic: %v", p)
				logger.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "err", rl.err, "stack", string(debug.Stack()))
				if !rw.wroteHeader {
					writeError(rw, http.StatusInternalServerError, "internal error")
				} else {
					rw.status = http.StatusInternalServerError
				}
			}
			logLine(logger, r, rw, rl, start)
		}()
		next.ServeHTTP(rw, r)
	})
}

func logLine(logger *slog.Logger, r *http.Request, rw *responseRecorder, rl *requestLog, start time.Time) {
	status := rw.status
	if !rw.wroteHeader {
		status = http.StatusOK
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
		slog.Int64("bytes", rw.bytes),
	}
	if rl.tenantID != "" {
		attrs = append(attrs, slog.String("tenant_id", rl.tenantID))
	}
	if rl.err != nil {
		attrs = append(attrs, slog.String("err", rl.err.Error()))
	}
	logger.LogAttrs(r.Context(), level, "http request", attrs...)
}

// responseRecorder records the status and body size of a response. Unwrap
// lets http.ResponseController (used by httputil.ReverseProxy) reach the
// underlying writer's Flush, Hijack and deadlines.
type responseRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	bytes       int64
}

func (rw *responseRecorder) WriteHeader(status int) {
	if !rw.wroteHeader && status >= 200 {
		rw.status, rw.wroteHeader = status, true
	}
	rw.ResponseWriter.WriteHeader(status)
}

func (rw *responseRecorder) Write(b []byte) (int, error) {
	if !rw.wroteHeader {
		rw.status, rw.wroteHeader = http.StatusOK, true
	}
	n, err := rw.ResponseWriter.Write(b)
	rw.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher for handlers that assert it directly.
func (rw *responseRecorder) Flush() {
	if !rw.wroteHeader {
		rw.status, rw.wroteHeader = http.StatusOK, true
	}
	_ = http.NewResponseController(rw.ResponseWriter).Flush()
}

func (rw *responseRecorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
