// Package pbs submits and watches jobs on PBS Professional / OpenPBS:
// qsub with the wrapper, ONE `qstat -x -f -F json` per poll for every job of
// the site, qdel to cancel. PBS has no warning signal before the walltime,
// so the wrapper runs its own timer. Each job carries its request's tag as
// the job variable TETHER_TAG (qsub -v, shown in Variable_List), so a job
// whose qsub answer was lost is found again (FindByTag).
package pbs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

var (
	_ backends.Backend   = (*Backend)(nil)
	_ backends.Finder    = (*Backend)(nil)
	_ backends.Describer = (*Backend)(nil)
	_ backends.Pinger    = (*Backend)(nil)
)

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

// tagVar is the job variable (qsub -v, Variable_List in qstat -f) that
// carries the request's tag, so FindByTag can find the job again.
const tagVar = "TETHER_TAG"

func (b *Backend) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		// qsub -V would copy a TETHER_TAG of our own environment (tether
		// running inside a tether job) next to the -v one.
		if !strings.HasPrefix(kv, tagVar+"=") {
			env = append(env, kv)
		}
	}
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
	return b.runEnv(ctx, nil, name, args...)
}

// runEnv runs a PBS command with jobEnv added to its environment (qsub
// -v NAME takes the value from there).
func (b *Backend) runEnv(ctx context.Context, jobEnv map[string]string, name string, args ...string) (cmdResult, error) {
	if b.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.Timeout)
		defer cancel()
	}
	b.calls.Add(1)
	cmd := exec.CommandContext(ctx, b.bin(name), args...)
	cmd.Env = b.environ()
	cmd.Env = append(cmd.Env, backends.EnvList(jobEnv)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A process the command left behind holding its output open must not
	// hold the backend too.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := cmdResult{stdout: out.Bytes(), stderr: errb.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r, fmt.Errorf("%w: %s timed out", backends.ErrUnavailable, name)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil:
		r.code = cmd.ProcessState.ExitCode()
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
	a := []string{"-N", pbsName(req.Name), "-o", req.Stdout, "-e", req.Stderr}
	// Not -V (the whole environment): -v with the names the site's
	// policy passes; qsub takes their values from its own environment
	// (jobEnviron), so commas and quotes in values need no escaping.
	var vars []string
	if req.Tag != "" && !strings.ContainsAny(req.Tag, ",'\"\\ \t\n") {
		// qsub -v splits at commas and strips quotes; tether's tags
		// ("tether:<run id>:<attempt>") have neither.
		vars = append(vars, tagVar+"="+req.Tag)
	}
	for _, k := range slices.Sorted(maps.Keys(req.Env)) {
		if k != tagVar {
			vars = append(vars, k)
		}
	}
	if len(vars) > 0 {
		a = append(a, "-v", strings.Join(vars, ","))
	}
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

// Submit runs qsub. Only qsub's definite refusals are ErrRejected; a qsub
// that timed out, printed no job id or failed in a way not known to be a
// refusal may have queued the job: ErrUnavailable, and FindByTag finds it.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	r, err := b.runEnv(ctx, req.Env, "qsub", Args(req, b.Place)...)
	if err != nil {
		return "", fmt.Errorf("%w (the job may have been queued)", err)
	}
	return b.qsubResult(r)
}

// qsubResult reads the job id qsub printed, or classifies its failure.
func (b *Backend) qsubResult(r cmdResult) (backends.JobID, error) {
	msg := qsubMessage(r.stderr)
	switch {
	case r.code == 0:
	case unreachable(r):
		return "", fmt.Errorf("%w: %s", backends.ErrUnavailable, msg)
	case qsubRefused(r):
		return "", fmt.Errorf("%w: %s (exit %d)", backends.ErrRejected, msg, r.code)
	default:
		return "", fmt.Errorf("%w: %s (exit %d; the job may have been queued)", backends.ErrUnavailable, msg, r.code)
	}
	id := jobIDLine(string(r.stdout))
	if id == "" {
		return "", fmt.Errorf("%w: qsub printed %q, not a job id (the job may have been queued)", backends.ErrUnavailable, r.stdout)
	}
	if !strings.Contains(id, ".") && b.Server != "" {
		id += "." + b.Server
	}
	return backends.JobID(id), nil
}

// jobIDLine finds the job id ("12.pbshost") in qsub's stdout: the last line
// that is one (hooks and profiles may print other lines).
func jobIDLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if validID(l) {
			return l
		}
	}
	return ""
}

// qsubMessage is qsub's stderr on one line, without its usage text, and
// starting with "qsub:".
func qsubMessage(stderr []byte) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "usage:") {
			break
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	msg := strings.Join(parts, " ")
	if !strings.HasPrefix(msg, "qsub") {
		msg = "qsub: " + msg
	}
	return msg
}

// qsubRefusals are the messages of a qsub that refused the job for good:
// the request must change. They are the texts of the PBS errors in OpenPBS
// pbs_messages.c (PBSE_UNKQUE, PBSE_BADATVAL, PBSE_UNKRESC, PBSE_EXCQRESC,
// ...), qsub's own option errors, and Torque's wording of PBSE_EXCQRESC.
// Anything else (queue disabled, limits on queued jobs, a server shutting
// down, a lost connection) may work later.
var qsubRefusals = []string{
	"Unknown queue",
	"Illegal attribute or resource value",
	"Unknown resource",
	"Job violates queue and/or server resource limits",
	"Job exceeds queue resource limits",
	"Resource limit exceeds allowable",
	"Bad UID for job execution",
	"Bad GID for job execution",
	"Access to queue is denied",
	"Unauthorized Request",
	"Invalid Account",
	"Invalid Job Dependency",
	"Job rejected by all possible destinations",
	"Resource invalid in \"select\" specification",
	"cannot be used with \"select\" or \"place\"",
	"Cannot have \"place\" without \"select\"",
	"duplicated resource within a section of a select specification",
	"node(s) specification error",
	"No default queue specified",
	"Unknown Job Id", // a -W depend on a job the server does not know
}

// qsubRefused recognises a definite refusal: a known PBS message, or
// qsub's usage error for an option it cannot parse (exit 2).
func qsubRefused(r cmdResult) bool {
	s := string(r.stderr)
	if r.code == 2 && strings.Contains(s, "usage: qsub") {
		return true
	}
	for _, m := range qsubRefusals {
		if strings.Contains(s, "qsub: "+m) {
			return true
		}
	}
	return false
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

// FindByTag finds the job of a request by its tag (the TETHER_TAG job
// variable) with ONE `qstat -x -f -F json` of every job, history included,
// so a job that has already finished is found too. If several jobs carry
// the tag (a Task that ran qsub -V itself), the first submitted is tether's.
func (b *Backend) FindByTag(ctx context.Context, tag string) (backends.JobID, bool, error) {
	if tag == "" {
		return "", false, nil
	}
	r, err := b.run(ctx, "qstat", "-x", "-f", "-F", "json")
	if err != nil {
		return "", false, err
	}
	if r.code != 0 {
		return "", false, fmt.Errorf("%w: qstat: %s (exit %d)", backends.ErrUnavailable, strings.TrimSpace(string(r.stderr)), r.code)
	}
	id, ok, err := findTagged(r.stdout, tag)
	if err != nil {
		return "", false, fmt.Errorf("%w: %w", backends.ErrUnavailable, err)
	}
	return id, ok, nil
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
