// Package pbs submits and watches jobs on PBS Professional / OpenPBS:
// qsub with the wrapper, ONE `qstat -x -f -F json` per poll for every job of
// the site, qdel to cancel. PBS has no warning signal before the walltime,
// so the wrapper runs its own timer.
package pbs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/shellquote"
)

// Backend is the PBS backend.
type Backend struct {
	BinDir string
	Env    map[string]string
	Server string // appended to job ids qsub prints without one
	// Place is the -l place of multi-node jobs ("" = scatter, "none" = the
	// server's default).
	Place   string
	Timeout time.Duration
	calls   atomic.Int64
}

// New returns a backend.
func New(binDir, server string, env map[string]string) *Backend {
	return &Backend{BinDir: binDir, Server: server, Env: env, Timeout: 60 * time.Second}
}

// Calls is how many PBS commands the backend has run.
func (b *Backend) Calls() int64 { return b.calls.Load() }

func (b *Backend) bin(name string) string {
	if b.BinDir == "" {
		return name
	}
	return filepath.Join(b.BinDir, name)
}

func (b *Backend) environ() []string {
	env := os.Environ()
	keys := make([]string, 0, len(b.Env))
	for k := range b.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+b.Env[k])
	}
	return env
}

// cmdResult is a finished PBS command.
type cmdResult struct {
	stdout, stderr []byte
	code           int
}

func (b *Backend) run(ctx context.Context, name string, args ...string) (cmdResult, error) {
	if b.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.Timeout)
		defer cancel()
	}
	b.calls.Add(1)
	cmd := exec.CommandContext(ctx, b.bin(name), args...)
	cmd.Env = b.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cmdResult{stdout: out.Bytes(), stderr: errb.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r, fmt.Errorf("%w: %s timed out", backends.ErrUnavailable, name)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("%w: cannot run %s: %w", backends.ErrUnavailable, b.bin(name), err)
	}
	return r, nil
}

// unreachable recognises a PBS server that cannot be contacted.
func unreachable(r cmdResult) bool {
	s := string(r.stderr)
	return r.code == 162 || r.code == 255 || strings.Contains(s, "cannot connect to server") ||
		strings.Contains(s, "Couldn't connect to cluster") || strings.Contains(s, "Connection refused") ||
		strings.Contains(s, "System call failure")
}

// Args builds the qsub command line for a request; place is the site's
// -l place for multi-node jobs ("" = scatter, "none" = none).
func Args(req backends.JobRequest, place string) []string {
	a := []string{"-N", pbsName(req.Name), "-o", req.Stdout, "-e", req.Stderr, "-V"}
	if req.Requeue {
		a = append(a, "-r", "y")
	} else {
		a = append(a, "-r", "n")
	}
	a = append(a, "-l", "select="+Select(req))
	if req.Walltime > 0 {
		s := int((req.Walltime + time.Second - 1) / time.Second)
		a = append(a, "-l", fmt.Sprintf("walltime=%02d:%02d:%02d", s/3600, s/60%60, s%60))
	}
	if place == "" {
		place = "scatter"
	}
	if req.Nodes > 1 && place != "none" {
		a = append(a, "-l", "place="+place)
	}
	if req.Partition != "" {
		a = append(a, "-q", req.Partition)
	}
	if req.Account != "" {
		a = append(a, "-A", req.Account)
	}
	a = append(a, req.ExtraArgs...)
	return append(a, req.Script)
}

// Select builds the select statement: chunks of one node each.
func Select(req backends.JobRequest) string {
	nodes := max(req.Nodes, 1)
	perNode := req.NTasksPerNode
	if perNode == 0 {
		perNode = (max(req.NTasks, 1) + nodes - 1) / nodes
	}
	cpt := max(req.CPUsPerTask, 1)
	s := fmt.Sprintf("%d:ncpus=%d:mpiprocs=%d", nodes, perNode*cpt, perNode)
	if req.GPUsPerTask > 0 {
		s += fmt.Sprintf(":ngpus=%d", req.GPUsPerTask*perNode)
	}
	if req.MemoryMiB > 0 {
		s += fmt.Sprintf(":mem=%dmb", req.MemoryMiB)
	}
	if req.Constraint != "" {
		s += ":" + req.Constraint // a site's custom resource, e.g. "model=rome"
	}
	return s
}

// pbsName keeps a job name PBS accepts: letters, digits and - _ + .,
// the first a letter or digit, at most 236 characters (OpenPBS
// check_job_name); anything else becomes '_'.
func pbsName(n string) string {
	b := []byte(n)
	if len(b) > 236 {
		b = b[:236]
	}
	for i, c := range b {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("-_+.", rune(c))) {
			b[i] = '_'
		}
	}
	if len(b) == 0 || b[0] == '_' {
		b = append([]byte("t"), b...)
		if len(b) > 236 {
			b = b[:236]
		}
	}
	return string(b)
}

// Describe shows the qsub command line.
func (b *Backend) Describe(req backends.JobRequest) string {
	parts := []string{shellquote.Quote(b.bin("qsub"))}
	for _, a := range Args(req, b.Place) {
		parts = append(parts, shellquote.Quote(a))
	}
	return strings.Join(parts, " ")
}

// Submit runs qsub.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	r, err := b.run(ctx, "qsub", Args(req, b.Place)...)
	if err != nil {
		return "", err
	}
	msg := strings.TrimSpace(string(r.stderr))
	switch {
	case r.code == 0:
	case unreachable(r):
		return "", fmt.Errorf("%w: qsub: %s", backends.ErrUnavailable, msg)
	default:
		return "", fmt.Errorf("%w: qsub: %s (exit %d)", backends.ErrRejected, msg, r.code)
	}
	id := strings.TrimSpace(string(r.stdout))
	if id == "" || strings.ContainsAny(id, " \n") {
		return "", fmt.Errorf("%w: qsub printed %q, not a job id", backends.ErrUnavailable, r.stdout)
	}
	return backends.JobID(id), nil
}

// Query polls every id with ONE `qstat -x -f -F json`. Unknown ids (no
// history, or purged) are left out: their exit files decide.
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	args := []string{"-x", "-f", "-F", "json"}
	for _, id := range ids {
		if validID(string(id)) {
			args = append(args, string(id))
		}
	}
	if len(args) == 4 {
		// no jobs: check that the server answers
		r, err := b.run(ctx, "qstat", "-B")
		if err != nil {
			return nil, err
		}
		if r.code != 0 {
			return nil, fmt.Errorf("%w: qstat -B: %s", backends.ErrUnavailable, strings.TrimSpace(string(r.stderr)))
		}
		return map[backends.JobID]backends.JobStatus{}, nil
	}
	r, err := b.run(ctx, "qstat", args...)
	if err != nil {
		return nil, err
	}
	if r.code != 0 && (unreachable(r) || len(bytes.TrimSpace(r.stdout)) == 0) && !onlyUnknown(r.stderr) {
		return nil, fmt.Errorf("%w: qstat: %s (exit %d)", backends.ErrUnavailable, strings.TrimSpace(string(r.stderr)), r.code)
	}
	out, err := ParseQstat(r.stdout)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", backends.ErrUnavailable, err)
	}
	return out, nil
}

// onlyUnknown reports whether every stderr line is about an unknown or
// purged job (not a server problem).
func onlyUnknown(stderr []byte) bool {
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return false
	}
	for _, l := range lines {
		if !strings.Contains(l, "Unknown Job Id") && !strings.Contains(l, "Job has finished") {
			return false
		}
	}
	return true
}

// validID accepts PBS ids ("12.pbshost"), not arrays.
func validID(id string) bool {
	seq, _, _ := strings.Cut(id, ".")
	_, err := strconv.ParseUint(seq, 10, 64)
	return err == nil && !strings.ContainsAny(id, "[] ")
}

// Cancel runs qdel; a finished or unknown job needs no cancel.
func (b *Backend) Cancel(ctx context.Context, id backends.JobID) error {
	r, err := b.run(ctx, "qdel", string(id))
	if err != nil {
		return err
	}
	switch {
	case r.code == 0, r.code == 35, r.code == 153:
		return nil
	case unreachable(r):
		return fmt.Errorf("%w: qdel: %s", backends.ErrUnavailable, strings.TrimSpace(string(r.stderr)))
	}
	return fmt.Errorf("qdel %s: %s (exit %d)", id, strings.TrimSpace(string(r.stderr)), r.code)
}

// Ping checks that the server answers.
func (b *Backend) Ping(ctx context.Context) (string, error) {
	if _, err := b.Query(ctx, nil); err != nil {
		return "", err
	}
	return "PBS server answers (qstat -B)", nil
}
