package monitor_test

// Regression tests for the holes the state-machine review and the fault
// simulation found; each failed before its fix.

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func (e *env) start(t *testing.T, eng *monitor.Engine, key string, task schema.Task) (rundir.Run, error) {
	t.Helper()
	task.Workdir = t.TempDir()
	run, _, err := eng.Start(context.Background(), monitor.StartRequest{Task: &task, Key: key, SpecHash: "h"})
	return run, err
}

func load(t *testing.T, run rundir.Run) *schema.RunRecord {
	t.Helper()
	rec, err := run.Load()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// A cancel of a run whose attempt has no job id yet (the submit's answer
// was lost) never submits: it waits for the job to show up by its tag,
// cancels it when it does, and ends cancelled when the recovery window
// passes without one. (Before: tether cancel ended in Recover, which
// submitted the job.)
func TestCancelWithoutJobIDNeverSubmits(t *testing.T) {
	for _, found := range []bool{false, true} {
		t.Run(map[bool]string{false: "never taken", true: "taken, answer lost"}[found], func(t *testing.T) {
			e := newEnv(t)
			eng := e.engine()
			ctx := context.Background()
			if found {
				e.be.LoseNextAnswer()
			} else {
				e.be.FailSubmit(backends.ErrUnavailable)
			}
			run, err := e.start(t, eng, "k", baseTask())
			if !errors.Is(err, backends.ErrUnavailable) {
				t.Fatalf("start: %v", err)
			}
			e.be.FailSubmit(nil)
			if cur := load(t, run).Current(); cur == nil || cur.JobID != "" {
				t.Fatalf("attempt: %+v", cur)
			}
			submits := e.be.Submits.Load()
			st, err := eng.Cancel(ctx, run)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3 && !st.Outcome.Final; i++ {
				e.now = e.now.Add(time.Minute)
				st, err = eng.Step(ctx, run, 0, monitor.NewTracker(run))
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := e.be.Submits.Load(); got != submits {
				t.Errorf("the cancel submitted %d job(s)", got-submits)
			}
			if !st.Outcome.Final {
				// the lost job was found by its tag and cancelled; the
				// scheduler reports it cancelled at the next look
				st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
			}
			if st.Outcome.Outcome != schema.OutcomeCancelled || st.Outcome.Cause != schema.CauseCancelled {
				t.Errorf("outcome: %+v", st.Outcome)
			}
		})
	}
}

// A cancel the scheduler did not take is sent again by the next acting
// look, and tether cancel says so (ActErr, exit 3 in the CLI).
func TestFailedCancelIsSentAgain(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	run, err := e.start(t, eng, "", baseTask())
	if err != nil {
		t.Fatal(err)
	}
	e.be.Set("1", backends.Running, -1)
	e.be.FailCancel(backends.ErrUnavailable)
	st, err := eng.Cancel(ctx, run)
	if err != nil || st.ActErr == nil || st.Outcome.Final {
		t.Fatalf("cancel during a cancel outage: %+v act=%v err=%v", st.Outcome, st.ActErr, err)
	}
	e.be.FailCancel(nil)
	// nothing but an ordinary look (a waiter, the monitor) follows
	st, err = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Outcome.Final {
		st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	}
	if st.Outcome.Outcome != schema.OutcomeCancelled {
		t.Fatalf("after the cancel outage: %+v", st.Outcome)
	}
}

// A cancel that arrives between a look and its retry wins: the act step
// re-reads the run under the lock and starts no attempt.
func TestCancelDuringRetryStartsNoAttempt(t *testing.T) {
	e := newEnv(t)
	var armed atomic.Bool
	e.store.CutPoint = func(path string) {
		if strings.HasSuffix(path, "/lock") && armed.CompareAndSwap(true, false) {
			run := e.store.Run(strings.Split(strings.TrimPrefix(path, e.store.Dir+"/runs/"), "/")[0])
			rec, err := run.Load()
			if err == nil {
				now := e.now
				rec.CancelRequested = &now
				err = run.Save(rec)
			}
			if err != nil {
				t.Error(err)
			}
		}
	}
	eng := e.engine()
	ctx := context.Background()
	task := baseTask()
	task.Retry.MaxAttempts = 3
	run, err := e.start(t, eng, "", task)
	if err != nil {
		t.Fatal(err)
	}
	e.be.Put(backends.JobStatus{ID: "1", State: backends.NodeFail, Nodes: []string{"n1"}})
	armed.Store(true)
	st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil {
		t.Fatal(err)
	}
	if st.Decision.Action != monitor.Retry {
		t.Fatalf("the look should have decided a retry: %+v", st.Decision)
	}
	if n := e.be.Submits.Load(); n != 1 {
		t.Errorf("%d jobs submitted; the retry must not start after the cancel", n)
	}
	if st.Outcome.Outcome != schema.OutcomeCancelled {
		t.Errorf("outcome: %+v", st.Outcome)
	}
}

// A retry whose submit fails with an unknown error is not a final
// failure: the attempt is kept, found by its tag, and carried on. Only a
// definite refusal fails the run, with cause "refused".
func TestRetrySubmitErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		final bool
	}{
		{"unknown error is transient", errors.New("sbatch: error: Invalid authentication credential"), false},
		{"unavailable is transient", backends.ErrUnavailable, false},
		{"refusal is final", backends.ErrRejected, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			eng := e.engine()
			ctx := context.Background()
			task := baseTask()
			task.Retry.MaxAttempts = 2
			run, err := e.start(t, eng, "", task)
			if err != nil {
				t.Fatal(err)
			}
			e.be.Put(backends.JobStatus{ID: "1", State: backends.NodeFail})
			e.be.FailSubmit(c.err)
			st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
			if err != nil {
				t.Fatal(err)
			}
			if st.Outcome.Final != c.final {
				t.Fatalf("final = %v: %+v", st.Outcome.Final, st.Outcome)
			}
			if c.final {
				if st.Outcome.Cause != schema.CauseRefused || st.Outcome.Outcome != schema.OutcomeFailed {
					t.Errorf("outcome: %+v", st.Outcome)
				}
				return
			}
			if st.ActErr == nil {
				t.Errorf("no act error reported")
			}
			e.be.FailSubmit(nil)
			e.now = e.now.Add(e.site.Poll.RecoverAfter.D())
			if st, err = eng.Step(ctx, run, 0, monitor.NewTracker(run)); err != nil {
				t.Fatal(err)
			}
			rec := load(t, run)
			if len(rec.Attempts) != 2 || rec.Current().JobID != "2" {
				t.Fatalf("the retry was not carried on: %+v", rec.Attempts)
			}
		})
	}
}

// A job marked missing does not age while the scheduler fails: an outage
// decides nothing, however long it lasts; the time a job has been missing
// is measured between scheduler answers. (Before: it was measured against
// the wall clock, and a long outage made the run lost without an answer.)
func TestMissingDoesNotAgeDuringOutage(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	run, err := e.start(t, eng, "", baseTask())
	if err != nil {
		t.Fatal(err)
	}
	e.be.Forget("1")
	if st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run)); !st.Outcome.Final && !st.Missing {
		t.Fatalf("not seen missing: %+v", st)
	}
	e.be.Fail(backends.ErrUnavailable)
	e.now = e.now.Add(3 * time.Hour)
	st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil || st.Outcome.Final {
		t.Fatalf("decided during the outage: %+v %v", st.Outcome, err)
	}
	if st.MissingFor != 0 {
		t.Errorf("missing aged %s without a scheduler answer", st.MissingFor)
	}
	// the scheduler answers again, and still knows no such job: now it has
	// been missing for hours in scheduler time
	e.be.Fail(nil)
	st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeFailed || st.Outcome.Cause != schema.CauseLost {
		t.Fatalf("after the scheduler answered again: %+v", st.Outcome)
	}
}

// A job the scheduler reports ended, whose exit file is not visible yet
// (a shared filesystem's attribute cache), waits for it for the site's
// evidence_grace before it is decided without it.
func TestEvidenceGrace(t *testing.T) {
	e := newEnv(t)
	e.site.Poll.EvidenceGrace = schema.Duration(20 * time.Second)
	eng := e.engine()
	ctx := context.Background()
	run, err := e.start(t, eng, "", baseTask())
	if err != nil {
		t.Fatal(err)
	}
	e.be.Set("1", backends.Completed, 0)
	st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Final || !strings.Contains(st.Outcome.Reason, "waiting up to 20s for the exit file") {
		t.Fatalf("decided at once: %+v", st.Outcome)
	}
	rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, ExitCode: 4})
	st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeFailed || *st.Outcome.ExitCode != 4 {
		t.Fatalf("the late exit file did not decide: %+v", st.Outcome)
	}
}

// tether status only looks: a job that ended is shown, not decided, and
// nothing in the run directory changes.
func TestLookDoesNotAct(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	task := baseTask()
	task.Retry.MaxAttempts = 2
	run, err := e.start(t, eng, "", task)
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int32
	e.store.CutPoint = func(path string) {
		if !strings.Contains(path, "/poll/") && !strings.HasSuffix(path, "/lock") {
			writes.Add(1)
		}
	}
	eng = e.engine()
	for _, state := range []backends.State{backends.Completed, backends.NodeFail} {
		e.be.Set("1", state, 0)
		st, err := eng.Look(ctx, run, 0, monitor.NewTracker(run))
		if err != nil || st.Outcome.Final || !strings.Contains(st.Outcome.Reason, "not decided yet") {
			t.Errorf("%s: %+v %v", state, st.Outcome, err)
		}
	}
	if writes.Load() != 0 || e.be.Submits.Load() != 1 {
		t.Errorf("a look wrote %d files and submitted %d jobs", writes.Load(), e.be.Submits.Load()-1)
	}
}

// A new generation (the key run again after a failure) records its
// attempt before the old outcome is archived: a crash in between leaves
// the old decision, not an undecided run that would be decided again.
// (Found by the simulation.)
func TestNewGenerationCrashKeepsTheDecision(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	run, err := e.start(t, eng, "k", baseTask())
	if err != nil {
		t.Fatal(err)
	}
	e.be.Set("1", backends.Failed, 3)
	st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeFailed {
		t.Fatalf("%+v", st.Outcome)
	}
	first := *st.Outcome.DecidedAt
	type died struct{}
	e.store.CutPoint = func(path string) {
		if strings.HasSuffix(path, "outcome.json") {
			panic(died{})
		}
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(died); !ok {
					panic(r)
				}
			}
		}()
		e.start(t, e.engine(), "k", baseTask())
		t.Fatal("the rerun did not reach the outcome")
	}()
	e.store.CutPoint = nil
	e.now = e.now.Add(time.Minute)
	st, _ = e.engine().Step(ctx, run, 0, monitor.NewTracker(run))
	if !st.Outcome.Final || !st.Outcome.DecidedAt.Equal(first) {
		t.Fatalf("the first generation was decided again: %+v", st.Outcome)
	}
	// the next rerun carries the recorded attempt on: one new job
	if _, err := e.start(t, e.engine(), "k", baseTask()); err != nil {
		t.Fatal(err)
	}
	rec := load(t, run)
	if len(rec.Attempts) != 2 || rec.Current().JobID != "2" || e.be.Submits.Load() != 2 {
		t.Fatalf("attempts %+v, %d submits", rec.Attempts, e.be.Submits.Load())
	}
}
