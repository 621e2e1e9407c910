// Package sbatch submits and watches jobs through the Slurm command line:
// sbatch --parsable to submit, ONE squeue -t all per poll for every job of
// the site (with sacct for jobs that have left the controller), scancel to
// cancel.
package sbatch

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
	"github.com/tether-hpc/tether/backends/internal/slurm"
	"github.com/tether-hpc/tether/internal/shellquote"
)

// Backend is the Slurm CLI backend.
type Backend struct {
	// BinDir holds sbatch, squeue, sacct, scancel ("" = $PATH).
	BinDir string
	// Env is added to the commands' environment (e.g. SLURM_CONF).
	Env map[string]string
	// Timeout bounds one command.
	Timeout time.Duration
	// Accounting enables the sacct fallback for jobs that left the controller.
	Accounting bool

	calls atomic.Int64
}

// Calls is how many Slurm commands this backend has run.
func (b *Backend) Calls() int64 { return b.calls.Load() }

// New returns a backend.
func New(binDir string, env map[string]string, accounting bool) *Backend {
	return &Backend{BinDir: binDir, Env: env, Timeout: 60 * time.Second, Accounting: accounting}
}

// Backend implements backends.Backend.
var _ backends.Backend = (*Backend)(nil)

func (b *Backend) bin(name string) string {
	if b.BinDir == "" {
		return name
	}
	return filepath.Join(b.BinDir, name)
}

// environ is the commands' environment: the caller's, without SLURM_JWT
// (which makes sbatch and srun try JWT auth), plus the site's additions.
func (b *Backend) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SLURM_JWT=") {
			continue
		}
		env = append(env, kv)
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

// cmdError is a failed Slurm command with its stderr.
type cmdError struct {
	name   string
	code   int
	stderr string
	err    error
}

func (e *cmdError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		msg = e.err.Error()
	}
	if strings.HasPrefix(msg, e.name+":") {
		return msg // Slurm's messages name the command already
	}
	return fmt.Sprintf("%s: %s", e.name, msg)
}

// run executes a Slurm command. Every failure wraps ErrUnavailable (an
// unknown error is transient: retrying later may work) with the command's
// stderr in a *cmdError; only Submit turns the definite refusals among
// them into ErrRejected.
func (b *Backend) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return b.runEnv(ctx, nil, name, args...)
}

// runEnv is run with jobEnv added to the command's environment (sbatch
// --export=NAME takes the value from there).
func (b *Backend) runEnv(ctx context.Context, jobEnv map[string]string, name string, args ...string) ([]byte, error) {
	if b.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.Timeout)
		defer cancel()
	}
	b.calls.Add(1)
	cmd := exec.CommandContext(ctx, b.bin(name), args...)
	cmd.Env = b.environ()
	cmd.Env = append(cmd.Env, backends.EnvList(jobEnv)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &cmdError{name: name, stderr: stderr.String(), err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.code = ee.ExitCode()
	}
	switch {
	case ctx.Err() != nil:
		return stdout.Bytes(), fmt.Errorf("%w: %s timed out: %w", backends.ErrUnavailable, name, ctx.Err())
	case ee == nil: // could not start: missing binary, bad bin_dir
		return nil, fmt.Errorf("%w: %w: cannot run %s: %w", backends.ErrNotSent, backends.ErrUnavailable, b.bin(name), err)
	}
	return stdout.Bytes(), fmt.Errorf("%w: %w", backends.ErrUnavailable, ce)
}

// exportArg is --export with the names the site's policy passes (sbatch
// takes their values from its own environment, so commas in values need
// no escaping), never the whole environment of the submitter.
func exportArg(env map[string]string) string {
	names := slices.Sorted(maps.Keys(env))
	if len(names) == 0 {
		return "--export=NONE"
	}
	return "--export=" + strings.Join(names, ",")
}

// Args builds the sbatch command line for a request.
func Args(req backends.JobRequest) []string {
	a := []string{"--parsable",
		"--job-name=" + req.Name,
		"--chdir=" + req.Dir,
		"--output=" + escapePattern(req.Stdout),
		"--error=" + escapePattern(req.Stderr),
		"--comment=" + req.Tag,
		exportArg(req.Env),
		"--time=" + slurm.FormatLimit(req.Walltime),
	}
	if req.Requeue {
		a = append(a, "--requeue")
	} else {
		a = append(a, "--no-requeue")
	}
	num := func(flag string, v int) {
		if v > 0 {
			a = append(a, flag+"="+strconv.Itoa(v))
		}
	}
	num("--nodes", req.Nodes)
	num("--ntasks", req.NTasks)
	num("--ntasks-per-node", req.NTasksPerNode)
	num("--cpus-per-task", req.CPUsPerTask)
	num("--gpus-per-task", req.GPUsPerTask)
	if req.MemoryMiB > 0 {
		a = append(a, "--mem="+strconv.FormatInt(req.MemoryMiB, 10)+"M")
	}
	str := func(flag, v string) {
		if v != "" {
			a = append(a, flag+"="+v)
		}
	}
	str("--partition", req.Partition)
	str("--account", req.Account)
	str("--qos", req.QoS)
	str("--reservation", req.Reservation)
	str("--constraint", req.Constraint)
	if len(req.Exclude) > 0 {
		a = append(a, "--exclude="+strings.Join(req.Exclude, ","))
	}
	if req.WarnSignal != "" && req.WarnBefore > 0 {
		secs := int((req.WarnBefore + time.Second - 1) / time.Second)
		a = append(a, fmt.Sprintf("--signal=B:%s@%d", req.WarnSignal, secs))
	}
	a = append(a, req.ExtraArgs...)
	return append(a, req.Script)
}

// escapePattern keeps a path literal for Slurm's filename patterns.
func escapePattern(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// Describe shows the sbatch command line (for dry runs).
func (b *Backend) Describe(req backends.JobRequest) string {
	parts := []string{shellquote.Quote(b.bin("sbatch"))}
	for _, a := range Args(req) {
		parts = append(parts, shellquote.Quote(a))
	}
	return strings.Join(parts, " ")
}

// Submit runs sbatch --parsable. Only a definite refusal of the request
// (slurm.SbatchRefusal: Slurm's own refusals, sbatch's option errors) is
// ErrRejected; every other failure is ErrUnavailable.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	out, err := b.runEnv(ctx, req.Env, "sbatch", Args(req)...)
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) {
			if _, refused := slurm.SbatchRefusal(ce.stderr); refused {
				return "", fmt.Errorf("%w: %w", backends.ErrRejected, ce)
			}
			if strings.Contains(ce.stderr, "Unable to contact slurm controller") {
				// sbatch gave up connecting: slurmctld never saw the job
				return "", fmt.Errorf("%w: %w", backends.ErrNotSent, err)
			}
		}
		// Anything else may pass: a controller or munge outage, a timeout,
		// a message tether does not know. The job may even exist (a lost
		// answer): the attempt keeps its tag and is looked up later.
		return "", err
	}
	// "1234" or "1234;cluster"
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";")
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("%w: sbatch printed %q, not a job id", backends.ErrUnavailable, out)
	}
	return backends.JobID(id), nil
}

// squeueFormat is the fixed field list of the poll; the comment (tag) is
// last because it may contain the separator.
const squeueFormat = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,SubmitTime:|,StartTime:|,EndTime:|,TimeLimit:|,Comment:"

// Query polls every id with ONE squeue call; ids squeue no longer knows
// are looked up with ONE sacct call where accounting exists.
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	out := map[backends.JobID]backends.JobStatus{}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, err := strconv.ParseUint(string(id), 10, 64); err == nil {
			valid = append(valid, string(id))
		}
	}
	if len(valid) == 0 {
		// nothing to ask about: check that the controller answers
		if _, err := b.run(ctx, "scontrol", "ping"); err != nil {
			return nil, err
		}
		return out, nil
	}
	args := []string{"-h", "-t", "all", "-O", squeueFormat, "-j", strings.Join(valid, ",")}
	raw, err := b.run(ctx, "squeue", args...)
	var ce *cmdError
	switch {
	case errors.As(err, &ce) && strings.Contains(ce.stderr, "Invalid job id"):
		// none of the ids is in the controller any more
	case err != nil:
		return nil, err
	default:
		for _, st := range ParseSqueue(raw) {
			out[st.ID] = st
		}
	}
	var missing []string
	for _, id := range valid {
		if _, ok := out[backends.JobID(id)]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 && b.Accounting {
		for id, st := range b.sacct(ctx, missing) {
			out[id] = st
		}
	}
	return out, nil
}

// sacctFormat is the fixed field list of the accounting fallback.
const sacctFormat = "JobIDRaw,State,ExitCode,Reason,NodeList,Submit,Start,End,Timelimit"

// sacct looks up jobs that left the controller. Without accounting (or
// while slurmdbd is down) it finds nothing, and those jobs count as
// vanished: their exit files decide.
func (b *Backend) sacct(ctx context.Context, ids []string) map[backends.JobID]backends.JobStatus {
	raw, err := b.run(ctx, "sacct", "-n", "-P", "-X", "-j", strings.Join(ids, ","), "--format="+sacctFormat)
	if err != nil {
		return nil
	}
	return ParseSacct(raw)
}

// Cancel runs scancel. A job Slurm no longer knows, or one already
// finishing, needs no cancel (scancel exits 0 for those without -v; older
// versions print the error). Any other failure is ErrUnavailable: the
// cancel is issued again.
func (b *Backend) Cancel(ctx context.Context, id backends.JobID) error {
	_, err := b.run(ctx, "scancel", string(id))
	var ce *cmdError
	if errors.As(err, &ce) && (strings.Contains(ce.stderr, "Invalid job id") || strings.Contains(ce.stderr, "already completing or completed")) {
		return nil
	}
	return err
}

// FindByTag finds a job by the tag tether gave it: in the controller by
// its comment (one squeue call), and when the controller no longer knows
// it (purged MinJobAge after it ended) in accounting, with ONE sacct call
// over the jobs since the run was created, by its comment where slurmdbd
// stores it (AccountingStoreFlags=job_comment) and otherwise by its
// working directory, the attempt's own directory. Without accounting a
// purged job cannot be found. When several jobs match, the newest wins.
func (b *Backend) FindByTag(ctx context.Context, tag string) (backends.JobID, bool, error) {
	raw, err := b.run(ctx, "squeue", "-h", "-t", "all", "--me", "-O", "JobID:|,Comment:")
	if err != nil {
		return "", false, err
	}
	var best uint64
	for _, line := range strings.Split(string(raw), "\n") {
		id, comment, ok := strings.Cut(strings.TrimSpace(line), "|")
		if ok && comment == tag {
			best = max(best, jobNum(id))
		}
	}
	if best == 0 && b.Accounting {
		if best, err = b.findInAccounting(ctx, tag); err != nil {
			return "", false, err
		}
	}
	if best == 0 {
		return "", false, nil
	}
	return backends.JobID(strconv.FormatUint(best, 10)), true, nil
}

// findInAccounting is FindByTag's sacct call. A site whose slurm.conf has
// no accounting storage finds nothing; slurmdbd unreachable is an error
// (ErrUnavailable), never "not found": the caller would submit again.
func (b *Backend) findInAccounting(ctx context.Context, tag string) (uint64, error) {
	t, _ := slurm.ParseTag(tag)
	// WorkDir last: it is matched by its end, and a comment may hold "|"
	raw, err := b.run(ctx, "sacct", "-X", "-n", "-P", "--format=JobIDRaw,Comment,WorkDir",
		fmt.Sprintf("--starttime=now-%dhours", t.LookBack(time.Now())))
	var ce *cmdError
	if errors.As(err, &ce) && strings.Contains(ce.stderr, "accounting storage is disabled") {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look for the job tagged %s in accounting: %w", tag, err)
	}
	var best uint64
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimRight(line, "\r")
		id, rest, ok := strings.Cut(line, "|")
		if !ok {
			continue
		}
		if strings.HasPrefix(rest, tag+"|") || t.IsWorkDir(rest) {
			best = max(best, jobNum(id))
		}
	}
	return best, nil
}

// jobNum is a plain job id's number; 0 for array and het job ids.
func jobNum(id string) uint64 {
	n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Ping checks that the controller answers.
func (b *Backend) Ping(ctx context.Context) (string, error) {
	out, err := b.run(ctx, "sbatch", "--version")
	if err != nil {
		return "", err
	}
	if _, err := b.Query(ctx, nil); err != nil {
		return "", err
	}
	return "slurmctld answers; " + strings.TrimSpace(string(out)), nil
}

// DeliversWarnSignal: --signal=B:SIG@N reaches the batch script.
func (b *Backend) DeliversWarnSignal(context.Context) bool { return true }

// DownNodes asks sinfo (one call) which of the nodes are down, drained or
// not responding, with Slurm's reason.
func (b *Backend) DownNodes(ctx context.Context, nodes []string) (map[string]string, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	raw, err := b.run(ctx, "sinfo", "-h", "-N", "-n", strings.Join(nodes, ","), "-o", "%N|%T|%E")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.SplitN(strings.TrimSpace(line), "|", 3)
		if len(f) < 2 {
			continue
		}
		state := strings.ToLower(f[1])
		if strings.Contains(state, "down") || strings.Contains(state, "drain") || strings.Contains(state, "fail") ||
			strings.HasSuffix(state, "*") || strings.Contains(state, "not_responding") {
			why := state
			if len(f) == 3 && f[2] != "" && f[2] != "none" {
				why += ": " + f[2]
			}
			out[f[0]] = why
		}
	}
	return out, nil
}
