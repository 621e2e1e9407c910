// Package backends defines what every batch-system adapter provides: the
// Backend interface, the normalized job states and JobStatus, and the
// backend-neutral JobRequest. One sub-package per scheduler implements it;
// package registry opens the one a site names.
package backends

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// JobID is a scheduler's job id ("1234", "17.pbs01", a local id).
type JobID string

// State is a normalized job state.
type State string

// The normalized states. Every scheduler's native states map onto these.
const (
	Pending     State = "PENDING"
	Configuring State = "CONFIGURING"
	Running     State = "RUNNING"
	Completing  State = "COMPLETING"
	Suspended   State = "SUSPENDED"
	Requeued    State = "REQUEUED"
	Completed   State = "COMPLETED"
	Failed      State = "FAILED"
	Timeout     State = "TIMEOUT"
	Cancelled   State = "CANCELLED"
	NodeFail    State = "NODE_FAIL"
	Preempted   State = "PREEMPTED"
	OutOfMemory State = "OUT_OF_MEMORY"
	BootFail    State = "BOOT_FAIL"
	Deadline    State = "DEADLINE"
	// SpecialExit is Slurm's SPECIAL_EXIT: the Task exited with a code the
	// site requeues with a hold. The attempt is over, but the held job
	// stays in the queue until someone cancels or releases it, so tether
	// cancels it before deciding.
	SpecialExit State = "SPECIAL_EXIT"
	// Unknown is a job the scheduler no longer knows (vanished) or whose
	// state cannot be mapped. It is never treated as Completed: the exit
	// file decides, after a grace window.
	Unknown State = "UNKNOWN"
)

// AllStates lists every normalized state.
var AllStates = []State{Pending, Configuring, Running, Completing, Suspended, Requeued,
	Completed, Failed, Timeout, Cancelled, NodeFail, Preempted, OutOfMemory, BootFail, Deadline, SpecialExit, Unknown}

// Terminal reports whether the job has ended.
func (s State) Terminal() bool {
	switch s {
	case Completed, Failed, Timeout, Cancelled, NodeFail, Preempted, OutOfMemory, BootFail, Deadline, SpecialExit:
		return true
	}
	return false
}

// Started reports whether the job has (or had) resources.
func (s State) Started() bool {
	switch s {
	case Pending, Requeued, Unknown:
		return false
	}
	return true
}

// JobStatus is one job as the scheduler reports it, normalized. Zero
// fields are left out of its JSON: every monitor cycle writes the site's
// poll cache, one JobStatus per active job.
type JobStatus struct {
	ID     JobID  `json:",omitzero"`
	State  State  `json:",omitzero"`
	Native string `json:",omitzero"` // the scheduler's own state string, flags included
	// ExitCode and Signal are the scheduler's view; the wrapper's exit
	// file takes precedence.
	ExitCode *int      `json:",omitzero"`
	Signal   int       `json:",omitzero"`
	Reason   string    `json:",omitzero"` // pending reason or failure reason
	Nodes    []string  `json:",omitzero"`
	Submit   time.Time `json:",omitzero"`
	Start    time.Time `json:",omitzero"`
	End      time.Time `json:",omitzero"`
	// Deadline is when the scheduler will end the job (start + limit).
	Deadline time.Time `json:",omitzero"`
	// Alloc is what the job was given, where the scheduler says.
	Alloc Allocation `json:",omitzero"`
	// LimitKill names the resource limit (other than memory and
	// walltime) the batch system killed the job for: "cput", "ncpus".
	LimitKill string `json:",omitzero"`
	// ExpectedStart is when the scheduler expects a pending job to start
	// (Slurm's backfill estimate, PBS's estimated.start_time); zero when
	// it gives none.
	ExpectedStart time.Time `json:",omitzero"`
}

// Equal reports whether two statuses say the same (times by Equal).
func (st JobStatus) Equal(o JobStatus) bool {
	sameCode := st.ExitCode == nil && o.ExitCode == nil || st.ExitCode != nil && o.ExitCode != nil && *st.ExitCode == *o.ExitCode
	return st.ID == o.ID && st.State == o.State && st.Native == o.Native && sameCode && st.Signal == o.Signal &&
		st.Reason == o.Reason && slices.Equal(st.Nodes, o.Nodes) && st.Submit.Equal(o.Submit) && st.Start.Equal(o.Start) &&
		st.End.Equal(o.End) && st.Deadline.Equal(o.Deadline) && st.Alloc == o.Alloc && st.LimitKill == o.LimitKill &&
		st.ExpectedStart.Equal(o.ExpectedStart)
}

// PendingStart moves the start time a scheduler reports for a job that
// has not started (Slurm's StartTime of a pending job is its expected
// start) into ExpectedStart, so that Start and Deadline are only ever
// a real start and its end.
func (st *JobStatus) PendingStart() {
	if st.State != Pending && st.State != Requeued {
		return
	}
	if !st.Start.IsZero() {
		st.ExpectedStart = st.Start
	}
	st.Start, st.Deadline = time.Time{}, time.Time{}
}

// UsageReader is a backend that reads what a finished job used from the
// scheduler's accounting (one call per decided attempt, not per poll).
type UsageReader interface {
	// Usage reports the job's usage; ok is false when accounting has no
	// record of it (yet).
	Usage(ctx context.Context, id JobID) (u Usage, ok bool, err error)
}

// Usage is a job's accounted use; zero fields were not reported.
type Usage struct {
	Elapsed     time.Duration
	CPUSeconds  float64 // allocated CPUs × elapsed
	GPUSeconds  float64 // allocated GPUs × elapsed
	MaxRSSBytes int64
	Nodes       int
	Source      string // "sacct", "slurmdb", "qstat", "local"
}

// Allocation is what a scheduler gave a job; a zero field was not
// reported.
type Allocation struct {
	Nodes     int   `json:",omitzero"`
	CPUs      int   `json:",omitzero"`
	GPUs      int   `json:",omitzero"`
	MemoryMiB int64 `json:",omitzero"`
}

// JobRequest is everything a backend needs to submit one attempt.
type JobRequest struct {
	Name    string
	RunID   string
	Attempt int
	// Script is the wrapper (job.sh); the backend runs it with bash.
	Script string
	// Dir is the attempt directory: the job's working directory at start.
	Dir    string
	Stdout string
	Stderr string

	Nodes         int
	NTasks        int
	NTasksPerNode int
	CPUsPerTask   int
	GPUsPerTask   int
	MemoryMiB     int64
	Walltime      time.Duration

	// WarnSignal ("USR1") is due WarnBefore ahead of the walltime. Batch
	// backends ask the scheduler for it when they can; the wrapper forwards
	// it to the Task.
	WarnSignal string
	WarnBefore time.Duration

	Partition   string
	Account     string
	QoS         string
	Reservation string
	Constraint  string
	Exclude     []string
	Requeue     bool
	ExtraArgs   []string
	// Tag marks the job so it can be found again by run and attempt
	// (a job comment or name suffix).
	Tag string
	// Env is the part of the submitter's environment the site's policy
	// lets through (run.json keeps it, so a retry gets the same). A
	// backend passes exactly these to the job and nothing else of its
	// own process environment; the wrapper adds the Task's and the
	// site's variables and tether's own.
	Env map[string]string `json:"-"`
	// Array, set by a backend's SubmitArray, makes the request one job
	// array (the slurmrest backend sends it in the job description).
	Array *ArraySpec `json:"array,omitempty"`
}

// SlurmExpr is the array as Slurm writes it: "0-199%50".
func (a ArraySpec) SlurmExpr() string {
	s := fmt.Sprintf("0-%d", a.Size-1)
	if a.MaxRunning > 0 {
		s += fmt.Sprintf("%%%d", a.MaxRunning)
	}
	return s
}

// SlurmPath is a request path in Slurm's filename pattern: % escaped, and
// %a where an array element's index goes.
func SlurmPath(p string) string {
	return strings.ReplaceAll(strings.ReplaceAll(p, "%", "%%"), ArrayIndexToken, "%a")
}

// EnvList renders a job environment as sorted NAME=value entries (for an
// exec.Cmd's Env or a REST job's environment).
func EnvList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// Backend is one batch system.
type Backend interface {
	// Submit starts one job and returns its id.
	Submit(ctx context.Context, req JobRequest) (JobID, error)
	// Query returns the status of all ids in ONE scheduler call. Ids the
	// scheduler no longer knows are absent from the map.
	Query(ctx context.Context, ids []JobID) (map[JobID]JobStatus, error)
	// Cancel asks the scheduler to end a job.
	Cancel(ctx context.Context, id JobID) error
}

// Finder is implemented by backends that can find a job by its tag, so a
// submit interrupted before its job id was recorded is not repeated.
type Finder interface {
	FindByTag(ctx context.Context, tag string) (JobID, bool, error)
}

// Watcher is implemented by backends whose job state lives in files; the
// waiter watches those paths for changes instead of waiting a poll interval.
type Watcher interface {
	WatchPaths() []string
}

// Describer is implemented by backends that can show the request they
// would send (the sbatch command line, the REST body) for dry runs.
type Describer interface {
	Describe(req JobRequest) string
}

// WarnDeliverer is implemented by backends that deliver the warn signal
// to the batch script themselves (Slurm's --signal=B:, the local
// supervisor). For the others the wrapper runs its own timer.
type WarnDeliverer interface {
	DeliversWarnSignal(ctx context.Context) bool
}

// NodeChecker is implemented by backends that can tell which of a job's
// nodes are down, so a node failure names the node that failed.
type NodeChecker interface {
	DownNodes(ctx context.Context, nodes []string) (map[string]string, error) // node -> reason
}

// StepOOMChecker is implemented by backends that can tell whether one of
// a failed job's steps ran out of memory (an srun step OOM-killed while
// the batch script lived on: the job is FAILED, the step OUT_OF_MEMORY).
type StepOOMChecker interface {
	// StepOOM names the steps that ran out of memory ("" when none).
	StepOOM(ctx context.Context, id JobID) (string, error)
}

// Pinger is implemented by backends that can check connectivity and auth.
type Pinger interface {
	Ping(ctx context.Context) (string, error)
}

// RateLimited reports whether a failed call was the scheduler throttling
// tether: slurmctld's RPC rate limit (rl_enable), an HTTP 429 from
// slurmrestd or a proxy.
func RateLimited(err error) bool {
	if err == nil {
		return false
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "rate limit") || strings.Contains(m, "too many requests") || strings.Contains(m, "http 429")
}

// Errors a backend wraps so the CLI can choose its exit code.
var (
	// ErrRejected: the scheduler refused the request (bad partition, time
	// limit too long, too many CPUs). The request must change: exit 2.
	ErrRejected = errors.New("rejected by the scheduler")
	// ErrUnavailable: the scheduler could not be reached or answered with
	// an error. Retrying later may work: exit 3.
	ErrUnavailable = errors.New("scheduler unavailable")
	// ErrNotSent wraps an ErrUnavailable error when the request certainly
	// never reached the scheduler (no connection, API negotiation failed,
	// the command could not start): a submit may be sent again at once.
	ErrNotSent = errors.New("request not sent")
	// ErrSubmitLimit wraps ErrNotSent when the scheduler turned a submit
	// away for a limit on the number of jobs (Slurm's
	// QOSMaxSubmitJobPerUserLimit, AssocMaxSubmitJobLimit, MaxJobCount
	// reached; a PBS queue's max_queued per user): no job exists, and the
	// same request is taken once some jobs have ended, so the submitter
	// waits and sends it again.
	ErrSubmitLimit = errors.New("the scheduler's limit on submitted jobs is reached")
	// ErrMaybeSubmitLimit wraps ErrSubmitLimit when the scheduler's answer
	// does not say which limit refused the job: slurmrestd answers Slurm
	// error 2050 "Job violates accounting/QOS policy (job submit limit,
	// user's size and/or time limits)" without the reason sbatch prints
	// (QOSMaxSubmitJobPerUserLimit). A submit limit clears as jobs end, a
	// size or time limit never does: the submitter waits a bounded time,
	// then takes it as a refusal.
	ErrMaybeSubmitLimit = errors.New("possibly a limit on submitted jobs")
	// ErrAuth: credentials were refused or expired: exit 3, and the admin
	// must fix the site's auth.
	ErrAuth = errors.New("scheduler refused the credentials")
)

// Partition is a Slurm partition or a PBS queue with the limits a job must
// fit. A zero limit is no limit (or one the scheduler does not report).
type Partition struct {
	Name string `json:"name"`
	// Kind is what the scheduler calls it: "partition" (the default) or
	// "queue" (PBS).
	Kind string `json:"kind,omitempty"`
	// Default: jobs that name no partition go here. Unknown is false for
	// all (REST v0.0.40+ does not say which partition is the default).
	Default bool `json:"default,omitempty"`
	// Up: the partition takes jobs and starts them (a DOWN or DRAIN one
	// takes them but they wait).
	Up               bool          `json:"up"`
	Inactive         bool          `json:"inactive,omitempty"` // refuses new jobs (Slurm INACTIVE, a disabled PBS queue)
	MaxTime          time.Duration `json:"max_time,omitempty"`
	MaxNodes         int           `json:"max_nodes,omitempty"` // per job
	TotalNodes       int           `json:"total_nodes,omitempty"`
	TotalCPUs        int           `json:"total_cpus,omitempty"`
	MaxCPUsPerNode   int           `json:"max_cpus_per_node,omitempty"`
	MaxMemPerNodeMiB int64         `json:"max_mem_per_node_mib,omitempty"`
	MaxCPUs          int           `json:"max_cpus,omitempty"` // per job (PBS resources_max.ncpus)
}

// PartitionLister is implemented by backends that can list the
// scheduler's partitions (queues) and their limits, so that a request that
// can never run is refused before it is submitted.
type PartitionLister interface {
	Partitions(ctx context.Context) ([]Partition, error)
}

// Noun is the partition's kind, "partition" unless the scheduler says queue.
func (p Partition) Noun() string {
	if p.Kind == "" {
		return "partition"
	}
	return p.Kind
}

// ArrayIndexToken, in the Stdout and Stderr of a request submitted as an
// array, stands for the element's scheduler index; each backend writes it
// its scheduler's way (Slurm's %a, PBS's ^array_index^).
const ArrayIndexToken = "{{tether_array_index}}"

// ArraySpec is the shape of one scheduler array: elements with the
// scheduler indices 0..Size-1, at most MaxRunning running at once (0:
// the scheduler's limit).
type ArraySpec struct {
	Size       int
	MaxRunning int
}

// ArraySubmitter is implemented by backends that submit job arrays: one
// submit (one scheduler RPC) for every element.
type ArraySubmitter interface {
	// SubmitArray starts one array of req and returns the array's id.
	// Cancel of that id ends every element with one call, and FindByTag
	// of the request's tag finds it.
	SubmitArray(ctx context.Context, req JobRequest, a ArraySpec) (JobID, error)
	// ElementID is the id of the array's element with scheduler index i,
	// as Query, Cancel and Usage take it.
	ElementID(array JobID, i int) JobID
	// ArrayIndexVar names the variable that gives each element its
	// scheduler index in its environment (SLURM_ARRAY_TASK_ID).
	ArrayIndexVar() string
}
