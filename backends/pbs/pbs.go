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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/cli"
	"github.com/tether-hpc/tether/internal/shellquote"
	"github.com/tether-hpc/tether/internal/units"
)

// Backend is the PBS backend. Its Runner holds BinDir (qsub, qstat, qdel;
// "" = $PATH), Env (added to the commands' environment) and Timeout
// (bounds one command), and counts the PBS commands run (Calls).
type Backend struct {
	cli.Runner
	Server string // appended to job ids qsub prints without one
	// Place is the -l place of multi-node jobs ("" = scatter, "none" = the
	// server's default).
	Place string
	// Stageout lets the MoM copy stdout/stderr to the run directory at the
	// job's end instead of writing them there as the job runs (-k oed).
	Stageout bool
}

var (
	_ backends.Backend   = (*Backend)(nil)
	_ backends.Finder    = (*Backend)(nil)
	_ backends.Describer = (*Backend)(nil)
	_ backends.Pinger    = (*Backend)(nil)
)

// New returns a backend. Its commands do not inherit a TETHER_TAG of
// tether's own environment (tether running inside a tether job): qsub -V
// would copy it next to the -v one.
func New(binDir, server string, env map[string]string) *Backend {
	return &Backend{Runner: cli.Runner{BinDir: binDir, Env: env, Timeout: 60 * time.Second, Hide: []string{tagVar}}, Server: server}
}

// tagVar is the job variable (qsub -v, Variable_List in qstat -f) that
// carries the request's tag, so FindByTag can find the job again.
const tagVar = "TETHER_TAG"

// failures reads the PBS commands' failures: a server that cannot be
// contacted, and qsub's definite refusals (qsubRefused). Every other
// failure is cli.Unknown: ErrUnavailable, and a qsub's job may have been
// queued.
func failures(r cli.Result) cli.Class {
	switch {
	case unreachable(r):
		return cli.Unavailable
	case r.Name == "qsub" && qsubLimit(r):
		return cli.SubmitLimit
	case r.Name == "qsub" && qsubRefused(r):
		return cli.Refused
	}
	return cli.Unknown
}

// qsubLimit recognises a submit turned away by a limit on queued jobs (or
// on the resources of a user's queued jobs) that clears as jobs end: the
// limits framework's "qsub: would exceed queue generic's per-user limit
// of jobs in 'Q' state" (and its server, complex and per-group forms),
// PBSE_MAXQUED "Maximum number of jobs already in queue".
func qsubLimit(r cli.Result) bool {
	s := string(r.Stderr)
	return strings.Contains(s, "qsub: would exceed") || strings.Contains(s, "Maximum number of jobs already in queue")
}

// unreachable recognises a PBS server that cannot be contacted.
func unreachable(r cli.Result) bool {
	s := string(r.Stderr)
	return r.Code == 162 || r.Code == 255 || strings.Contains(s, "cannot connect to server") ||
		strings.Contains(s, "Couldn't connect to cluster") || strings.Contains(s, "Connection refused") ||
		strings.Contains(s, "System call failure")
}

// Options are the site's choices that shape every qsub command line.
type Options struct {
	// Place is the -l place for multi-node jobs ("" = scatter, "none" =
	// none).
	Place string
	// Stageout: no -k oed; PBS copies the output back at the job's end.
	Stageout bool
}

func (b *Backend) options() Options { return Options{Place: b.Place, Stageout: b.Stageout} }

// Args builds the qsub command line for a request.
//
// stdout and stderr are written in place, in the run directory, as the
// job runs (-k oed, "direct write"): tether logs can follow a running PBS
// job, and a job's output is complete once its wrapper has written the
// exit file. With the MoM's stage-out, the output appears only when the
// copy at the job's end has finished (and a reader may see it half
// copied).
func Args(req backends.JobRequest, o Options) []string {
	place := o.Place
	a := []string{"-N", pbsName(req.Name), "-o", req.Stdout, "-e", req.Stderr}
	if !o.Stageout {
		a = append(a, "-k", "oed")
	}
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
		a = append(a, "-l", "walltime="+units.FormatHMS(req.Walltime))
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
	if req.CPUsPerTask > 0 {
		// without ompthreads PBS sets OMP_NUM_THREADS to the chunk's
		// ncpus: every rank would start ncpus threads
		s += fmt.Sprintf(":ompthreads=%d", cpt)
	}
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
	parts := []string{shellquote.Quote(b.Bin("qsub"))}
	for _, a := range Args(req, b.options()) {
		parts = append(parts, shellquote.Quote(a))
	}
	return strings.Join(parts, " ")
}

// Submit runs qsub. Only qsub's definite refusals are ErrRejected; a qsub
// that timed out, printed no job id or failed in a way not known to be a
// refusal may have queued the job: ErrUnavailable, and FindByTag finds it.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	r, err := b.Run(ctx, req.Env, "qsub", Args(req, b.options())...)
	return b.qsubResult(r, err)
}

// qsubResult reads the job id qsub printed, or classifies its failure.
func (b *Backend) qsubResult(r cli.Result, err error) (backends.JobID, error) {
	if err == nil {
		err = r.Err(failures)
	}
	var ce *cli.Error
	switch {
	case err == nil:
	case errors.Is(err, backends.ErrNotSent), errors.As(err, &ce) && ce.Class != cli.Unknown:
		return "", err
	default:
		return "", fmt.Errorf("%w (the job may have been queued)", err)
	}
	id := jobIDLine(string(r.Stdout))
	if id == "" {
		return "", fmt.Errorf("%w: qsub printed %q, not a job id (the job may have been queued)", backends.ErrUnavailable, r.Stdout)
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
func qsubRefused(r cli.Result) bool {
	s := string(r.Stderr)
	if r.Code == 2 && strings.Contains(s, "usage: qsub") {
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
		if _, err := b.Output(ctx, failures, nil, "qstat", "-B"); err != nil {
			return nil, err
		}
		return map[backends.JobID]backends.JobStatus{}, nil
	}
	r, err := b.Run(ctx, nil, "qstat", args...)
	if err != nil {
		return nil, err
	}
	// qstat fails for ids it does not know, and prints the others
	if (unreachable(r) || len(bytes.TrimSpace(r.Stdout)) == 0) && !onlyUnknown(r.Stderr) {
		if err := r.Err(failures); err != nil {
			return nil, err
		}
	}
	out, err := ParseQstat(r.Stdout)
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
	out, err := b.Output(ctx, failures, nil, "qstat", "-x", "-f", "-F", "json")
	if err != nil {
		return "", false, err
	}
	id, ok, err := findTagged(out, tag)
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

// validID accepts PBS ids ("12.pbshost"), array ids ("12[].pbshost") and
// subjob ids ("12[5].pbshost").
func validID(id string) bool {
	seq, _, _ := strings.Cut(id, ".")
	if strings.ContainsAny(id, " \t\n,") {
		return false
	}
	if base, idx, ok := strings.Cut(seq, "["); ok {
		idx, closed := strings.CutSuffix(idx, "]")
		if !closed || strings.Contains(idx, "[") {
			return false
		}
		if _, err := strconv.ParseUint(idx, 10, 64); idx != "" && err != nil {
			return false
		}
		seq = base
	} else if strings.Contains(id, "]") {
		return false
	}
	_, err := strconv.ParseUint(seq, 10, 64)
	return err == nil
}

// Cancel runs qdel; a finished (exit 35, PBSE_BADSTATE; 55 for a
// finished subjob of an array that lives on) or unknown (153,
// PBSE_UNKJOBID) job needs no cancel. Any other failure is
// ErrUnavailable: the cancel is issued again.
func (b *Backend) Cancel(ctx context.Context, id backends.JobID) error {
	_, err := b.Output(ctx, failures, nil, "qdel", string(id))
	var ce *cli.Error
	if errors.As(err, &ce) && (ce.Code == 35 || ce.Code == 55 || ce.Code == 153) {
		return nil
	}
	return err
}

// Ping checks that the server answers.
func (b *Backend) Ping(ctx context.Context) (string, error) {
	if _, err := b.Query(ctx, nil); err != nil {
		return "", err
	}
	return "PBS server answers (qstat -B)", nil
}

// Partitions lists the execution queues and their resources_max limits
// (`qstat -Qf -F json`), the server's default queue marked (`qstat -Bf -F
// json`): two calls, made only when the site's cached list is stale.
func (b *Backend) Partitions(ctx context.Context) ([]backends.Partition, error) {
	srv, err := b.Output(ctx, failures, nil, "qstat", "-Bf", "-F", "json")
	if err != nil {
		return nil, err
	}
	raw, err := b.Output(ctx, failures, nil, "qstat", "-Qf", "-F", "json")
	if err != nil {
		return nil, err
	}
	parts, err := ParseQueues(raw, ParseDefaultQueue(srv))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", backends.ErrUnavailable, err)
	}
	return parts, nil
}
