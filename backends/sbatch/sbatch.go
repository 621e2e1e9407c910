// Package sbatch submits and watches jobs through the Slurm command line:
// sbatch --parsable to submit, ONE squeue -t all per poll for every job of
// the site (with sacct for jobs that have left the controller), scancel to
// cancel.
package sbatch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/cli"
	"github.com/tether-hpc/tether/backends/internal/slurm"
	"github.com/tether-hpc/tether/internal/shellquote"
)

// Backend is the Slurm CLI backend. Its Runner holds BinDir (sbatch,
// squeue, sacct, scancel; "" = $PATH), Env (added to the commands'
// environment, e.g. SLURM_CONF) and Timeout (bounds one command), and
// counts the Slurm commands run (Calls).
type Backend struct {
	cli.Runner
	// Accounting enables the sacct fallback for jobs that left the controller.
	Accounting bool
}

// New returns a backend. Its commands do not inherit SLURM_JWT (which
// makes sbatch and srun try JWT auth).
func New(binDir string, env map[string]string, accounting bool) *Backend {
	return &Backend{Runner: cli.Runner{BinDir: binDir, Env: env, Timeout: 60 * time.Second, Hide: []string{"SLURM_JWT"}}, Accounting: accounting}
}

// Backend implements backends.Backend.
var _ backends.Backend = (*Backend)(nil)

// failures reads the Slurm commands' failures (cli.Stderr(err) gives a
// failure's stderr): the definite refusals of a request
// (slurm.SbatchRefusal: Slurm's own refusals, sbatch's option errors) and
// an sbatch that gave up connecting (slurmctld never saw the job). Every
// other failure of every command is cli.Unknown: ErrUnavailable (an
// unknown error is transient: retrying later may work).
func failures(r cli.Result) cli.Class {
	if r.Name != "sbatch" {
		return cli.Unknown
	}
	if slurm.SubmitLimit(string(r.Stderr)) || slurm.JobCountLimit(string(r.Stderr)) {
		return cli.SubmitLimit
	}
	if _, refused := slurm.SbatchRefusal(string(r.Stderr)); refused {
		return cli.Refused
	}
	if strings.Contains(string(r.Stderr), "Unable to contact slurm controller") {
		return cli.NotSent
	}
	return cli.Unknown
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
		"--output=" + slurm.EscapePattern(req.Stdout),
		"--error=" + slurm.EscapePattern(req.Stderr),
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

// Describe shows the sbatch command line (for dry runs).
func (b *Backend) Describe(req backends.JobRequest) string {
	parts := []string{shellquote.Quote(b.Bin("sbatch"))}
	for _, a := range Args(req) {
		parts = append(parts, shellquote.Quote(a))
	}
	return strings.Join(parts, " ")
}

// Submit runs sbatch --parsable. Only a definite refusal of the request
// is ErrRejected; every other failure is ErrUnavailable: a controller or
// munge outage, a timeout, a message tether does not know. The job may
// even exist (a lost answer): the attempt keeps its tag and is looked up
// later.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	out, err := b.Output(ctx, failures, req.Env, "sbatch", Args(req)...)
	if err != nil {
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
const squeueFormat = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|,SubmitTime:|,StartTime:|,EndTime:|,TimeLimit:|,ArrayJobID:|,ArrayTaskID:|,Comment:"

// Query polls every id with ONE squeue call; ids squeue no longer knows
// are looked up with ONE sacct call where accounting exists.
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	out := map[backends.JobID]backends.JobStatus{}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if ValidID(string(id)) {
			valid = append(valid, string(id))
		}
	}
	if len(valid) == 0 {
		// nothing to ask about: check that the controller answers
		if _, err := b.Output(ctx, failures, nil, "scontrol", "ping"); err != nil {
			return nil, err
		}
		return out, nil
	}
	// -r: every element of an array on a line of its own
	args := []string{"-h", "-r", "-t", "all", "-O", squeueFormat, "-j", strings.Join(valid, ",")}
	raw, err := b.Output(ctx, failures, nil, "squeue", args...)
	switch {
	case strings.Contains(cli.Stderr(err), "Invalid job id"):
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
const sacctFormat = "JobID,State,ExitCode,Reason,NodeList,Submit,Start,End,Timelimit"

// sacct looks up jobs that left the controller. Without accounting (or
// while slurmdbd is down) it finds nothing, and those jobs count as
// vanished: their exit files decide.
func (b *Backend) sacct(ctx context.Context, ids []string) map[backends.JobID]backends.JobStatus {
	raw, err := b.Output(ctx, failures, nil, "sacct", "-n", "-P", "-X", "-j", strings.Join(ids, ","), "--format="+sacctFormat)
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
	_, err := b.Output(ctx, failures, nil, "scancel", string(id))
	if msg := cli.Stderr(err); strings.Contains(msg, "Invalid job id") || strings.Contains(msg, "already completing or completed") {
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
	// ArrayJobID is the job id of a plain job and the array's of an element
	raw, err := b.Output(ctx, failures, nil, "squeue", "-h", "-t", "all", "--me", "-O", "ArrayJobID:|,Comment:")
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
	raw, err := b.Output(ctx, failures, nil, "sacct", "-X", "-n", "-P", "--format=JobID,Comment,WorkDir",
		fmt.Sprintf("--starttime=now-%dhours", t.LookBack(time.Now())))
	if strings.Contains(cli.Stderr(err), "accounting storage is disabled") {
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

// jobNum is a plain job's number, and an array element's array number
// ("1234_7", "1234_[8-99]"); 0 for het job ids.
func jobNum(id string) uint64 {
	id, _, _ = strings.Cut(strings.TrimSpace(id), "_")
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Ping checks that the controller answers.
func (b *Backend) Ping(ctx context.Context) (string, error) {
	out, err := b.Output(ctx, failures, nil, "sbatch", "--version")
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
	raw, err := b.Output(ctx, failures, nil, "sinfo", "-h", "-N", "-n", strings.Join(nodes, ","), "-o", "%N|%T|%E")
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

// Partitions lists the partitions and their limits (one scontrol call).
func (b *Backend) Partitions(ctx context.Context) ([]backends.Partition, error) {
	out, err := b.Output(ctx, failures, nil, "scontrol", "show", "partition", "--oneliner")
	if err != nil {
		return nil, err
	}
	return slurm.ParsePartitions(string(out)), nil
}
