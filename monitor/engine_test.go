package monitor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

type env struct {
	tick    func() time.Time // a ticking clock shared by deciders
	decider int
	be      *fake.Backend
	store   *rundir.Store
	site    *schema.Site
	now     time.Time
}

func (e *env) Now() time.Time { return e.now }

func newEnv(t *testing.T) *env {
	t.Helper()
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\nmin_interval='1ms'\nmax_interval='10ms'\nvanish_grace='1m'\nevidence_grace='0s'\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := rundir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{be: fake.New(), store: store, site: site, now: time.Unix(2e9, 0)}
}

func (e *env) engine() *monitor.Engine {
	sub := &launcher.Submitter{Store: e.store, Site: e.site, Backend: e.be, TetherPath: "/usr/bin/tether", Now: e.Now}
	return &monitor.Engine{
		Site: e.site, Store: e.store, Backend: e.be, Submitter: sub, Now: e.Now,
		Poller: &monitor.Poller{Store: e.store, Backend: e.be, Now: e.Now},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)), Actor: "test",
	}
}

func (e *env) newRun(t *testing.T, task schema.Task) rundir.Run {
	t.Helper()
	task.Workdir = t.TempDir()
	rec := &schema.RunRecord{RunID: rundir.NewRunID(task.Name, e.now), Site: e.site.Name, Backend: e.site.Backend, Task: task}
	run, err := e.store.CreateRun(rec)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

func baseTask() schema.Task {
	t := schema.DefaultTask()
	t.Name = "t"
	t.Command = []string{"true"}
	t.Resources.Walltime = schema.Duration(time.Minute)
	return t
}

// decisions counts the writes of outcome.json through a store's cut point.
func countDecisions(st *rundir.Store) *atomic.Int32 {
	var n atomic.Int32
	st.CutPoint = func(path string) {
		if strings.HasSuffix(path, "/outcome.json") {
			n.Add(1)
		}
	}
	return &n
}

// tickingClock returns a clock that moves on at every call, so two
// decisions can never carry the same decided_at.
func tickingClock(start time.Time) func() time.Time {
	var mu sync.Mutex
	now := start
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

// deciders steps one ended run from n engines at once (tether run, waits,
// the monitor), each with its own actor name and a ticking clock, and
// returns what each saw.
func deciders(t *testing.T, e *env, runID string, n int) []schema.Outcome {
	t.Helper()
	if e.tick == nil {
		e.tick = tickingClock(e.now)
	}
	clock := e.tick
	var wg sync.WaitGroup
	outs := make([]schema.Outcome, n)
	errs := make([]error, n)
	for i := range outs {
		eng := e.engine()
		e.decider++
		eng.Now, eng.Poller.Now, eng.Actor = clock, clock, fmt.Sprintf("decider %d", e.decider)
		run := eng.Store.Run(runID)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st, err := eng.Step(context.Background(), run, 0, monitor.NewTracker(run))
			outs[i], errs[i] = st.Outcome, err
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	return outs
}

// agree reports whether every decider printed the one decision.
func agree(outs []schema.Outcome) error {
	for _, o := range outs {
		if !o.Final || o.DecidedAt == nil {
			return fmt.Errorf("not decided: %+v", o)
		}
		if !o.DecidedAt.Equal(*outs[0].DecidedAt) || o.DecidedBy != outs[0].DecidedBy || o.Outcome != outs[0].Outcome {
			return fmt.Errorf("deciders disagree: %s by %s at %s, %s by %s at %s",
				o.Outcome, o.DecidedBy, o.DecidedAt, outs[0].Outcome, outs[0].DecidedBy, outs[0].DecidedAt)
		}
	}
	return nil
}

func TestEngineSubmitsDecidesOnce(t *testing.T) {
	e := newEnv(t)
	run := e.newRun(t, baseTask())
	eng := e.engine()
	ctx := context.Background()
	st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil || st.Outcome.Final || st.Outcome.JobID != "1" {
		t.Fatalf("first step: %+v %v", st.Outcome, err)
	}
	e.be.Set("1", backends.Completed, 0)
	writes := countDecisions(e.store)
	outs := deciders(t, e, run.ID, 4)
	if err := agree(outs); err != nil {
		t.Error(err)
	}
	if outs[0].Outcome != schema.OutcomeSucceeded {
		t.Errorf("outcome %+v", outs[0])
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("outcome.json written %d times", n)
	}
	if act, _ := e.store.Active(); len(act) != 0 {
		t.Errorf("run still active: %v", act)
	}
}

// The check above can fail: an engine that does not see an earlier
// decision (here: the outcome removed before each decider looks, as an
// engine that does not check for it would overwrite it) is caught.
func TestEngineDecidesOnceCatchesABrokenEngine(t *testing.T) {
	e := newEnv(t)
	run := e.newRun(t, baseTask())
	if _, err := e.engine().Step(context.Background(), run, 0, monitor.NewTracker(run)); err != nil {
		t.Fatal(err)
	}
	e.be.Set("1", backends.Completed, 0)
	writes := countDecisions(e.store)
	var outs []schema.Outcome
	for range 3 {
		os.Remove(run.OutcomeFile()) // the broken engine forgets the earlier decision
		outs = append(outs, deciders(t, e, run.ID, 1)...)
	}
	if err := agree(outs); err == nil {
		t.Errorf("a double decision went unnoticed: %+v", outs)
	}
	if n := writes.Load(); n != 3 {
		t.Errorf("the broken engine wrote outcome.json %d times, want 3", n)
	}
}

func TestEngineRetriesNodeFailWithResume(t *testing.T) {
	e := newEnv(t)
	task := baseTask()
	task.Retry.MaxAttempts = 2
	run := e.newRun(t, task)
	eng := e.engine()
	ctx := context.Background()
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventCheckpoint, Fraction: new(0.4), Resume: "step=4"})
	e.be.Put(backends.JobStatus{ID: "1", State: backends.NodeFail, Nodes: []string{"node2"}})
	st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil || st.Decision.Action != monitor.Retry {
		t.Fatalf("%+v %v", st.Decision, err)
	}
	rec, _ := run.Load()
	if len(rec.Attempts) != 2 || rec.Attempts[1].ResumeFrom != "step=4" || rec.Attempts[0].State != "NODE_FAIL" {
		t.Fatalf("attempts: %+v", rec.Attempts)
	}
	if req := e.be.Requests[1]; req.Attempt != 2 {
		t.Errorf("second request: %+v", req)
	}
	// the second attempt fails the same way: budget spent
	e.be.Put(backends.JobStatus{ID: "2", State: backends.NodeFail, Nodes: []string{"node1"}})
	st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if !st.Outcome.Final || st.Outcome.Outcome != schema.OutcomeFailed || st.Outcome.Attempts != 2 {
		t.Errorf("final: %+v", st.Outcome)
	}
}

func TestEngineDoesNotFailOnSchedulerErrors(t *testing.T) {
	e := newEnv(t)
	run := e.newRun(t, baseTask())
	eng := e.engine()
	ctx := context.Background()
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	e.be.Fail(backends.ErrUnavailable)
	for i := 0; i < 5; i++ {
		e.now = e.now.Add(time.Hour)
		st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
		if err != nil || st.Outcome.Final || st.PollErr == nil {
			t.Fatalf("step %d during outage: %+v %v", i, st.Outcome, err)
		}
	}
	e.be.Fail(nil)
	e.be.Set("1", backends.Completed, 0)
	e.now = e.now.Add(time.Hour)
	st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeSucceeded {
		t.Errorf("after the outage: %+v", st.Outcome)
	}
}

func TestEngineVanishedJob(t *testing.T) {
	e := newEnv(t)
	run := e.newRun(t, baseTask())
	eng := e.engine()
	ctx := context.Background()
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	e.be.Forget("1")
	st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Final {
		t.Fatalf("decided before the grace window: %+v", st.Outcome)
	}
	e.now = e.now.Add(2 * time.Minute)
	st, _ = eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeFailed {
		t.Fatalf("after grace: %+v", st.Outcome)
	}
}

func TestEngineVanishedWithExitFile(t *testing.T) {
	e := newEnv(t)
	run := e.newRun(t, baseTask())
	eng := e.engine()
	ctx := context.Background()
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	e.be.Forget("1")
	rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, ExitCode: 3})
	st, _ := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if st.Outcome.Outcome != schema.OutcomeFailed || st.Outcome.SchedulerState != "VANISHED" || !strings.Contains(st.Outcome.Reason, "code 3") {
		t.Fatalf("%+v", st.Outcome)
	}
}

// A clean exit of the Task is decided from the exit file at once, with no
// scheduler query, while the scheduler still lists the job running; an
// exit of 3 waits for the scheduler's word.
func TestEngineDecidesCleanExitWithoutAQuery(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	eng := e.engine()
	run := e.newRun(t, baseTask())
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	e.be.Set("1", backends.Running, -1)
	eng.Step(ctx, run, 0, monitor.NewTracker(run))
	rundir.WriteJSON(run.Started(1), schema.Started{V: 1, Time: e.now.Add(-time.Minute), Attempt: 1})
	rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, Time: e.now, ExitCode: 0})
	before := e.be.Queries.Load()
	st, err := eng.Step(ctx, run, 0, monitor.NewTracker(run))
	if err != nil || st.Outcome.Outcome != schema.OutcomeSucceeded || !strings.Contains(st.Outcome.Reason, "decided from the exit file; the scheduler still lists the job running") {
		t.Fatalf("%+v %v", st.Outcome, err)
	}
	if n := e.be.Queries.Load() - before; n != 0 {
		t.Errorf("%d scheduler queries for a run its exit file decides", n)
	}

	run2 := e.newRun(t, baseTask())
	eng.Step(ctx, run2, 0, monitor.NewTracker(run2))
	rec2, err := run2.Load()
	if err != nil || rec2.Current() == nil {
		t.Fatalf("run2: %v", err)
	}
	e.be.Set(backends.JobID(rec2.Current().JobID), backends.Running, -1)
	rundir.WriteJSON(run2.ExitCode(1), schema.ExitFile{V: 1, Time: e.now, ExitCode: 3})
	st, _ = eng.Step(ctx, run2, 0, monitor.NewTracker(run2))
	if st.Outcome.Final {
		t.Fatalf("exit 3 decided before the scheduler's word: %+v", st.Outcome)
	}
}
