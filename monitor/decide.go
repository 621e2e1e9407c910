package monitor

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/schema"
)

// Action is what the decision asks for.
type Action int

const (
	// Wait: the job is not finished, or the evidence is not in yet.
	Wait Action = iota
	// Retry: start a new attempt in the same run.
	Retry
	// Finish: the run is over with Decision.Outcome.
	Finish
	// Submit: the run has no attempt yet; submit the first one.
	Submit
	// Recover: the current attempt has no job id (its submitter died or
	// the answer was lost): find the job by its tag, and send it again
	// only when it certainly never reached the scheduler, or when the
	// recovery window has passed with no sign of it.
	Recover
)

func (a Action) String() string {
	return [...]string{"wait", "retry", "finish", "submit", "recover"}[a]
}

// Evidence is what the Task's checkpoints prove.
type Evidence struct {
	// Fraction of the latest checkpoint, nil without one.
	Fraction *float64
	// Satisfied: the proceed policy's min_fraction and require_outputs hold.
	Satisfied bool
	// Resume is the state of the latest resumable checkpoint ("" if none).
	Resume string
	// Why explains Satisfied in words, for reasons.
	Why string
}

// Input is everything a decision weighs.
type Input struct {
	// State is the scheduler's normalized state; Missing is set when the
	// scheduler no longer knows the job, MissingFor how long it has not.
	State     backends.State
	Native    string
	SchedExit *int
	SchedSig  int
	SchedNote string // the scheduler's reason
	// SchedLimit is the resource limit the batch system killed the job
	// for ("cput", "ncpus"; "" for none).
	SchedLimit string
	Nodes      []string
	Missing    bool
	MissingFor time.Duration
	Grace      time.Duration
	// DownNodes are the job's nodes the scheduler reports down, with why.
	DownNodes map[string]string

	// EndedFor is how long the scheduler has reported the job ended (in
	// scheduler time: between the first answer that showed it ended and
	// the latest answer); EvidenceGrace is how long a terminal state
	// without an exit file waits for the file to become visible (NFS and
	// Lustre attribute caches).
	EndedFor      time.Duration
	EvidenceGrace time.Duration

	// NoAttempt: the run has no attempt yet. NoJob: the current attempt
	// has no job id; Unsent says its submit certainly never left, and
	// SubmitAge is how long ago it was made (RecoverAfter is the window
	// after which a job that find-by-tag cannot see is taken as never
	// submitted). Started: the wrapper's started file exists.
	NoAttempt    bool
	NoJob        bool
	Unsent       bool
	SubmitAge    time.Duration
	RecoverAfter time.Duration
	Started      bool

	Exit *schema.ExitFile // nil when the wrapper wrote none
	// ExitConclusive: the exit file of this attempt's latest start says
	// the Task ended by itself (an exit code, no signal, no SIGTERM
	// before it): the run is decided without waiting for the scheduler.
	ExitConclusive  bool
	CancelRequested bool
	// CancelSentFor is how long before the latest scheduler answer a
	// cancel of this job was accepted (nil: never). A cancel is sent
	// again while the job lives on after the scheduler has answered.
	CancelSentFor *time.Duration
	// SchedulerRequeue: the site lets the scheduler requeue jobs itself.
	SchedulerRequeue bool
	Evidence         Evidence
	Proceed          schema.Proceed
	Retry            schema.Retry
	// Attempts made in the current generation, this one included.
	Attempts int
	Walltime time.Duration
	// PendingFor is how long the current attempt has waited since its
	// submit (in the scheduler answer's time) without starting;
	// PendingTimeout is the site's [pending] timeout (0: none).
	PendingFor     time.Duration
	PendingTimeout time.Duration
	// MemoryMiB is the memory the current attempt asked for (0: none).
	MemoryMiB int64
	// StepOOM names the job's steps the scheduler reports OUT_OF_MEMORY
	// (a step killed while the batch script lived on), or is the batch
	// system's memory-kill notice from the job's stderr; "" for none.
	StepOOM string
}

// Decision is the verdict.
type Decision struct {
	Action  Action
	Outcome string // for Finish
	// Cause is the typed reason (for Finish and Retry); Reason the sentence.
	Cause    schema.Cause
	Reason   string
	ExitCode *int // the Task's exit code, when known
	Signal   int
	// ResumeFrom is the checkpoint state a Retry resumes from.
	ResumeFrom string
	// MemoryMiB is the memory a Retry after an out-of-memory end asks
	// for (0: the same as the attempt that ended).
	MemoryMiB int64
	// FailedNodes are the nodes a NODE_FAIL attempt ran on.
	FailedNodes []string
	// FromExitFile: decided on the wrapper's conclusive exit file before
	// the scheduler reported the job's end.
	FromExitFile bool
	// CancelJob: end the scheduler's job before acting (a job the
	// scheduler requeued although tether owns retries, a held
	// SPECIAL_EXIT job, or a requested cancel not yet taken).
	CancelJob bool
}

// cancelResend is how long a live job may outlast an accepted cancel (in
// scheduler time) before the cancel is sent again.
const cancelResend = 30 * time.Second

// ExitCode is the CLI exit code of a final outcome: 0 proceed, 1 failed
// or cancelled, 2 a request that can never run (cause unsatisfiable), 99
// skip downstream.
func ExitCode(outcome string, cause schema.Cause) int {
	if cause == schema.CauseUnsatisfiable {
		return 2
	}
	switch outcome {
	case schema.OutcomeSucceeded, schema.OutcomePartial:
		return 0
	case schema.OutcomeSkipped:
		return 99
	}
	return 1
}

// neverReasons are the pending reasons that do not clear by waiting:
// Slurm's (squeue %r, the REST state_reason) for a request above a
// partition, association or QOS limit, a dependency that can never be
// met, constraints no node has, an account or QOS the user may not use;
// and OpenPBS's job comment for a job the scheduler found can never run.
// Reasons that clear (Resources, Priority, ReqNodeNotAvail with nodes
// down, Dependency) are not here.
var neverReasons = []string{
	"PartitionTimeLimit", "PartitionNodeLimit", "AssocMaxWallDurationPerJobLimit",
	"QOSMaxWallDurationPerJobLimit", "QOSMaxNodePerJobLimit", "DependencyNeverSatisfied",
	"BadConstraints", "InvalidAccount", "InvalidQOS", "Can Never Run",
}

// NeverRuns reports whether a pending job's reason says it can never run.
func NeverRuns(reason string) bool {
	for _, r := range neverReasons {
		if strings.Contains(reason, r) {
			return true
		}
	}
	return false
}

// Decide applies the decision table. It is pure: the same input gives the
// same decision.
func Decide(in Input) Decision {
	code, sig := in.exitStatus()
	d := Decision{ExitCode: code, Signal: sig}
	finish := func(outcome string, cause schema.Cause, reason string) Decision {
		d.Action, d.Outcome, d.Cause, d.Reason = Finish, outcome, cause, reason
		return d
	}
	if in.NoAttempt {
		if in.CancelRequested {
			return finish(schema.OutcomeCancelled, schema.CauseCancelled, "cancelled before a job was submitted")
		}
		d.Action, d.Reason = Submit, "no attempt yet: submitting the first"
		return d
	}
	if in.NoJob {
		switch {
		case in.Exit != nil:
			d.Action, d.Reason = Recover, "the job ended but its id was never recorded; looking for it by its tag"
		case in.Started:
			// the job runs (the wrapper started) but its id is unknown
			d.Action, d.Reason = Recover, "the job started but its id was never recorded; looking for it by its tag"
		case in.Unsent || in.SubmitAge >= in.RecoverAfter:
			d.Action = Recover
			d.Reason = "the submit never reached the scheduler; looking for the job by its tag, then sending it again"
			if !in.Unsent {
				d.Reason = fmt.Sprintf("no job id recorded %s after the submit; looking for the job by its tag, then sending it again", in.SubmitAge.Round(time.Second))
			}
			if in.CancelRequested {
				d.Reason = "cancel requested before the job id was recorded; looking for the job by its tag"
			}
		default:
			d.Action = Recover
			d.Reason = fmt.Sprintf("the submit's answer was lost; looking for the job by its tag (sent again only after %s)", in.RecoverAfter)
		}
		return d
	}
	state := in.State
	if in.CancelRequested && (state == "" || !state.Terminal()) && !in.Missing {
		// the job lives on: make sure the scheduler was told
		if state != "" && state != backends.Unknown && (in.CancelSentFor == nil || *in.CancelSentFor >= cancelResend) {
			d.CancelJob = true
		}
	}
	if in.ExitConclusive && !in.Missing && state != backends.Requeued && (state == "" || !state.Terminal() && state != backends.Unknown) {
		// The Task ended by itself: only signalled ends (walltime,
		// cancel, preemption, an OOM kill, a lost node) need the
		// scheduler's word to be told apart.
		live := "before the scheduler's first report"
		if state != "" {
			live = "the scheduler still lists the job " + strings.ToLower(string(state))
		}
		d.FromExitFile = true
		return finish(schema.OutcomeSucceeded, schema.CauseCompleted, "completed with exit code 0 (decided from the exit file; "+live+")")
	}
	if state == "" && !in.Missing {
		// the scheduler has not answered about this job yet: nothing is
		// decided from silence, nor from an exit file that needs the
		// scheduler to explain it
		d.Reason = "submitted; waiting for the scheduler's first report"
		return d
	}
	if in.Missing || state == backends.Unknown {
		if in.Exit == nil {
			if in.Missing && in.MissingFor >= in.Grace {
				if in.CancelRequested {
					return finish(schema.OutcomeCancelled, schema.CauseCancelled, "cancelled; the job left the scheduler without an exit file")
				}
				return finish(schema.OutcomeFailed, schema.CauseLost, fmt.Sprintf("lost: the job vanished from the scheduler and left no exit file within %s", in.Grace))
			}
			if in.Missing {
				d.Reason = fmt.Sprintf("gone from the scheduler %s ago; waiting up to %s for the exit file", in.MissingFor.Round(time.Second), in.Grace)
			} else {
				d.Reason = "submitted; waiting for the scheduler's first report"
			}
			return d
		}
		// Vanished (or never known), but the wrapper's exit file tells how it ended.
		if in.CancelRequested && !(*code == 0 && sig == 0) {
			return finish(schema.OutcomeCancelled, schema.CauseCancelled, "cancelled by request")
		}
		if in.walltimeKill() {
			return in.timeout(d, backends.Timeout)
		}
		if *code == 0 && sig == 0 {
			return finish(schema.OutcomeSucceeded, schema.CauseCompleted, "completed (exit code 0, decided from the exit file)")
		}
		what := fmt.Sprintf("%s (decided from the exit file; the job left the scheduler)", describeExit(code, sig, in.Exit))
		if in.StepOOM != "" {
			what = "ran out of memory (" + in.StepOOM + "); " + what
			if in.Retry.OnOOM {
				return in.outOfMemory(d, what)
			}
			return in.failure(d, schema.CauseOOM, what)
		}
		return in.failure(d, in.exitCause(), what)
	}
	if state == backends.Requeued && !in.SchedulerRequeue && !in.CancelRequested {
		// tether owns retries: cancel the scheduler's restart and retry
		d = in.requeued(d, "the scheduler requeued the job; tether retries instead")
		d.CancelJob = true
		return d
	}
	if state == backends.Pending && !in.CancelRequested && NeverRuns(in.SchedNote) {
		// waiting would be forever: end the job, and say what to change
		d.CancelJob = true
		return finish(schema.OutcomeFailed, schema.CauseUnsatisfiable, "the scheduler says the job can never run: "+in.SchedNote)
	}
	if state == backends.Pending && !in.CancelRequested && !in.Started && in.PendingTimeout > 0 && in.PendingFor >= in.PendingTimeout {
		// the site gives up on a job that waits this long
		d.CancelJob = true
		why := ""
		if in.SchedNote != "" {
			why = " (the scheduler's reason: " + in.SchedNote + ")"
		}
		return finish(schema.OutcomeFailed, schema.CausePendingTimeout,
			fmt.Sprintf("still pending after %s, the site's [pending] timeout of %s%s", in.PendingFor.Round(time.Second), in.PendingTimeout, why))
	}
	if !state.Terminal() {
		d.Reason = "job is " + strings.ToLower(string(state))
		if d.CancelJob || in.CancelRequested {
			d.Reason += "; cancel requested"
		}
		return d
	}
	if in.Exit == nil && in.EndedFor < in.EvidenceGrace && !in.CancelRequested && expectsExitFile(state) {
		// The job ended, but the wrapper's files may not be visible here
		// yet (a shared filesystem's attribute cache): wait a little.
		d.Reason = fmt.Sprintf("job ended %s; waiting up to %s for the exit file", state, in.EvidenceGrace)
		return d
	}
	if state == backends.SpecialExit {
		// held in the queue: end it, then decide from the Task's exit
		d.CancelJob = true
	}
	if in.Exit != nil && in.Exit.Requeued && !in.CancelRequested {
		// the scheduler restarted the job itself (Slurm 22.05's REST API
		// ignores requeue=false) after losing a node, and the wrapper ran
		// nothing: a node failure, whether or not the node is back yet
		in.SchedNote = "the scheduler requeued the job; tether retries instead"
		return in.lostResources(d, backends.NodeFail)
	}
	if in.CancelRequested && (state != backends.Completed || (code != nil && *code != 0) || sig != 0) {
		// a requested cancel wins over a Task killed by the cancel's SIGTERM
		return finish(schema.OutcomeCancelled, schema.CauseCancelled, "cancelled by request")
	}
	switch state {
	case backends.Completed, backends.SpecialExit:
		if (code == nil || *code == 0) && sig == 0 && state == backends.Completed {
			return finish(schema.OutcomeSucceeded, schema.CauseCompleted, "completed with exit code 0")
		}
		what := describeExit(code, sig, in.Exit)
		if state == backends.SpecialExit {
			what += " (SPECIAL_EXIT: the scheduler held the job; tether cancelled it)"
		}
		return in.failure(d, in.exitCause(), what)
	case backends.Failed, backends.OutOfMemory:
		what := describeExit(code, sig, in.Exit)
		cause := in.exitCause()
		if state == backends.OutOfMemory {
			what, cause = "ran out of memory; "+what, schema.CauseOOM
		} else if in.StepOOM != "" {
			what, cause = "ran out of memory ("+in.StepOOM+"); "+what, schema.CauseOOM
		} else if in.SchedLimit != "" {
			cause = schema.CauseLimit
		}
		if code != nil && *code == 0 && state == backends.Failed {
			what = "the scheduler reports FAILED although the Task exited 0"
		}
		if in.SchedNote != "" && (state == backends.OutOfMemory || in.Exit == nil) {
			what += " (" + in.SchedNote + ")"
		}
		if cause == schema.CauseOOM && in.Retry.OnOOM {
			return in.outOfMemory(d, what)
		}
		return in.failure(d, cause, what)
	case backends.Timeout, backends.Deadline:
		return in.timeout(d, state)
	case backends.NodeFail, backends.Preempted, backends.BootFail:
		return in.lostResources(d, state)
	case backends.Cancelled:
		why := "cancelled by the scheduler or an administrator"
		if in.SchedNote != "" {
			why += " (" + in.SchedNote + ")"
		}
		return finish(schema.OutcomeCancelled, schema.CauseSchedCancel, why)
	}
	return finish(schema.OutcomeFailed, schema.CauseUnexpected, fmt.Sprintf("unexpected scheduler state %s", in.Native))
}

// expectsExitFile: the wrapper writes an exit file when a job ends this
// way (not when its node died or the scheduler took the job away).
func expectsExitFile(s backends.State) bool {
	switch s {
	case backends.Completed, backends.Failed, backends.Timeout, backends.Deadline, backends.OutOfMemory, backends.SpecialExit:
		return true
	}
	return false
}

// exitCause is the cause of a failed Task: a wrapper failure or its exit.
func (in Input) exitCause() schema.Cause {
	if in.Exit != nil && in.Exit.Error != "" {
		return schema.CauseWrapper
	}
	return schema.CauseExit
}

// walltimeKill tells, from the exit file alone, that SIGTERM came at the
// walltime: the scheduler has forgotten the job (no history), but the
// wrapper noted when it was told to stop.
func (in Input) walltimeKill() bool {
	e := in.Exit
	if e == nil || e.TermAfter == nil || in.Walltime <= 0 {
		return false
	}
	slack := min(10*time.Second, in.Walltime/10)
	return time.Duration(*e.TermAfter)*time.Second >= in.Walltime-slack
}

// exitStatus takes the exit code from the wrapper's file first and from the
// scheduler second.
func (in Input) exitStatus() (*int, int) {
	if in.Exit != nil {
		c := in.Exit.ExitCode
		return &c, in.Exit.Signal
	}
	if in.SchedExit != nil {
		c := *in.SchedExit
		return &c, in.SchedSig
	}
	return nil, in.SchedSig
}

func describeExit(code *int, sig int, exit *schema.ExitFile) string {
	if exit != nil && exit.Provisional && exit.Error == "" {
		// the wrapper was killed (SIGKILL after the scheduler's kill
		// wait) before it could record the Task's own exit
		return fmt.Sprintf("SIGTERM reached the job and it was killed before the Task's exit was recorded (code %d assumed)", exit.ExitCode)
	}
	switch {
	case exit != nil && exit.Error != "":
		return "the wrapper failed before the Task started: " + exit.Error
	case code == nil && sig > 0:
		return fmt.Sprintf("killed by signal %d", sig)
	case code == nil:
		return "failed (no exit code)"
	case sig > 0:
		return fmt.Sprintf("task exited with code %d (signal %d)", *code, sig)
	}
	return fmt.Sprintf("task exited with code %d", *code)
}

// policyOutcome applies an on_failure/on_timeout policy to the evidence.
func (in Input) policyOutcome(d Decision, cause schema.Cause, policy, what string) Decision {
	ev := in.Evidence
	d.Action, d.Cause = Finish, cause
	switch {
	case policy == schema.PolicyAlways:
		d.Outcome, d.Reason = schema.OutcomePartial, what+"; proceeding (policy always)"
	case (policy == schema.PolicyCheckpoint || policy == schema.PolicySkip) && ev.Satisfied:
		d.Outcome, d.Reason = schema.OutcomePartial, what+"; proceeding: "+ev.Why
	case policy == schema.PolicySkip:
		d.Outcome, d.Reason = schema.OutcomeSkipped, what+"; skipping downstream: "+ev.Why
	case policy == schema.PolicyCheckpoint:
		d.Outcome, d.Reason = schema.OutcomeFailed, what+"; not enough work to proceed: "+ev.Why
	default:
		d.Outcome, d.Reason = schema.OutcomeFailed, what
	}
	return d
}

func (in Input) failure(d Decision, cause schema.Cause, what string) Decision {
	if cause == schema.CauseExit && in.Retry.OnExit && !in.CancelRequested {
		if in.budgetLeft() {
			d.Action, d.Cause, d.ResumeFrom = Retry, cause, in.Evidence.Resume
			d.Reason = fmt.Sprintf("%s; retrying (attempt %d of %d)", what, in.Attempts+1, in.Retry.MaxAttempts)
			return d
		}
		if in.Retry.MaxAttempts > 1 {
			what += fmt.Sprintf("; retries exhausted after %d attempts", in.Attempts)
		}
	}
	return in.policyOutcome(d, cause, in.Proceed.OnFailure, what)
}

// outOfMemory retries an attempt that ran out of memory with more memory
// (retry.on_oom), while the budget lasts and max_memory allows.
func (in Input) outOfMemory(d Decision, what string) Decision {
	next := in.Retry.NextMemory(in.MemoryMiB)
	switch {
	case !in.budgetLeft():
	case next == 0 && in.MemoryMiB > 0:
		what += fmt.Sprintf("; not retried with more memory: %s is already retry.max_memory", units.HumanMemory(in.MemoryMiB))
	case next == 0:
		what += "; not retried with more memory: the attempt asked for no memory"
	default:
		d.Action, d.Cause, d.MemoryMiB, d.ResumeFrom = Retry, schema.CauseOOM, next, in.Evidence.Resume
		d.Reason = fmt.Sprintf("%s; retrying with %s of memory instead of %s (attempt %d of %d)",
			what, units.HumanMemory(next), units.HumanMemory(in.MemoryMiB), in.Attempts+1, in.Retry.MaxAttempts)
		return d
	}
	return in.failure(d, schema.CauseOOM, what)
}

func (in Input) budgetLeft() bool { return in.Attempts < in.Retry.MaxAttempts }

func (in Input) timeout(d Decision, state backends.State) Decision {
	what := "timed out"
	if in.Walltime > 0 {
		what = fmt.Sprintf("timed out at the walltime of %s", in.Walltime)
	}
	if in.Missing {
		what += " (decided from the exit file: SIGTERM at the walltime)"
	}
	if state == backends.Deadline {
		what = "reached its deadline"
	}
	ev := in.Evidence
	if in.Proceed.OnTimeout == schema.PolicyAlways || ((in.Proceed.OnTimeout == schema.PolicyCheckpoint || in.Proceed.OnTimeout == schema.PolicySkip) && ev.Satisfied) {
		return in.policyOutcome(d, schema.CauseTimeout, in.Proceed.OnTimeout, what)
	}
	if in.Retry.OnTimeout && ev.Resume != "" && in.budgetLeft() {
		d.Action, d.ResumeFrom, d.Cause = Retry, ev.Resume, schema.CauseTimeout
		d.Reason = fmt.Sprintf("%s; retrying from checkpoint %q (attempt %d of %d)", what, ev.Resume, in.Attempts+1, in.Retry.MaxAttempts)
		return d
	}
	return in.policyOutcome(d, schema.CauseTimeout, in.Proceed.OnTimeout, what)
}

// requeued decides an attempt the scheduler requeued itself: a node it
// reports down makes it a node failure, a preemption follows
// on_preempted, and anything else is an administrator's requeue, which
// is retried while the budget lasts (someone asked for the job to run
// again).
func (in Input) requeued(d Decision, note string) Decision {
	said := strings.ToUpper(in.Native + " " + in.SchedNote)
	preempted, admin := strings.Contains(said, "PREEMPT"), strings.Contains(said, "ADMIN")
	in.SchedNote = note
	switch {
	case len(in.DownNodes) > 0:
		return in.lostResources(d, backends.NodeFail)
	case preempted:
		return in.lostResources(d, backends.Preempted)
	case len(in.Nodes) > 0 && !admin:
		// it ran, and the scheduler says neither which node went down
		// (it may be back already) nor that an administrator asked:
		// a node failure, avoiding the job's nodes
		return in.lostResources(d, backends.NodeFail)
	}
	what := "the job was requeued (by an administrator or the scheduler): " + note
	if in.budgetLeft() {
		d.Action, d.ResumeFrom, d.Cause = Retry, in.Evidence.Resume, schema.CauseRequeued
		d.Reason = fmt.Sprintf("%s; retrying (attempt %d of %d)", what, in.Attempts+1, in.Retry.MaxAttempts)
		return d
	}
	if in.Retry.MaxAttempts > 1 {
		what += fmt.Sprintf("; retries exhausted after %d attempts", in.Attempts)
	}
	return in.failure(d, schema.CauseRequeued, what)
}

func (in Input) lostResources(d Decision, state backends.State) Decision {
	what := map[backends.State]string{
		backends.NodeFail:  "a node failed",
		backends.Preempted: "the job was preempted",
		backends.BootFail:  "a node failed to boot",
	}[state]
	cause := schema.CauseNodeFail
	if state == backends.Preempted {
		cause = schema.CausePreempted
	}
	switch {
	case len(in.DownNodes) > 0:
		// only nodes the scheduler reports down are excluded next time
		var names, whys []string
		for _, n := range in.Nodes {
			if why, down := in.DownNodes[n]; down {
				names = append(names, n)
				whys = append(whys, n+" "+why)
			}
		}
		if len(names) == 0 { // down nodes outside the job's list
			for n, why := range in.DownNodes {
				names, whys = append(names, n), append(whys, n+" "+why)
			}
			slices.Sort(names)
			slices.Sort(whys)
		}
		what = fmt.Sprintf("node %s failed (%s)", strings.Join(names, ","), strings.Join(whys, "; "))
		if state == backends.BootFail {
			what = fmt.Sprintf("node %s failed to boot (%s)", strings.Join(names, ","), strings.Join(whys, "; "))
		}
		if state != backends.Preempted {
			d.FailedNodes = names
		}
	case len(in.Nodes) > 0:
		what += " (nodes " + strings.Join(in.Nodes, ",") + ")"
		if state != backends.Preempted {
			// the scheduler names no down node: avoid the job's nodes
			d.FailedNodes = append([]string(nil), in.Nodes...)
		}
	}
	if in.SchedNote != "" {
		what += ": " + in.SchedNote
	}
	allowed := in.Retry.OnNodeFail
	if state == backends.Preempted {
		allowed = in.Retry.OnPreempted
	}
	if allowed && in.budgetLeft() {
		d.Action, d.ResumeFrom, d.Cause = Retry, in.Evidence.Resume, cause
		from := ""
		if d.ResumeFrom != "" {
			from = fmt.Sprintf(" from checkpoint %q", d.ResumeFrom)
		}
		d.Reason = fmt.Sprintf("%s; retrying%s (attempt %d of %d)", what, from, in.Attempts+1, in.Retry.MaxAttempts)
		return d
	}
	if in.Attempts >= in.Retry.MaxAttempts && in.Retry.MaxAttempts > 1 {
		what += fmt.Sprintf("; retries exhausted after %d attempts", in.Attempts)
	}
	return in.failure(d, cause, what)
}

// Conclusive reports whether an exit file settles the run without the
// scheduler's word: the Task ended by itself with exit code 0 (no signal,
// no SIGTERM before it, not a provisional record or a scheduler restart),
// and the file is not older than the attempt's latest start (a scheduler
// that restarted the job reuses its directory). A non-zero exit waits for
// the scheduler, which may know more than the code: OUT_OF_MEMORY for a
// Task that exited 1 after its child was killed, a NODE_FAIL behind an MPI
// launcher's error, a SPECIAL_EXIT job held in the queue.
func Conclusive(e *schema.ExitFile, started *schema.Started) bool {
	if e == nil || e.Provisional || e.Requeued || e.Signal != 0 || e.TermAfter != nil || e.ExitCode != 0 || e.Error != "" {
		return false
	}
	return started == nil || !e.Time.Before(started.Time)
}
