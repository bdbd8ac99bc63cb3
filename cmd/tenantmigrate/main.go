// Command tenantmigrate keeps a fleet of tenant PostgreSQL databases (or
// schemas) on the latest version of one set of goose migrations.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tenantmigrate/tenantmigrate"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts the drain; a second one ends the process at
	// once (the signals' default action, restored by stop), for an operator
	// who will not wait for --shutdown-timeout.
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran, and something it did failed
	exitUsage   = 2 // bad flags, arguments or configuration
	exitUnknown = 1
)

// exitError carries an exit code and a message for the user.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func failedErr(err error) error { return &exitError{code: exitFailed, err: err} }

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// The library scrubs the errors it returns; this is the last line of
	// defence for the control-plane URL, given as a flag or in the
	// environment, before the error reaches the terminal.
	dbURLs := []string{os.Getenv("DATABASE_URL")}
	if f := cmd.PersistentFlags().Lookup("database-url"); f != nil {
		dbURLs = append(dbURLs, f.Value.String())
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, "error:", tenantmigrate.RedactError(ee.err, dbURLs...))
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "error:", tenantmigrate.RedactError(err, dbURLs...))
	if isUsageError(err) {
		return exitUsage
	}
	return exitUnknown
}
