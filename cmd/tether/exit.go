package main

import (
	"context"
	"errors"
	"syscall"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Exit codes: the contract with Airflow and scripts.
const (
	ExitOK          = 0  // the run succeeded or may proceed
	ExitFailed      = 1  // the Task failed (or was cancelled)
	ExitBadInput    = 2  // bad files, flags, ids, or a request the scheduler refused
	ExitInfra       = 3  // the scheduler or the state directory is unusable now
	ExitNotFinished = 75 // `status`: the run is not finished yet (EX_TEMPFAIL)
	ExitSkip        = 99 // skip downstream (Airflow's skip_on_exit_code)
)

// exitError carries an exit code chosen by a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// withCode makes err exit with code.
func withCode(code int, err error) error { return &exitError{code: code, err: err} }

// usageError marks a wrong command line.
type usageError struct{ error }

// exitCode maps an error to the process exit code, in one place.
func exitCode(err error) int {
	var ee *exitError
	var se schema.Errors
	var se1 *schema.Error
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &se), errors.As(err, &se1), errors.As(err, &ue),
		errors.Is(err, schema.ErrSiteNotFound), errors.Is(err, rundir.ErrNoRun),
		errors.Is(err, backends.ErrRejected):
		return ExitBadInput
	case errors.Is(err, rundir.ErrStateDir):
		if errors.Is(err, syscall.ENOTDIR) {
			return ExitBadInput // a path below a regular file never works
		}
		// unusable now (EACCES, EROFS, ESTALE, EIO, ...): an admin or a
		// later try can fix it, the request itself is fine
		return ExitInfra
	case errors.Is(err, backends.ErrUnavailable), errors.Is(err, backends.ErrAuth),
		errors.Is(err, monitor.ErrQuery), errors.Is(err, context.DeadlineExceeded):
		return ExitInfra
	}
	return ExitInfra
}
