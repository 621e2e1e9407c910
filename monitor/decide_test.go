package monitor

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/schema"
)

func exitFile(code int) *schema.ExitFile { return &schema.ExitFile{V: 1, ExitCode: code} }
func iptr(i int) *int                    { return &i }

var (
	enough    = Evidence{Satisfied: true, Why: "checkpoint at 90% (80% required)", Resume: "step=9"}
	notEnough = Evidence{Satisfied: false, Why: "checkpoint at 10%, 80% required", Resume: "step=1"}
	noResume  = Evidence{Satisfied: false, Why: "the Task wrote no checkpoint"}
)

func policy(onTimeout, onFailure string) schema.Proceed {
	return schema.Proceed{OnTimeout: onTimeout, OnFailure: onFailure, MinFraction: 0.8}
}

func retries(n int) schema.Retry {
	return schema.Retry{MaxAttempts: n, OnNodeFail: true, OnPreempted: true, OnTimeout: true}
}

// TestDecideTable covers every row of DESIGN.md's decision table, plus the
// states around it.
func TestDecideTable(t *testing.T) {
	def := policy("checkpoint", "never")
	cases := []struct {
		name    string
		in      Input
		action  Action
		outcome string
		exit    int    // CLI exit for Finish
		reason  string // substring
	}{
		// row 1: completed, exit 0
		{"completed exit 0", Input{State: backends.Completed, Exit: exitFile(0), Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeSucceeded, 0, "exit code 0"},
		{"completed, scheduler exit only", Input{State: backends.Completed, SchedExit: iptr(0), Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeSucceeded, 0, "exit code 0"},
		// row 2: completed/failed, exit != 0, on_failure satisfied
		{"failed, on_failure checkpoint satisfied", Input{State: backends.Failed, Exit: exitFile(3), Evidence: enough, Proceed: policy("checkpoint", "checkpoint"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomePartial, 0, "task exited with code 3; proceeding"},
		{"completed with exit file 3, on_failure always", Input{State: backends.Completed, Exit: exitFile(3), Evidence: noResume, Proceed: policy("checkpoint", "always"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomePartial, 0, "policy always"},
		// row 3: not satisfied
		{"failed exit 3", Input{State: backends.Failed, Exit: exitFile(3), Proceed: def, Retry: retries(3), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "task exited with code 3"},
		{"failed, on_failure checkpoint not satisfied", Input{State: backends.Failed, Exit: exitFile(2), Evidence: notEnough, Proceed: policy("checkpoint", "checkpoint"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "not enough work to proceed: checkpoint at 10%"},
		{"failed, on_failure skip not satisfied", Input{State: backends.Failed, Exit: exitFile(2), Evidence: notEnough, Proceed: policy("checkpoint", "skip"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeSkipped, 99, "skipping downstream"},
		{"scheduler exit code when the exit file is missing", Input{State: backends.Failed, SchedExit: iptr(7), Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "code 7"},
		{"out of memory", Input{State: backends.OutOfMemory, SchedExit: iptr(137), SchedSig: 9, Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "ran out of memory"},
		{"wrapper error", Input{State: backends.Failed, Exit: &schema.ExitFile{V: 1, ExitCode: 127, Error: "cannot change to workdir /x"}, Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "cannot change to workdir"},
		// row 4: timeout, on_timeout satisfied
		{"timeout with enough checkpoint", Input{State: backends.Timeout, Evidence: enough, Proceed: def, Retry: retries(1), Attempts: 1, Walltime: time.Minute},
			Finish, schema.OutcomePartial, 0, "timed out at the walltime of 1m0s; proceeding: checkpoint at 90%"},
		{"timeout, on_timeout always", Input{State: backends.Timeout, Evidence: noResume, Proceed: policy("always", "never"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomePartial, 0, "policy always"},
		{"deadline counts as timeout", Input{State: backends.Deadline, Evidence: enough, Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomePartial, 0, "deadline"},
		// row 5: timeout, not satisfied, budget left and resumable
		{"timeout resumable with budget", Input{State: backends.Timeout, Evidence: notEnough, Proceed: def, Retry: retries(2), Attempts: 1},
			Retry, "", 0, "retrying from checkpoint \"step=1\" (attempt 2 of 2)"},
		// row 6: timeout, not satisfied, no retry
		{"timeout not resumable", Input{State: backends.Timeout, Evidence: noResume, Proceed: def, Retry: retries(2), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "no checkpoint"},
		{"timeout budget spent", Input{State: backends.Timeout, Evidence: notEnough, Proceed: def, Retry: retries(2), Attempts: 2},
			Finish, schema.OutcomeFailed, 1, "timed out"},
		{"timeout retry off", Input{State: backends.Timeout, Evidence: notEnough, Proceed: def, Retry: schema.Retry{MaxAttempts: 3}, Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "timed out"},
		{"timeout skip", Input{State: backends.Timeout, Evidence: noResume, Proceed: policy("skip", "never"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeSkipped, 99, "skipping downstream"},
		{"timeout never", Input{State: backends.Timeout, Evidence: enough, Proceed: policy("never", "never"), Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "timed out"},
		// row 7: node failure, preemption, boot failure with budget
		{"node fail with budget", Input{State: backends.NodeFail, Nodes: []string{"n2"}, Evidence: notEnough, Proceed: def, Retry: retries(2), Attempts: 1},
			Retry, "", 0, "a node failed (nodes n2); retrying from checkpoint \"step=1\""},
		{"preempted with budget", Input{State: backends.Preempted, Proceed: def, Retry: retries(2), Attempts: 1},
			Retry, "", 0, "preempted; retrying"},
		{"boot fail with budget", Input{State: backends.BootFail, Proceed: def, Retry: retries(2), Attempts: 1},
			Retry, "", 0, "failed to boot; retrying"},
		{"node fail, retries exhausted", Input{State: backends.NodeFail, Nodes: []string{"n1", "n2"}, SchedNote: "NodeDown", Proceed: def, Retry: retries(2), Attempts: 2},
			Finish, schema.OutcomeFailed, 1, "a node failed (nodes n1,n2): NodeDown; retries exhausted after 2 attempts"},
		{"node fail, retry off", Input{State: backends.NodeFail, Proceed: def, Retry: schema.Retry{MaxAttempts: 3}, Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "a node failed"},
		// row 8: cancelled
		{"cancelled by scheduler", Input{State: backends.Cancelled, Proceed: def, Retry: retries(3), Attempts: 1},
			Finish, schema.OutcomeCancelled, 1, "cancelled"},
		{"cancel requested, job failed from SIGTERM", Input{State: backends.Failed, Exit: exitFile(143), CancelRequested: true, Proceed: def, Retry: retries(3), Attempts: 1},
			Finish, schema.OutcomeCancelled, 1, "cancelled by request"},
		// row 9: vanished with an exit file
		{"vanished, exit file 0", Input{Missing: true, MissingFor: time.Second, Grace: time.Minute, Exit: exitFile(0), Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeSucceeded, 0, "decided from the exit file"},
		{"vanished, exit file 4", Input{Missing: true, Exit: exitFile(4), Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "task exited with code 4 (decided from the exit file"},
		// row 10: vanished without an exit file
		{"vanished, no exit file, within grace", Input{Missing: true, MissingFor: 10 * time.Second, Grace: time.Minute, Proceed: def, Retry: retries(1), Attempts: 1},
			Wait, "", 0, "waiting"},
		{"vanished, no exit file, after grace", Input{Missing: true, MissingFor: 2 * time.Minute, Grace: time.Minute, Proceed: def, Retry: retries(1), Attempts: 1},
			Finish, schema.OutcomeFailed, 1, "lost"},
		// not finished
		{"pending", Input{State: backends.Pending, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "pending"},
		{"running with exit file (completing)", Input{State: backends.Running, Exit: exitFile(0), Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "running"},
		{"completing", Input{State: backends.Completing, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "completing"},
		{"suspended", Input{State: backends.Suspended, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "suspended"},
		{"requeued, the site lets the scheduler requeue", Input{State: backends.Requeued, SchedulerRequeue: true, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "requeued"},
		{"not yet seen", Input{Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", 0, "waiting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.in)
			if d.Action != c.action {
				t.Fatalf("action = %v (%s), want %v", d.Action, d.Reason, c.action)
			}
			if !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, c.reason)
			}
			if c.action != Finish {
				return
			}
			if d.Outcome != c.outcome || ExitCode(d.Outcome, d.Cause) != c.exit {
				t.Errorf("outcome = %s (exit %d), want %s (exit %d)", d.Outcome, ExitCode(d.Outcome, d.Cause), c.outcome, c.exit)
			}
		})
	}
}

func TestDecideRetryCarriesResumeAndNodes(t *testing.T) {
	d := Decide(Input{State: backends.NodeFail, Nodes: []string{"n1", "n2"}, DownNodes: map[string]string{"n2": "not responding"},
		Evidence: Evidence{Resume: "ck-7"}, Retry: retries(3), Attempts: 1, Proceed: policy("checkpoint", "never")})
	if d.Action != Retry || d.Cause != schema.CauseNodeFail || d.ResumeFrom != "ck-7" || len(d.FailedNodes) != 1 || d.FailedNodes[0] != "n2" {
		t.Errorf("%+v", d)
	}
	// without the scheduler's word on down nodes, the job's nodes
	d = Decide(Input{State: backends.NodeFail, Nodes: []string{"n1", "n2"}, Retry: retries(3), Attempts: 1, Proceed: policy("checkpoint", "never")})
	if d.Action != Retry || len(d.FailedNodes) != 2 {
		t.Errorf("without down nodes: %+v", d)
	}
}

func TestDecideExitFileFirst(t *testing.T) {
	d := Decide(Input{State: backends.Failed, Exit: exitFile(5), SchedExit: iptr(9), Retry: retries(1), Attempts: 1, Proceed: policy("checkpoint", "never")})
	if *d.ExitCode != 5 {
		t.Errorf("exit code %d, want the exit file's 5", *d.ExitCode)
	}
}

// A job the scheduler forgot (PBS without history) that got SIGTERM at
// its walltime is a timeout, decided from the exit file.
func TestDecideWalltimeFromExitFile(t *testing.T) {
	at := func(s int) *schema.ExitFile {
		return &schema.ExitFile{V: 1, ExitCode: 143, Signal: 15, TermAfter: &s, Elapsed: s}
	}
	base := Input{Missing: true, Walltime: time.Minute, Evidence: enough, Proceed: policy("checkpoint", "never"), Retry: retries(1), Attempts: 1}
	in := base
	in.Exit = at(60)
	if d := Decide(in); d.Outcome != schema.OutcomePartial || !strings.Contains(d.Reason, "decided from the exit file: SIGTERM at the walltime") {
		t.Errorf("TERM at the walltime: %+v", d)
	}
	in.Exit = at(10)
	if d := Decide(in); d.Outcome != schema.OutcomeFailed || strings.Contains(d.Reason, "timed out") {
		t.Errorf("TERM long before the walltime: %+v", d)
	}
}

func TestDecideNamesTheDownNode(t *testing.T) {
	in := Input{State: backends.NodeFail, Nodes: []string{"node1", "node2"}, DownNodes: map[string]string{"node2": "down*: Not responding"},
		Proceed: policy("checkpoint", "never"), Retry: retries(1), Attempts: 1}
	d := Decide(in)
	if d.Outcome != schema.OutcomeFailed || !strings.Contains(d.Reason, "node node2 failed (node2 down*: Not responding)") || len(d.FailedNodes) != 1 {
		t.Errorf("%+v", d)
	}
}

// A scheduler that requeued the job itself (slurmrestd 22.05 ignores
// requeue=false): the wrapper ran nothing, and tether retries.
func TestDecideSchedulerRequeue(t *testing.T) {
	in := Input{State: backends.Completed, Exit: &schema.ExitFile{V: 1, Requeued: true}, Nodes: []string{"n1", "n2"},
		Evidence: Evidence{Resume: "half"}, Proceed: policy("checkpoint", "never"), Retry: retries(2), Attempts: 1}
	d := Decide(in)
	if d.Action != Retry || d.ResumeFrom != "half" || !strings.Contains(d.Reason, "requeued") {
		t.Errorf("%+v", d)
	}
}

func TestDecideRequeuedJobIsCancelledAndRetried(t *testing.T) {
	in := Input{State: backends.Requeued, Evidence: Evidence{Resume: "r"}, Proceed: policy("checkpoint", "never"), Retry: retries(2), Attempts: 1}
	if d := Decide(in); d.Action != Retry || !d.CancelJob || d.ResumeFrom != "r" {
		t.Errorf("%+v", d)
	}
	in.SchedulerRequeue = true
	if d := Decide(in); d.Action != Wait {
		t.Errorf("with scheduler requeue allowed: %+v", d)
	}
}

// TestDecideCauses covers the typed causes and the decisions the
// state-machine review changed.
func TestDecideCauses(t *testing.T) {
	def := policy("checkpoint", "never")
	sig := func(code, s int) *schema.ExitFile { return &schema.ExitFile{V: 1, ExitCode: code, Signal: s} }
	cases := []struct {
		name   string
		in     Input
		action Action
		cause  schema.Cause
		cancel bool   // CancelJob
		reason string // substring
	}{
		{"exit 0", Input{State: backends.Completed, Exit: exitFile(0), Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "exit code 0"},
		{"exit 3", Input{State: backends.Failed, Exit: exitFile(3), Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseExit, false, "code 3"},
		{"resource limit kill", Input{State: backends.Failed, SchedLimit: "cput", SchedNote: "PBS killed the job for exceeding its CPU time limit (cput)", Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseLimit, false, "CPU time limit"},
		{"oom", Input{State: backends.OutOfMemory, Exit: sig(137, 9), Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseOOM, false, "out of memory"},
		{"timeout", Input{State: backends.Timeout, Evidence: noResume, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseTimeout, false, "timed out"},
		{"scheduler cancel", Input{State: backends.Cancelled, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseSchedCancel, false, "administrator"},
		{"wrapper error", Input{State: backends.Failed, Exit: &schema.ExitFile{V: 1, ExitCode: 127, Error: "no workdir"}, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseWrapper, false, "no workdir"},
		{"lost", Input{Missing: true, MissingFor: time.Hour, Grace: time.Minute, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseLost, false, "lost"},
		// PBS: a qdel'd running job (F/91) whose wrapper trapped SIGTERM
		// (143) or that OpenPBS records with Exit_status 0: a requested
		// cancel wins over the Task killed by the cancel
		{"cancel wins over 143", Input{State: backends.Completed, Exit: sig(143, 15), CancelRequested: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCancelled, false, "cancelled by request"},
		{"cancel, scheduler cancelled, exit 0", Input{State: backends.Cancelled, Exit: exitFile(0), CancelRequested: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCancelled, false, "cancelled by request"},
		{"cancel after a clean exit", Input{State: backends.Completed, Exit: exitFile(0), CancelRequested: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "exit code 0"},
		// a pending reason that never clears: cancel and fail (exit 2)
		{"never runs", Input{State: backends.Pending, SchedNote: "DependencyNeverSatisfied", Proceed: def, Retry: retries(2), Attempts: 1}, Finish, schema.CauseUnsatisfiable, true, "can never run: DependencyNeverSatisfied"},
		{"never runs, PBS", Input{State: backends.Pending, SchedNote: "Can Never Run: Insufficient amount of resource: ncpus", Proceed: def, Retry: retries(2), Attempts: 1}, Finish, schema.CauseUnsatisfiable, true, "Insufficient amount"},
		{"pending for resources waits", Input{State: backends.Pending, SchedNote: "Resources", Proceed: def, Retry: retries(2), Attempts: 1}, Wait, "", false, "pending"},
		// the site's [pending] timeout: cancel and fail (exit 1); not before it, not once started
		{"pending timeout", Input{State: backends.Pending, SchedNote: "Priority", PendingFor: 2 * time.Hour, PendingTimeout: time.Hour, Proceed: def, Retry: retries(2), Attempts: 1}, Finish, schema.CausePendingTimeout, true, "still pending after 2h0m0s, the site's [pending] timeout of 1h0m0s (the scheduler's reason: Priority)"},
		{"pending under the timeout waits", Input{State: backends.Pending, SchedNote: "Priority", PendingFor: 59 * time.Minute, PendingTimeout: time.Hour, Proceed: def, Retry: retries(2), Attempts: 1}, Wait, "", false, "pending"},
		{"pending after a start is not a pending timeout", Input{State: backends.Pending, Started: true, PendingFor: 2 * time.Hour, PendingTimeout: time.Hour, Proceed: def, Retry: retries(2), Attempts: 1}, Wait, "", false, "pending"},
		{"pending timeout off", Input{State: backends.Pending, PendingFor: 200 * time.Hour, Proceed: def, Retry: retries(2), Attempts: 1}, Wait, "", false, "pending"},
		{"a dependency not yet met waits", Input{State: backends.Pending, SchedNote: "Dependency", Proceed: def, Retry: retries(2), Attempts: 1}, Wait, "", false, "pending"},
		{"cancel of a live job is sent", Input{State: backends.Running, CancelRequested: true, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", true, "cancel requested"},
		{"cancel just sent is not resent", Input{State: backends.Running, CancelRequested: true, CancelSentFor: durp(5 * time.Second), Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", false, "cancel requested"},
		{"cancel resent when the job outlives it", Input{State: backends.Running, CancelRequested: true, CancelSentFor: durp(time.Minute), Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", true, "cancel requested"},
		// requeues: a down node is a node failure, a preemption follows
		// on_preempted, anything else is an administrator's requeue
		{"requeue, node down", Input{State: backends.Requeued, Nodes: []string{"n1"}, DownNodes: map[string]string{"n1": "Not responding"}, Proceed: def, Retry: retries(2), Attempts: 1}, Retry, schema.CauseNodeFail, true, "node n1 failed"},
		{"requeue by preemption, on_preempted off", Input{State: backends.Requeued, Native: "PENDING+REQUEUED+PREEMPTED", Proceed: def, Retry: schema.Retry{MaxAttempts: 2, OnNodeFail: true}, Attempts: 1}, Finish, schema.CausePreempted, true, "preempted"},
		{"requeue by an administrator", Input{State: backends.Requeued, Native: "PENDING+REQUEUED", Proceed: def, Retry: retries(2), Attempts: 1}, Retry, schema.CauseRequeued, true, "requeued"},
		{"requeue, budget spent", Input{State: backends.Requeued, Native: "PENDING+REQUEUED", Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseRequeued, true, "requeued"},
		// SPECIAL_EXIT: the held job is cancelled, then decided
		{"special exit", Input{State: backends.SpecialExit, Exit: exitFile(3), Proceed: def, Retry: retries(2), Attempts: 1}, Finish, schema.CauseExit, true, "SPECIAL_EXIT"},
		// evidence grace: a terminal state without an exit file waits
		{"ended, exit file not visible yet", Input{State: backends.Completed, EndedFor: 5 * time.Second, EvidenceGrace: 20 * time.Second, Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", false, "waiting up to 20s"},
		{"ended, grace over", Input{State: backends.Completed, SchedExit: iptr(0), EndedFor: 30 * time.Second, EvidenceGrace: 20 * time.Second, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "exit code 0"},
		{"node failure does not wait for an exit file", Input{State: backends.NodeFail, EvidenceGrace: time.Minute, Proceed: def, Retry: retries(2), Attempts: 1}, Retry, schema.CauseNodeFail, false, "node failed"},
		// the provisional exit record of the TERM trap, when the wrapper
		// was SIGKILLed before its final one
		{"provisional record of a walltime kill, job gone", Input{Missing: true, MissingFor: time.Hour, Grace: time.Minute, Walltime: time.Minute,
			Exit: &schema.ExitFile{V: 1, ExitCode: 143, Signal: 15, TermAfter: iptr(60), Provisional: true}, Evidence: noResume, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseTimeout, false, "timed out"},
		{"provisional record, job failed", Input{State: backends.Failed, Exit: &schema.ExitFile{V: 1, ExitCode: 143, Signal: 15, Provisional: true}, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseExit, false, "killed before the Task's exit was recorded"},
		// a conclusive exit file (exit 0, the Task's own) decides at once
		{"exit 0 while still listed running", Input{State: backends.Running, Exit: exitFile(0), ExitConclusive: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "decided from the exit file; the scheduler still lists the job running"},
		{"exit 0 before the first report", Input{Exit: exitFile(0), ExitConclusive: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "before the scheduler's first report"},
		{"exit 0 but the scheduler requeued the job", Input{State: backends.Requeued, Native: "PENDING+REQUEUED", Exit: exitFile(0), ExitConclusive: true, Proceed: def, Retry: retries(2), Attempts: 1}, Retry, schema.CauseRequeued, true, "requeued"},
		{"exit 0 of a job that went missing", Input{Missing: true, MissingFor: time.Second, Grace: time.Minute, Exit: exitFile(0), ExitConclusive: true, Proceed: def, Retry: retries(1), Attempts: 1}, Finish, schema.CauseCompleted, false, "decided from the exit file"},
		// nothing from silence: no report yet, even with an exit file
		{"no report yet", Input{Exit: exitFile(0), Proceed: def, Retry: retries(1), Attempts: 1}, Wait, "", false, "first report"},
		// attempts without a job id
		{"no attempt", Input{NoAttempt: true}, Submit, "", false, "first"},
		{"no attempt, cancelled", Input{NoAttempt: true, CancelRequested: true}, Finish, schema.CauseCancelled, false, "before a job was submitted"},
		{"lost answer, in the window", Input{NoJob: true, SubmitAge: time.Minute, RecoverAfter: 2 * time.Minute}, Recover, "", false, "sent again only after 2m0s"},
		{"lost answer, window over", Input{NoJob: true, SubmitAge: 3 * time.Minute, RecoverAfter: 2 * time.Minute}, Recover, "", false, "then sending it again"},
		{"unsent", Input{NoJob: true, Unsent: true, RecoverAfter: 2 * time.Minute}, Recover, "", false, "never reached"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.in)
			if d.Action != c.action || d.Cause != c.cause || d.CancelJob != c.cancel || !strings.Contains(d.Reason, c.reason) {
				t.Errorf("got %s/%s cancel=%v %q; want %s/%s cancel=%v %q", d.Action, d.Cause, d.CancelJob, d.Reason, c.action, c.cause, c.cancel, c.reason)
			}
		})
	}
}

func durp(d time.Duration) *time.Duration { return &d }

// TestEveryCauseDocumented: the README's outcome table lists every cause.
func TestEveryCauseDocumented(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range schema.Causes {
		if !strings.Contains(string(b), "| `"+string(c)+"` |") {
			t.Errorf("README.md does not document cause %q", c)
		}
	}
}

// Only a clean exit of the Task itself, newer than the attempt's latest
// start, is conclusive.
func TestConclusiveExitFile(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	started := &schema.Started{V: 1, Time: t0}
	term := 5
	cases := []struct {
		name string
		e    *schema.ExitFile
		want bool
	}{
		{"none", nil, false},
		{"exit 0", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute)}, true},
		{"exit 3 waits for the scheduler", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), ExitCode: 3}, false},
		{"killed", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), ExitCode: 137, Signal: 9}, false},
		{"exit 0 after SIGTERM", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), TermAfter: &term}, false},
		{"provisional", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), ExitCode: 143, Signal: 15, Provisional: true}, false},
		{"scheduler restart", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), Requeued: true}, false},
		{"wrapper failure", &schema.ExitFile{V: 1, Time: t0.Add(time.Minute), ExitCode: 127, Error: "no workdir"}, false},
		{"older than the latest start", &schema.ExitFile{V: 1, Time: t0.Add(-time.Minute)}, false},
	}
	for _, c := range cases {
		if got := Conclusive(c.e, started); got != c.want {
			t.Errorf("%s: Conclusive = %v, want %v", c.name, got, c.want)
		}
	}
}

// retry.on_oom: an out-of-memory end is retried with memory_factor times
// the memory, up to max_memory, while the budget lasts; the retry resumes
// from the latest checkpoint.
func TestDecideOutOfMemoryRetriesWithMoreMemory(t *testing.T) {
	def := schema.DefaultTask().Proceed
	oom := func(mem int64, attempts int, r schema.Retry) Decision {
		return Decide(Input{State: backends.OutOfMemory, Exit: &schema.ExitFile{V: 1, ExitCode: 137, Signal: 9}, MemoryMiB: mem, Proceed: def, Retry: r, Attempts: attempts,
			Evidence: Evidence{Resume: "step-3"}})
	}
	on := schema.Retry{MaxAttempts: 3, OnOOM: true}
	d := oom(4096, 1, on)
	if d.Action != Retry || d.Cause != schema.CauseOOM || d.MemoryMiB != 6144 || d.ResumeFrom != "step-3" {
		t.Fatalf("first OOM: %v %s mem %d resume %q (%s)", d.Action, d.Cause, d.MemoryMiB, d.ResumeFrom, d.Reason)
	}
	if !strings.Contains(d.Reason, "retrying with 6G of memory instead of 4G (attempt 2 of 3)") {
		t.Errorf("reason %q", d.Reason)
	}
	f2 := on
	f2.MemoryFactor, f2.MaxMemory = 2, 10240
	if d := oom(6144, 2, f2); d.Action != Retry || d.MemoryMiB != 10240 {
		t.Errorf("capped at max_memory: %v mem %d (%s)", d.Action, d.MemoryMiB, d.Reason)
	}
	if d := oom(10240, 2, f2); d.Action != Finish || d.Cause != schema.CauseOOM || !strings.Contains(d.Reason, "already retry.max_memory") {
		t.Errorf("at max_memory: %v %s (%s)", d.Action, d.Cause, d.Reason)
	}
	if d := oom(4096, 3, on); d.Action != Finish || d.Cause != schema.CauseOOM || d.Outcome != schema.OutcomeFailed {
		t.Errorf("budget spent: %v %s %s (%s)", d.Action, d.Cause, d.Outcome, d.Reason)
	}
	if d := oom(4096, 1, schema.Retry{MaxAttempts: 3}); d.Action != Finish || d.Cause != schema.CauseOOM {
		t.Errorf("on_oom off: %v %s (%s)", d.Action, d.Cause, d.Reason)
	}
	// a plain failure is not an out-of-memory retry
	if d := Decide(Input{State: backends.Failed, Exit: exitFile(1), MemoryMiB: 4096, Proceed: def, Retry: on, Attempts: 1}); d.Action != Finish || d.Cause != schema.CauseExit {
		t.Errorf("exit 1: %v %s", d.Action, d.Cause)
	}
}

func TestNextMemory(t *testing.T) {
	for _, c := range []struct {
		r         schema.Retry
		cur, want int64
	}{
		{schema.Retry{}, 1000, 1500},
		{schema.Retry{MemoryFactor: 2}, 1000, 2000},
		{schema.Retry{MemoryFactor: 1.5}, 1001, 1502}, // rounded up
		{schema.Retry{MaxMemory: 1200}, 1000, 1200},
		{schema.Retry{MaxMemory: 1000}, 1000, 0},
		{schema.Retry{}, 0, 0},
	} {
		if got := c.r.NextMemory(c.cur); got != c.want {
			t.Errorf("%+v NextMemory(%d) = %d, want %d", c.r, c.cur, got, c.want)
		}
	}
}

// A step the scheduler reports OUT_OF_MEMORY makes a FAILED job an
// out-of-memory end (retried with on_oom).
func TestDecideStepOOM(t *testing.T) {
	def := schema.DefaultTask().Proceed
	in := Input{State: backends.Failed, Exit: &schema.ExitFile{V: 1, ExitCode: 137}, StepOOM: "step 7.0 OUT_OF_MEMORY (exit 0:125)",
		MemoryMiB: 1000, Proceed: def, Retry: schema.Retry{MaxAttempts: 2, OnOOM: true}, Attempts: 1}
	d := Decide(in)
	if d.Action != Retry || d.Cause != schema.CauseOOM || d.MemoryMiB != 1500 || !strings.Contains(d.Reason, "step 7.0 OUT_OF_MEMORY") {
		t.Errorf("%v %s %d %s", d.Action, d.Cause, d.MemoryMiB, d.Reason)
	}
	in.StepOOM = ""
	if d := Decide(in); d.Cause != schema.CauseExit {
		t.Errorf("without the step's word: %s", d.Cause)
	}
}

// retry.on_exit retries a non-zero exit within the budget (from the last
// resumable checkpoint), then fails saying the retries are exhausted; it
// never retries a requested cancel, and without it an exit is final.
func TestDecideOnExitRetries(t *testing.T) {
	def := schema.DefaultTask().Proceed
	exit3 := func(attempts int, r schema.Retry, cancel bool) Decision {
		code := 3
		return Decide(Input{State: backends.Failed, SchedExit: &code, Exit: &schema.ExitFile{V: 1, ExitCode: 3}, Proceed: def, Retry: r,
			Attempts: attempts, CancelRequested: cancel, Evidence: Evidence{Resume: "ck-2"}})
	}
	on := schema.Retry{MaxAttempts: 2, OnExit: true}
	if d := exit3(1, on, false); d.Action != Retry || d.Cause != schema.CauseExit || d.ResumeFrom != "ck-2" || !strings.Contains(d.Reason, "attempt 2 of 2") {
		t.Errorf("first exit: %v %s %q (%s)", d.Action, d.Cause, d.ResumeFrom, d.Reason)
	}
	if d := exit3(2, on, false); d.Action != Finish || d.Outcome != schema.OutcomeFailed || !strings.Contains(d.Reason, "retries exhausted after 2 attempts") {
		t.Errorf("budget spent: %v %s (%s)", d.Action, d.Outcome, d.Reason)
	}
	if d := exit3(1, schema.Retry{MaxAttempts: 2}, false); d.Action != Finish || d.Outcome != schema.OutcomeFailed {
		t.Errorf("without on_exit: %v %s (%s)", d.Action, d.Outcome, d.Reason)
	}
	if d := exit3(1, on, true); d.Action == Retry {
		t.Errorf("a requested cancel is never retried: %s", d.Reason)
	}
}
