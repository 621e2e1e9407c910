// Package cli runs the commands of the command-line backends (sbatch,
// PBS, and any later one such as HTCondor or Grid Engine): each command
// from the site's bin_dir, in tether's environment less what the backend
// hides plus the site's and the job's variables, bounded in time and in
// what it may print, and counted. A command that failed is read with the
// backend's own table (Table): only the definite refusals it names are
// backends.ErrRejected; a failure whose meaning is not known is transient,
// backends.ErrUnavailable.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-hpc/tether/backends"
)

const (
	// DefaultMaxStdout bounds what one command may print on stdout (a
	// qstat -x -f -F json of a large server's history): an answer cut
	// short would be misread (jobs missing from it would look vanished),
	// so more is an error.
	DefaultMaxStdout = 256 << 20
	// maxStderr bounds the stderr kept of one command: of more, its head
	// and its tail (where sbatch's final verdict stands) are kept.
	maxStderr = 64 << 10
	// waitDelay bounds the wait for the output of a process the command
	// left behind holding it open, once the command itself has ended or
	// been killed: it must not hold the backend too.
	waitDelay = 5 * time.Second
)

// Runner runs the commands of one backend. A backend embeds it; it must
// not be copied once used.
type Runner struct {
	// BinDir holds the scheduler's commands ("" = $PATH).
	BinDir string
	// Env is added to every command's environment (e.g. SLURM_CONF).
	Env map[string]string
	// Timeout bounds one command (0: only the caller's context does).
	Timeout time.Duration
	// Hide names variables of tether's own environment the commands must
	// not inherit (sbatch: SLURM_JWT; qsub: TETHER_TAG).
	Hide []string
	// MaxStdout bounds what one command may print on stdout (0 =
	// DefaultMaxStdout).
	MaxStdout int

	calls atomic.Int64
}

// Calls is how many commands the runner has started (or tried to start):
// the backends' benchmarks and tests read it as the scheduler calls made.
func (r *Runner) Calls() int64 { return r.calls.Load() }

// Result is a command that ran to its end.
type Result struct {
	Name   string // the command as the backend names it ("qsub")
	Stdout []byte
	Stderr []byte // at most maxStderr: of more, the head and the tail
	Code   int    // the exit code; 0 for success
}

// Run runs the command name with args, jobEnv added to its environment
// (sbatch --export=NAME and qsub -v NAME take values from there). The
// error is non-nil only when the command did not run to its end: it could
// not start (backends.ErrNotSent and ErrUnavailable), it timed out or it
// printed more than MaxStdout (ErrUnavailable). Whatever its exit code, a
// command that ended is a Result: Result.Err reads a failure.
func (r *Runner) Run(ctx context.Context, jobEnv map[string]string, name string, args ...string) (Result, error) {
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	r.calls.Add(1)
	cmd := exec.CommandContext(ctx, r.Bin(name), args...)
	cmd.Env = append(r.Environ(), backends.EnvList(jobEnv)...)
	maxOut := r.MaxStdout
	if maxOut <= 0 {
		maxOut = DefaultMaxStdout
	}
	stdout, stderr := &capture{head: maxOut}, &capture{head: maxStderr / 2, tail: maxStderr / 2}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	res := Result{Name: name, Stdout: stdout.bytes(), Stderr: stderr.bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return Result{}, fmt.Errorf("%w: %s timed out: %w", backends.ErrUnavailable, name, ctx.Err())
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil:
		res.Code = cmd.ProcessState.ExitCode() // it ended; a leftover held its output
	default: // could not start: missing binary, bad bin_dir
		return Result{}, fmt.Errorf("%w: %w: cannot run %s: %w", backends.ErrNotSent, backends.ErrUnavailable, r.Bin(name), err)
	}
	if stdout.cut > 0 {
		return Result{}, fmt.Errorf("%w: %s printed more than %d bytes", backends.ErrUnavailable, name, maxOut)
	}
	return res, nil
}

// Output is Run for a command's stdout: a command that exited non-zero
// is the *Error of the class table gives it.
func (r *Runner) Output(ctx context.Context, table Table, jobEnv map[string]string, name string, args ...string) ([]byte, error) {
	res, err := r.Run(ctx, jobEnv, name, args...)
	if err == nil {
		err = res.Err(table)
	}
	return res.Stdout, err
}

// capture keeps what a command prints: up to head bytes, then the last
// tail bytes, counting what it leaves out between them.
type capture struct {
	head, tail int
	first      []byte
	last       []byte
	cut        int64
}

func (c *capture) Write(p []byte) (int, error) {
	n := len(p)
	k := min(c.head-len(c.first), len(p))
	c.first, p = append(c.first, p[:k]...), p[k:]
	c.last = append(c.last, p...)
	if over := len(c.last) - c.tail; over > 0 {
		c.cut += int64(over)
		c.last = c.last[over:]
	}
	return n, nil
}

func (c *capture) bytes() []byte {
	out := c.first
	if c.cut > 0 {
		out = fmt.Appendf(out, "\n[... %d bytes left out ...]\n", c.cut)
	}
	return append(out, c.last...)
}

// Class is what a failed command means.
type Class int

const (
	// Unknown is a failure whose meaning is not known: transient
	// (backends.ErrUnavailable), and the request may have been carried
	// out (a submit's job may exist).
	Unknown Class = iota
	// Unavailable is a scheduler that could not be reached or could not
	// answer: backends.ErrUnavailable.
	Unavailable
	// NotSent is Unavailable where the request certainly never reached
	// the scheduler: backends.ErrNotSent too, so a submit may be sent
	// again at once.
	NotSent
	// Refused is a definite refusal of the request, which must change:
	// backends.ErrRejected.
	Refused
	// SubmitLimit is a submit the scheduler turned away because the user
	// or account has as many jobs as a limit allows: no job was created,
	// and the same request is taken once some jobs have ended
	// (backends.ErrSubmitLimit, ErrNotSent, ErrUnavailable).
	SubmitLimit
)

// Table is a backend's reading of its failed commands: the Class of each
// failure it knows; Unknown for the others.
type Table func(Result) Class

// Err is nil for a command that exited 0; otherwise an *Error of the
// class table gives the failure (Unknown with a nil table).
func (r Result) Err(table Table) error {
	if r.Code == 0 {
		return nil
	}
	e := &Error{Result: r, Class: Unknown}
	if table != nil {
		e.Class = table(r)
	}
	return e
}

// Message is the failure on one line: the command's stderr up to any
// usage text, starting with the command's name, and its exit code.
func (r Result) Message() string {
	var parts []string
	for _, l := range strings.Split(string(r.Stderr), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "usage:") {
			break
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%s: exit status %d", r.Name, r.Code)
	}
	msg := strings.Join(parts, " ")
	if !strings.HasPrefix(msg, r.Name) {
		msg = r.Name + ": " + msg // Slurm's and PBS's messages mostly name the command already
	}
	return fmt.Sprintf("%s (exit %d)", msg, r.Code)
}

// Error is a command that exited non-zero, with what it printed.
type Error struct {
	Result
	Class Class
}

// Error names the backends errors of the class, then the failure.
func (e *Error) Error() string {
	var b strings.Builder
	for _, err := range e.Unwrap() {
		b.WriteString(err.Error() + ": ")
	}
	return b.String() + e.Message()
}

// Unwrap gives the backends error of the class.
func (e *Error) Unwrap() []error {
	switch e.Class {
	case Refused:
		return []error{backends.ErrRejected}
	case NotSent:
		return []error{backends.ErrNotSent, backends.ErrUnavailable}
	case SubmitLimit:
		return []error{backends.ErrSubmitLimit, backends.ErrNotSent, backends.ErrUnavailable}
	}
	return []error{backends.ErrUnavailable}
}

// Stderr is what the failed command err carries printed on stderr; ""
// when err is not a command's failure (nil, a timeout, a command that
// could not start).
func Stderr(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return string(e.Stderr)
	}
	return ""
}
