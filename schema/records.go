package schema

import (
	"fmt"
	"strings"
	"time"
)

// Format versions of the JSON files in a run directory.
const (
	EventVersion   = 1
	RunVersion     = 1
	OutcomeVersion = 1
	StartedVersion = 1
	ExitVersion    = 1
)

// Event types in status.jsonl.
const (
	EventHeartbeat  = "heartbeat"
	EventProgress   = "progress"
	EventCheckpoint = "checkpoint"
	EventResult     = "result"
	EventMessage    = "message"
)

// Event is one line of status.jsonl, appended by the Task (through
// `tether report` or by writing JSON itself).
type Event struct {
	V        int               `json:"v"`
	TS       time.Time         `json:"ts"`
	Type     string            `json:"type"`
	Attempt  int               `json:"attempt,omitempty"`
	Rank     *int              `json:"rank,omitempty"`
	Host     string            `json:"host,omitempty"`
	Fraction *float64          `json:"fraction,omitempty"`
	Message  string            `json:"message,omitempty"`
	Paths    []string          `json:"paths,omitempty"`
	Resume   string            `json:"resume,omitempty"`
	Results  map[string]string `json:"results,omitempty"`
}

// Outcomes.
const (
	OutcomeSucceeded = "succeeded"
	OutcomePartial   = "partial"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled"
	OutcomeSkipped   = "skipped"
)

// Cause is the typed reason of a decision: metrics, alerts and scripts
// read it; Reason stays the human sentence. The words are part of the
// outcome format (README, "Outcomes and exit codes").
type Cause string

// The causes.
const (
	CauseCompleted   Cause = "completed"    // the Task exited 0
	CauseExit        Cause = "exit"         // the Task exited non-zero or was killed
	CauseTimeout     Cause = "timeout"      // the walltime (or a deadline) was reached
	CauseNodeFail    Cause = "node_fail"    // a node failed or did not boot
	CausePreempted   Cause = "preempted"    // the scheduler preempted the job
	CauseRequeued    Cause = "requeued"     // an administrator or the scheduler requeued the job
	CauseOOM         Cause = "oom"          // the job ran out of memory
	CauseCancelled   Cause = "cancelled"    // tether cancel (a requested cancel)
	CauseSchedCancel Cause = "sched_cancel" // cancelled by the scheduler or an administrator
	CauseLost        Cause = "lost"         // gone from the scheduler without an exit file
	CauseRefused     Cause = "refused"      // the scheduler refused a retry's submission
	CauseWrapper     Cause = "wrapper"      // the wrapper failed before the Task started
	CauseUnexpected  Cause = "unexpected"   // a scheduler state tether cannot map
	// CauseUnsatisfiable: the scheduler says the job can never run (a
	// limit it exceeds, a dependency that can never be met); tether
	// cancelled it. The CLI exits 2: the request must change.
	CauseUnsatisfiable Cause = "unsatisfiable"
	// CauseLimit: the batch system killed the job for going past a
	// resource limit other than memory or walltime (PBS cput, ncpus).
	CauseLimit Cause = "limit"
	// CausePendingTimeout: the job was still pending after the site's
	// [pending] timeout; tether cancelled it.
	CausePendingTimeout Cause = "pending_timeout"
	// CauseElements: an array run ended partial or failed by its
	// elements' outcomes ([proceed] min_succeeded).
	CauseElements Cause = "elements"
)

// Causes lists every cause, for documentation and tests.
var Causes = []Cause{CauseCompleted, CauseExit, CauseTimeout, CauseNodeFail, CausePreempted, CauseRequeued,
	CauseOOM, CauseCancelled, CauseSchedCancel, CauseLost, CauseRefused, CauseWrapper, CauseUnexpected, CauseUnsatisfiable, CausePendingTimeout, CauseLimit, CauseElements}

// Proceeds reports whether downstream steps may go on after an outcome.
func Proceeds(outcome string) bool {
	return outcome == OutcomeSucceeded || outcome == OutcomePartial
}

// RunRecord is run.json: what was asked for and every attempt made.
type RunRecord struct {
	V         int       `json:"v"`
	RunID     string    `json:"run_id"`
	Key       string    `json:"key,omitempty"`
	SpecHash  string    `json:"spec_hash"`
	Site      string    `json:"site"`
	SiteFile  string    `json:"site_file,omitempty"`
	Backend   string    `json:"backend"`
	TaskFile  string    `json:"task_file,omitempty"`
	Task      Task      `json:"task"`
	CreatedAt time.Time `json:"created_at"`
	Attempts  []Attempt `json:"attempts"`
	// CancelRequested is set by `tether cancel`: the run ends cancelled.
	CancelRequested *time.Time `json:"cancel_requested,omitempty"`
	// Env is the submitter's environment as the site's [env] policy let
	// it through, captured at the first submit: every attempt gets the
	// same, whoever submits it (a retry by the monitor included).
	Env map[string]string `json:"env,omitempty"`
	// EnvHash is Env's identity for idempotency (volatile names left out).
	EnvHash string `json:"env_hash,omitempty"`
	// Array is set on an array run (its elements are runs of their own);
	// Element on each element's run.
	Array   *ArrayState `json:"array,omitempty"`
	Element *Element    `json:"element,omitempty"`
}

// CurrentGen returns the attempts of the current generation.
func (r *RunRecord) CurrentGen() []Attempt {
	cur := r.Current()
	if cur == nil {
		return nil
	}
	i := len(r.Attempts) - 1
	for i > 0 && r.Attempts[i-1].Generation == cur.Generation {
		i--
	}
	return r.Attempts[i:]
}

// Attempt is one scheduler job of a run.
type Attempt struct {
	N           int       `json:"n"`
	JobID       string    `json:"job_id,omitempty"`
	SubmittedAt time.Time `json:"submitted_at"`
	// Reason says why this attempt exists: "first", "retry after NODE_FAIL",
	// "resubmit: the key's earlier outcome was failed".
	Reason string `json:"reason"`
	// Generation counts fresh starts of the run; the retry budget applies
	// within one generation.
	Generation int      `json:"generation"`
	ResumeFrom string   `json:"resume_from,omitempty"`
	Exclude    []string `json:"exclude,omitempty"`
	// ExcludeBad are the nodes the site's bad-node list kept this attempt
	// away from (beyond Exclude).
	ExcludeBad []string `json:"exclude_bad_nodes,omitempty"`
	// MemoryMiB is the memory this attempt asked for when a retry after
	// an out-of-memory end raised it above the Task's (0: the Task's).
	MemoryMiB int64 `json:"memory_mib,omitempty"`
	// Unsent: the last submit of this attempt certainly never reached the
	// scheduler (it failed before sending), so it may be sent again at
	// once. Without it, an attempt with no job id waits for find-by-tag
	// and the recovery window before anything is sent again.
	Unsent bool `json:"unsent,omitempty"`
	// InArray: the attempt is an element of its array run's scheduler
	// array; the array run submits it and records its job id (nothing
	// else sends it).
	InArray bool `json:"in_array,omitempty"`
	// CancelSentAt is when the scheduler last accepted a cancel of this
	// attempt's job.
	CancelSentAt *time.Time `json:"cancel_sent_at,omitempty"`
	// Filled when the attempt ends.
	EndedAt  *time.Time `json:"ended_at,omitempty"`
	State    string     `json:"state,omitempty"`
	ExitCode *int       `json:"exit_code,omitempty"`
	Nodes    []string   `json:"nodes,omitempty"`
	Decision string     `json:"decision,omitempty"`
	Cause    Cause      `json:"cause,omitempty"`
	// Usage is what the attempt used, when it ended.
	Usage *Usage `json:"usage,omitempty"`
}

// Usage is what one attempt, or a whole run, cost. For a run, elapsed_s,
// cpu_s and gpu_s are summed over its attempts; max_rss_bytes and nodes
// are the largest of them.
type Usage struct {
	// ElapsedS is the job's wall time in seconds.
	ElapsedS float64 `json:"elapsed_s"`
	// CPUS is CPU-seconds of the allocation (allocated CPUs × elapsed,
	// what accounting bills: Slurm's CPUTimeRAW); GPUS likewise for GPUs.
	CPUS float64 `json:"cpu_s"`
	GPUS float64 `json:"gpu_s"`
	// MaxRSSBytes is the largest resident set of any task or step (0: not
	// reported).
	MaxRSSBytes int64 `json:"max_rss_bytes"`
	Nodes       int   `json:"nodes"`
	// NodeS is node-seconds (nodes × elapsed, summed per attempt).
	NodeS float64 `json:"node_s"`
	// Source says where the figures come from: "sacct", "slurmdb",
	// "qstat", "local", or "exit file" (tether's own evidence: elapsed
	// from the wrapper's start and exit, the allocation from the request).
	Source string `json:"source,omitempty"`
}

// Add sums u into a run's total.
func (t *Usage) Add(u Usage) {
	t.ElapsedS += u.ElapsedS
	t.CPUS += u.CPUS
	t.GPUS += u.GPUS
	t.NodeS += u.NodeS
	t.MaxRSSBytes = max(t.MaxRSSBytes, u.MaxRSSBytes)
	t.Nodes = max(t.Nodes, u.Nodes)
	if t.Source == "" {
		t.Source = u.Source
	} else if u.Source != "" && u.Source != t.Source {
		t.Source = "mixed"
	}
}

// Current returns the last attempt, or nil.
func (r *RunRecord) Current() *Attempt {
	if len(r.Attempts) == 0 {
		return nil
	}
	return &r.Attempts[len(r.Attempts)-1]
}

// Started is the wrapper's started file.
type Started struct {
	V       int       `json:"v"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Nodes   string    `json:"nodes,omitempty"`
	JobID   string    `json:"job_id,omitempty"`
	Attempt int       `json:"attempt"`
	PID     int       `json:"pid"`
}

// ExitFile is the wrapper's exitcode file, written from its EXIT trap.
type ExitFile struct {
	V        int       `json:"v"`
	Time     time.Time `json:"time"`
	ExitCode int       `json:"exit_code"`
	// Signal is set when the Task died from a signal (exit status 128+N).
	Signal int `json:"signal,omitempty"`
	// Warned is set when the warn signal reached the wrapper.
	Warned bool `json:"warned,omitempty"`
	// Error is a wrapper failure before the Task started (e.g. a bad workdir).
	Error string `json:"error,omitempty"`
	// Elapsed is how long the wrapper ran, in seconds; TermAfter, when
	// SIGTERM reached it (seconds after its start).
	Elapsed   int  `json:"elapsed,omitempty"`
	TermAfter *int `json:"term_after,omitempty"`
	// Requeued: the scheduler restarted the job on its own (after a node
	// failure) and the wrapper ran nothing.
	Requeued bool `json:"requeued,omitempty"`
	// Provisional: written when SIGTERM reached the wrapper, before the
	// Task's own exit (the scheduler's SIGKILL may follow too soon for the
	// final record).
	Provisional bool `json:"provisional,omitempty"`
}

// Outcome is outcome.json and the CLI's JSON line. For a run that is not
// finished, Final is false and Outcome is "pending" or "running".
type Outcome struct {
	V              int               `json:"v"`
	RunID          string            `json:"run_id"`
	JobID          string            `json:"job_id"`
	Site           string            `json:"site"`
	Backend        string            `json:"backend"`
	Outcome        string            `json:"outcome"`
	Final          bool              `json:"final"`
	Proceed        bool              `json:"proceed"`
	Reason         string            `json:"reason"`
	Cause          Cause             `json:"cause,omitempty"`
	ExitCode       *int              `json:"exit_code"`
	Signal         int               `json:"signal,omitempty"`
	SchedulerState string            `json:"scheduler_state"`
	Fraction       *float64          `json:"fraction"`
	Message        string            `json:"message,omitempty"`
	Attempts       int               `json:"attempts"`
	RunDir         string            `json:"run_dir"`
	Key            string            `json:"key,omitempty"`
	Nodes          []string          `json:"nodes,omitempty"`
	Results        map[string]string `json:"results,omitempty"`
	Stuck          string            `json:"stuck,omitempty"`
	DecidedAt      *time.Time        `json:"decided_at,omitempty"`
	DecidedBy      string            `json:"decided_by,omitempty"`
	// Truncated names what the status file's limits cut from Message
	// and Results: "message" (cut to its first 4 KiB, ending in …),
	// "results" (a key or value over its limit was left out). README,
	// "Status file limits".
	Truncated []string `json:"truncated,omitempty"`
	// AttemptMemory is each attempt's memory request ("4G", "6G"), given
	// when a retry after an out-of-memory end asked for more.
	AttemptMemory []string `json:"attempt_memory,omitempty"`
	// ExpectedStart is when the scheduler expects a pending run's job to
	// start (not final outcomes; absent when it gives no estimate).
	ExpectedStart *time.Time `json:"expected_start,omitempty"`
	// Usage is what the run's attempts used, summed (see Usage).
	Usage *Usage `json:"usage,omitempty"`
	// Array runs: Counts has the number of elements per outcome word
	// (and "pending", "running" while they live), Succeeded the fraction
	// that ended succeeded or partial, MinSucceeded the fraction needed
	// to proceed, Elements every element.
	Size         int              `json:"size,omitempty"`
	Counts       map[string]int   `json:"counts,omitempty"`
	Succeeded    *float64         `json:"succeeded,omitempty"`
	MinSucceeded *float64         `json:"min_succeeded,omitempty"`
	Elements     []ElementOutcome `json:"elements,omitempty"`
	// Element runs: the array run and the element's index.
	Array string `json:"array,omitempty"`
	Index *int   `json:"index,omitempty"`
}

// JobLabel names a run's job for listings: the current attempt's job id,
// an array run's scheduler arrays ("17,18 (array of 1500)"), or "not yet
// submitted".
func (r *RunRecord) JobLabel() string {
	if r.Array != nil {
		var ids []string
		for _, c := range r.Array.Chunks {
			if c.JobID != "" {
				ids = append(ids, c.JobID)
			}
		}
		if len(ids) > 0 {
			return strings.Join(ids, ",") + fmt.Sprintf(" (array of %d)", r.Array.Size)
		}
	}
	if cur := r.Current(); cur != nil && cur.JobID != "" {
		return cur.JobID
	}
	return "not yet submitted"
}
