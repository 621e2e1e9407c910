package monitor

import (
	"fmt"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
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
)

func (a Action) String() string {
	return [...]string{"wait", "retry", "finish"}[a]
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
	State      backends.State
	Native     string
	SchedExit  *int
	SchedSig   int
	SchedNote  string // the scheduler's reason
	Nodes      []string
	Missing    bool
	MissingFor time.Duration
	Grace      time.Duration
	// DownNodes are the job's nodes the scheduler reports down, with why.
	DownNodes map[string]string

	Exit            *schema.ExitFile // nil when the wrapper wrote none
	CancelRequested bool
	// SchedulerRequeue: the site lets the scheduler requeue jobs itself.
	SchedulerRequeue bool
	Evidence         Evidence
	Proceed          schema.Proceed
	Retry            schema.Retry
	// Attempts made in the current generation, this one included.
	Attempts int
	Walltime time.Duration
}

// Decision is the verdict.
type Decision struct {
	Action   Action
	Outcome  string // for Finish
	Reason   string
	ExitCode *int // the Task's exit code, when known
	Signal   int
	// ResumeFrom is the checkpoint state a Retry resumes from.
	ResumeFrom string
	// FailedNodes are the nodes a NODE_FAIL attempt ran on.
	FailedNodes []string
	// CancelJob: end the scheduler's job before acting (a job the
	// scheduler requeued although tether owns retries).
	CancelJob bool
}

// ExitCode is the CLI exit code of a final outcome: 0 proceed, 1 failed
// or cancelled, 99 skip downstream.
func ExitCode(outcome string) int {
	switch outcome {
	case schema.OutcomeSucceeded, schema.OutcomePartial:
		return 0
	case schema.OutcomeSkipped:
		return 99
	}
	return 1
}

// Decide applies the decision table. It is pure: the same input gives the
// same decision.
func Decide(in Input) Decision {
	code, sig := in.exitStatus()
	d := Decision{ExitCode: code, Signal: sig}
	finish := func(outcome, reason string) Decision {
		d.Action, d.Outcome, d.Reason = Finish, outcome, reason
		return d
	}
	state := in.State
	if in.Missing || state == backends.Unknown || state == "" {
		if in.Exit == nil {
			if in.Missing && in.MissingFor >= in.Grace {
				if in.CancelRequested {
					return finish(schema.OutcomeCancelled, "cancelled; the job left the scheduler without an exit file")
				}
				return finish(schema.OutcomeFailed, fmt.Sprintf("lost: the job vanished from the scheduler and left no exit file within %s", in.Grace))
			}
			if in.Missing {
				d.Reason = fmt.Sprintf("gone from the scheduler %s ago; waiting up to %s for the exit file", in.MissingFor.Round(time.Second), in.Grace)
			} else {
				d.Reason = "submitted; waiting for the scheduler's first report"
			}
			return d
		}
		// Vanished, but the wrapper's exit file tells how it ended.
		if in.CancelRequested {
			return finish(schema.OutcomeCancelled, "cancelled by request")
		}
		if in.walltimeKill() {
			return in.timeout(d, backends.Timeout)
		}
		if *code == 0 {
			return finish(schema.OutcomeSucceeded, "completed (exit code 0, decided from the exit file)")
		}
		return in.failure(d, fmt.Sprintf("%s (decided from the exit file; the job left the scheduler)", describeExit(code, sig, in.Exit)))
	}
	if state == backends.Requeued && !in.SchedulerRequeue && !in.CancelRequested {
		// tether owns retries: cancel the scheduler's restart and retry
		in.SchedNote = "the scheduler requeued the job; tether retries instead"
		d = in.lostResources(d, backends.NodeFail)
		d.CancelJob = true
		return d
	}
	if !state.Terminal() {
		d.Reason = "job is " + strings.ToLower(string(state))
		return d
	}
	if in.Exit != nil && in.Exit.Requeued && !in.CancelRequested {
		// the scheduler restarted the job itself after losing a node
		in.SchedNote = "the scheduler requeued the job; tether retries instead"
		return in.lostResources(d, backends.NodeFail)
	}
	if in.CancelRequested && state != backends.Completed {
		return finish(schema.OutcomeCancelled, "cancelled by request")
	}
	switch state {
	case backends.Completed:
		if code == nil || *code == 0 {
			return finish(schema.OutcomeSucceeded, "completed with exit code 0")
		}
		return in.failure(d, describeExit(code, sig, in.Exit))
	case backends.Failed, backends.OutOfMemory:
		what := describeExit(code, sig, in.Exit)
		if state == backends.OutOfMemory {
			what = "ran out of memory; " + what
		}
		if code != nil && *code == 0 && state == backends.Failed {
			what = "the scheduler reports FAILED although the Task exited 0"
		}
		return in.failure(d, what)
	case backends.Timeout, backends.Deadline:
		return in.timeout(d, state)
	case backends.NodeFail, backends.Preempted, backends.BootFail:
		return in.lostResources(d, state)
	case backends.Cancelled:
		why := "cancelled by the scheduler or an administrator"
		if in.SchedNote != "" {
			why += " (" + in.SchedNote + ")"
		}
		return finish(schema.OutcomeCancelled, why)
	}
	return finish(schema.OutcomeFailed, fmt.Sprintf("unexpected scheduler state %s", in.Native))
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
func (in Input) policyOutcome(d Decision, policy, what string) Decision {
	ev := in.Evidence
	d.Action = Finish
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

func (in Input) failure(d Decision, what string) Decision {
	return in.policyOutcome(d, in.Proceed.OnFailure, what)
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
		return in.policyOutcome(d, in.Proceed.OnTimeout, what)
	}
	if in.Retry.OnTimeout && ev.Resume != "" && in.budgetLeft() {
		d.Action, d.ResumeFrom = Retry, ev.Resume
		d.Reason = fmt.Sprintf("%s; retrying from checkpoint %q (attempt %d of %d)", what, ev.Resume, in.Attempts+1, in.Retry.MaxAttempts)
		return d
	}
	return in.policyOutcome(d, in.Proceed.OnTimeout, what)
}

func (in Input) lostResources(d Decision, state backends.State) Decision {
	what := map[backends.State]string{
		backends.NodeFail:  "a node failed",
		backends.Preempted: "the job was preempted",
		backends.BootFail:  "a node failed to boot",
	}[state]
	switch {
	case len(in.DownNodes) > 0:
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
		}
		what = fmt.Sprintf("node %s failed (%s)", strings.Join(names, ","), strings.Join(whys, "; "))
		if state == backends.BootFail {
			what = fmt.Sprintf("node %s failed to boot (%s)", strings.Join(names, ","), strings.Join(whys, "; "))
		}
		d.FailedNodes = names
	case len(in.Nodes) > 0:
		what += " (nodes " + strings.Join(in.Nodes, ",") + ")"
		if state != backends.Preempted {
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
		d.Action, d.ResumeFrom = Retry, in.Evidence.Resume
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
	return in.failure(d, what)
}
