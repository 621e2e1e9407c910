// Package sim is tether's fault-schedule simulation: the real engine,
// launcher, monitor and run-directory code against a simulated scheduler
// (Sched) and a simulated clock, driven by one seed. Actors (tether run,
// wait, step, status, cancel, an Airflow retry with the same key, two
// monitors) interleave; any of them can die at any cut point (every
// state-file write and lock, rundir.Store.CutPoint) and is restarted from
// disk only; the scheduler loses submit answers, refuses, fails queries
// for a while, purges finished jobs, requeues, preempts, loses nodes, and
// shows the wrapper's files late. After every step the invariants of
// DESIGN.md ("Guarantees, and how they are checked") are checked; a
// failure names the invariant and the seed that replays it.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// TB is the part of testing.TB the simulation uses.
type TB interface {
	Errorf(format string, args ...any)
	Helper()
}

// Stats counts what one schedule explored.
type Stats struct {
	Steps, Crashes, Interleavings, Decisions, Jobs int
	// EarlyDecisions were made on a conclusive exit file before the
	// scheduler reported the job's end
	EarlyDecisions int
}

// World is one schedule: the seeded generator, the clock, the scheduler,
// the actors and the truth the invariants are checked against.
type World struct {
	t        TB
	seed     uint64
	rng      *rand.Rand
	now      time.Time
	dir      string
	site     *schema.Site
	sched    *Sched
	walltime time.Duration
	keys     []string
	task     schema.Task
	// calm: no faults (the quiescent end of a schedule).
	calm bool

	actors   []*actor
	monitors []*actor
	nesting  bool
	step     int
	history  []string
	failed   bool
	stats    Stats

	// truth
	refused   map[string]bool            // run -> its last submit was refused
	best      map[string]map[int]float64 // run -> attempt -> best checkpoint
	decisions map[string]map[int]string  // run -> generation -> decided_at
	cancelled map[string]bool            // runs whose cancel returned
	// checked: what check last saw of each run (unchanged runs are skipped)
	checked map[string]string
}

// actor is one tether process: its own store (with its crash point), its
// engine, and for the monitors a monitor.
type actor struct {
	name    string
	store   *rundir.Store
	eng     *monitor.Engine
	mon     *monitor.Monitor
	crashIn int // cut points until this actor dies; 0: none planned
}

// crash is the panic an actor dies with at a cut point.
type crash struct{ actor, path string }

// New makes a world for seed in dir (a fresh directory).
func New(t TB, seed uint64, dir string) *World {
	w := &World{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC), dir: dir, walltime: time.Minute,
		refused: map[string]bool{}, best: map[string]map[int]float64{}, decisions: map[string]map[int]string{}, cancelled: map[string]bool{}, checked: map[string]string{},
	}
	site, err := schema.ParseSite("sim.toml", []byte(`name = "sim"
backend = "sbatch"
[poll]
min_interval = "1ms"
max_interval = "1ms"
vanish_grace = "2m"
evidence_grace = "20s"
recover_after = "3m"
`))
	if err != nil {
		panic(err)
	}
	site.Poll.MinInterval, site.Poll.MaxInterval = 0, 0 // the simulated clock never waits
	w.site = site
	w.sched = &Sched{w: w, jobs: map[backends.JobID]*job{}, accounting: w.rng.IntN(2) == 0, minJobAge: time.Duration(1+w.rng.IntN(5)) * time.Minute}
	task := schema.DefaultTask()
	task.Name = "sim"
	task.Command = []string{"true"}
	task.Workdir = dir
	task.Resources.Walltime = schema.Duration(w.walltime)
	task.Retry = schema.Retry{MaxAttempts: 1 + w.rng.IntN(3), OnNodeFail: true, OnPreempted: w.rng.IntN(2) == 0, OnTimeout: true}
	task.Proceed = schema.Proceed{OnTimeout: schema.PolicyCheckpoint, OnFailure: []string{schema.PolicyNever, schema.PolicyCheckpoint}[w.rng.IntN(2)], MinFraction: 0.5}
	w.task = task
	for i := range 1 + w.rng.IntN(2) {
		w.keys = append(w.keys, fmt.Sprintf("airflow/dag/run/task%d", i))
	}
	names := []string{"run#1", "run#2", "wait#1", "wait#2", "status", "cancel", "step"}
	for _, n := range names {
		w.actors = append(w.actors, w.newActor(n, false))
	}
	for _, n := range []string{"monitor-a", "monitor-b"} {
		w.monitors = append(w.monitors, w.newActor(n, true))
	}
	w.note("seed %d: %d keys, max_attempts %d, on_failure %s, accounting %v, MinJobAge %s",
		seed, len(w.keys), task.Retry.MaxAttempts, task.Proceed.OnFailure, w.sched.accounting, w.sched.minJobAge)
	return w
}

func (w *World) newActor(name string, mon bool) *actor {
	a := &actor{name: name}
	a.store = &rundir.Store{Dir: w.dir, CutPoint: func(path string) { w.cut(a, path) }}
	for _, sub := range []string{"runs", "keys", "active"} {
		if err := os.MkdirAll(filepath.Join(w.dir, sub), 0o755); err != nil {
			panic(err)
		}
	}
	now := func() time.Time { return w.now }
	sub := &launcher.Submitter{Store: a.store, Site: w.site, Backend: w.sched, TetherPath: "/usr/bin/tether", Now: now}
	a.eng = &monitor.Engine{Site: w.site, Store: a.store, Backend: w.sched, Submitter: sub, Now: now,
		Poller: &monitor.Poller{Site: w.site.Name, Store: a.store, Backend: w.sched, Now: now},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)), Actor: name}
	if mon {
		a.mon = monitor.NewMonitor([]*monitor.SiteRuntime{{Site: w.site, Store: a.store, Engine: a.eng}}, "sim", now, a.eng.Log)
	}
	return a
}

// cut is every actor's cut point: it may kill the actor there, and at a
// run lock it may let another actor act first (the race between a look
// and its action).
func (w *World) cut(a *actor, path string) {
	if a.crashIn > 0 {
		a.crashIn--
		if a.crashIn == 0 {
			panic(crash{a.name, path})
		}
	}
	if !w.nesting && !w.calm && filepath.Base(path) == "lock" && w.rng.IntN(8) == 0 {
		runID := filepath.Base(filepath.Dir(path))
		w.nesting = true
		defer func() { w.nesting = false }()
		w.stats.Interleavings++
		other := w.actors[4+w.rng.IntN(3)] // status, cancel or step
		w.note("  interleaved before %s takes the lock of %s:", a.name, runID)
		w.runOp(other, func(ctx context.Context) error { return w.actOn(ctx, other, runID) })
	}
}

// note adds a line to the schedule's history (shown on failure).
func (w *World) note(format string, args ...any) {
	w.history = append(w.history, fmt.Sprintf("[%d %s] ", w.step, w.now.Format("15:04:05"))+fmt.Sprintf(format, args...))
}

// fail reports a broken invariant with the seed that replays it.
func (w *World) fail(inv, format string, args ...any) {
	w.t.Helper()
	if w.failed {
		return
	}
	w.failed = true
	h := w.history
	if len(h) > 60 {
		h = h[len(h)-60:]
	}
	w.t.Errorf("invariant %s broken at step %d (replay: go test ./internal/sim -run 'TestSimulation$' -sim.seed=%d -v):\n  %s\nhistory:\n%s\nscheduler:\n%s",
		inv, w.step, w.seed, fmt.Sprintf(format, args...), strings.Join(h, "\n"), w.sched.describe())
}

// BreakFindByTag makes find-by-tag blind, for the self-test: lost submit
// answers must then show up as broken invariants.
func (w *World) BreakFindByTag() { w.sched.blindFind = true }

// Failed reports whether an invariant broke.
func (w *World) Failed() bool { return w.failed }

// Stats returns what the schedule explored.
func (w *World) Stats() Stats { return w.stats }

// runOp runs one actor operation; a crash at a cut point ends it like a
// killed process (deferred unlocks run, as the kernel drops flocks).
func (w *World) runOp(a *actor, op func(ctx context.Context) error) {
	if !w.calm && !w.nesting && w.rng.IntN(6) == 0 {
		a.crashIn = 1 + w.rng.IntN(8)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer func() {
		a.crashIn = 0
		if r := recover(); r != nil {
			c, ok := r.(crash)
			if !ok {
				panic(r)
			}
			w.stats.Crashes++
			w.note("  %s dies before writing %s", c.actor, strings.TrimPrefix(c.path, w.dir+"/"))
		}
	}()
	if err := op(ctx); err != nil {
		w.note("  %s: %v", a.name, err)
		if errors.Is(err, context.DeadlineExceeded) {
			w.fail("liveness", "%s hung (a lock left behind?): %v", a.name, err)
		}
	}
}

// runs lists the run directories.
func (w *World) runs() []string {
	ids, _ := (&rundir.Store{Dir: w.dir}).ListRuns()
	return ids
}

func (w *World) pickRun() (string, bool) {
	ids := w.runs()
	if len(ids) == 0 {
		return "", false
	}
	return ids[w.rng.IntN(len(ids))], true
}

// Step takes one step of the schedule: an actor acts, or the scheduler
// and the clock move on. It checks the invariants afterwards.
func (w *World) Step() {
	w.step++
	w.stats.Steps++
	r := w.rng.IntN(100)
	switch {
	case r < 12:
		a := w.actors[w.rng.IntN(2)]
		key := w.keys[w.rng.IntN(len(w.keys))]
		w.note("%s: tether run --key %s", a.name, key)
		w.runOp(a, func(ctx context.Context) error { return w.start(ctx, a, key) })
	case r < 30:
		if id, ok := w.pickRun(); ok {
			a := w.actors[2+w.rng.IntN(2)]
			w.note("%s: looks at %s (acting)", a.name, id)
			w.runOp(a, func(ctx context.Context) error {
				_, err := a.eng.Step(ctx, a.store.Run(id), 0, monitor.NewTracker(a.store.Run(id)))
				return err
			})
		}
	case r < 42:
		m := w.monitors[w.rng.IntN(2)]
		w.note("%s: cycle", m.name)
		w.runOp(m, func(ctx context.Context) error { _, err := m.mon.Cycle(ctx, m.mon.Sites[0], 0); return err })
	case r < 48:
		if id, ok := w.pickRun(); ok {
			w.runOp(w.actors[4], func(ctx context.Context) error { return w.look(ctx, w.actors[4], id) })
		}
	case r < 53:
		if id, ok := w.pickRun(); ok {
			a := w.actors[5]
			w.runOp(a, func(ctx context.Context) error { return w.cancel(ctx, a, id) })
		}
	case r < 85:
		w.sched.Tick()
		w.now = w.now.Add(time.Duration(1+w.rng.IntN(20)) * time.Second)
	default:
		w.now = w.now.Add(time.Duration(1+w.rng.IntN(90)) * time.Second)
	}
	w.check()
}

// actOn is an interleaved operation of the status, cancel or step actor.
func (w *World) actOn(ctx context.Context, a *actor, runID string) error {
	switch a.name {
	case "status":
		return w.look(ctx, a, runID)
	case "cancel":
		return w.cancel(ctx, a, runID)
	}
	w.note("%s: looks at %s (acting)", a.name, runID)
	_, err := a.eng.Step(ctx, a.store.Run(runID), 0, monitor.NewTracker(a.store.Run(runID)))
	return err
}

func (w *World) start(ctx context.Context, a *actor, key string) error {
	task := w.task
	run, replay, err := a.eng.Start(ctx, monitor.StartRequest{Task: &task, Key: key, SpecHash: "sim"})
	if err != nil {
		return err
	}
	if replay != nil {
		w.check() // a decision taken inside this operation
		// invariant 6: a rerun prints the decision that was made
		if got := w.decisions[run.ID]; got == nil {
			w.fail("6 one decision, replayed", "run %s replayed an outcome no check saw decided", run.ID)
		} else if rec, err := run.Load(); err == nil {
			if d := got[outcomeGen(rec, replay)]; replay.DecidedAt == nil || d != replay.DecidedAt.String() {
				w.fail("6 one decision, replayed", "run %s replayed the outcome decided at %v, the generation was decided at %s", run.ID, replay.DecidedAt, d)
			}
		}
		w.note("  replayed %s", replay.Outcome)
		return nil
	}
	_, err = a.eng.Step(ctx, run, 0, monitor.NewTracker(run))
	return err
}

// look is tether status: it must change nothing in the run.
func (w *World) look(ctx context.Context, a *actor, runID string) error {
	w.note("status: looks at %s", runID)
	before := fingerprint(w.dir, runID)
	st, err := a.eng.Look(ctx, a.store.Run(runID), 0, monitor.NewTracker(a.store.Run(runID)))
	if after := fingerprint(w.dir, runID); after != before {
		w.fail("status only looks", "tether status changed run %s:\nbefore %s\nafter  %s", runID, before, after)
	}
	if err == nil {
		w.note("  status: %s (%s)", st.Outcome.Outcome, st.Outcome.Reason)
	}
	return err
}

func (w *World) cancel(ctx context.Context, a *actor, runID string) error {
	w.note("cancel: tether cancel %s", runID)
	st, err := a.eng.Cancel(ctx, a.store.Run(runID))
	if err != nil {
		return err
	}
	w.cancelled[runID] = true
	w.note("  cancel returned %s (act error: %v)", st.Outcome.Outcome, st.ActErr)
	return nil
}

// outcomeGen is the generation an outcome decided: that of the attempt
// that was current when it was written (a new generation's attempt may
// already be recorded beside it).
func outcomeGen(rec *schema.RunRecord, o *schema.Outcome) int {
	if o.Attempts >= 1 && o.Attempts <= len(rec.Attempts) {
		return rec.Attempts[o.Attempts-1].Generation
	}
	return 0
}

// fingerprint summarises everything a look must not change.
func fingerprint(dir, runID string) string {
	var b strings.Builder
	paths := []string{filepath.Join(dir, "active", runID)}
	rd := filepath.Join(dir, "runs", runID)
	filepath.Walk(rd, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() != "lock" {
			paths = append(paths, p)
		}
		return nil
	})
	for _, p := range paths {
		data, err := os.ReadFile(p)
		fmt.Fprintf(&b, "%s:%d:%v;", strings.TrimPrefix(p, dir), len(data), err == nil)
		b.Write(data)
	}
	return b.String()
}

// checkpoint records the truth about a Task's checkpoint.
func (w *World) checkpoint(j *job, f float64) {
	m := w.best[j.runID]
	if m == nil {
		m = map[int]float64{}
		w.best[j.runID] = m
	}
	m[j.attempt] = max(m[j.attempt], f)
}

// checkSubmit checks invariants 1 and 2 when the scheduler takes a job.
func (w *World) checkSubmit(req backends.JobRequest) {
	if live := w.sched.liveJobs(req.RunID); len(live) > 0 {
		w.fail("1 one live job per run", "job for %s (%s) submitted while job %s of attempt %d is live (%s)", req.RunID, req.Tag, live[0].id, live[0].attempt, live[0].state)
	}
	var rec schema.RunRecord
	if err := rundir.ReadJSON(filepath.Join(w.dir, "runs", req.RunID, "run.json"), &rec); err == nil && rec.CancelRequested != nil {
		w.fail("2 no lost cancel", "job for %s (%s) submitted while a cancel is requested", req.RunID, req.Tag)
	}
}

// check verifies the invariants that hold after every step.
func (w *World) check() {
	store := &rundir.Store{Dir: w.dir}
	for _, id := range w.runs() {
		run := store.Run(id)
		sig := fmt.Sprintf("%s|%s|%s|%d", statSig(run.RunJSON()), statSig(run.OutcomeFile()),
			statSig(filepath.Join(w.dir, "active", id)), len(w.sched.liveJobs(id)))
		if w.checked[id] == sig {
			continue // nothing the invariants look at changed
		}
		w.checked[id] = sig
		rec, err := run.Load()
		if err != nil {
			continue // being created
		}
		o, done, err := run.Outcome()
		if err != nil {
			w.fail("files", "outcome of %s unreadable: %v", id, err)
			continue
		}
		_, activeErr := os.Stat(filepath.Join(w.dir, "active", id))
		if !done {
			// invariant 5: a run that has (or may have) a job is visible
			if len(w.sched.liveJobs(id)) > 0 && activeErr != nil {
				w.fail("5 visible until decided", "run %s has live job %s but no active mark", id, w.sched.liveJobs(id)[0].id)
			}
			continue
		}
		gen := outcomeGen(rec, o)
		if w.decisions[id] == nil {
			w.decisions[id] = map[int]string{}
		}
		at := ""
		if o.DecidedAt != nil {
			at = o.DecidedAt.String()
		}
		prev, seen := w.decisions[id][gen]
		if seen {
			if prev != at {
				w.fail("6 one decision per generation", "run %s generation %d decided twice (%s, then %s: %s)", id, gen, prev, at, o.Outcome)
			}
			continue
		}
		w.decisions[id][gen] = at
		w.stats.Decisions++
		w.note("  decided %s: %s (%s) %s by %s", id, o.Outcome, o.Cause, o.Reason, o.DecidedBy)
		w.checkDecision(id, rec, o)
	}
}

// statSig is a file's identity for change detection (every state write
// renames a new file in).
func statSig(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d/%v", fi.ModTime().UnixNano(), fi.Size(), fi.Sys())
}

// checkDecision checks a new decision against the truth (invariants 3, 4, 7).
func (w *World) checkDecision(id string, rec *schema.RunRecord, o *schema.Outcome) {
	cur := rec.Current()
	// A run may be decided before the scheduler's word only on the
	// wrapper's conclusive exit file: the Task of the current attempt
	// really ended by itself, with the code the outcome names.
	byExit := false
	if cur != nil && cur.JobID != "" {
		if j := w.sched.jobs[backends.JobID(cur.JobID)]; j != nil && j.selfExit != nil && o.ExitCode != nil && *o.ExitCode == *j.selfExit {
			byExit = true
			if j.live() || w.sched.lastOK.Before(j.endedAt) {
				w.stats.EarlyDecisions++
			}
		}
	}
	if live := w.sched.liveJobs(id); len(live) > 0 && !byExit {
		w.fail("3 nothing decided from silence", "run %s decided %s (%s) while its job %s is live (%s)", id, o.Outcome, o.Reason, live[0].id, live[0].state)
	}
	if o.Cause == schema.CauseRefused && !w.refused[id] {
		w.fail("7 unknown errors are transient", "run %s failed as refused, but its last submit was not refused: %s", id, o.Reason)
	}
	if cur != nil && cur.JobID != "" && o.Cause != schema.CauseRefused {
		if j := w.sched.jobs[backends.JobID(cur.JobID)]; j != nil && !byExit && w.sched.lastOK.Before(j.endedAt) && o.Cause != schema.CauseCancelled {
			w.fail("3 nothing decided from silence", "run %s decided %s at %s from job %s that ended at %s, but the scheduler last answered at %s",
				id, o.Outcome, w.now, j.id, j.endedAt, w.sched.lastOK)
		}
	}
	if o.Cause == schema.CauseLost {
		for _, jid := range w.sched.order {
			if j := w.sched.jobs[jid]; j.runID == id && j.attempt == cur.N && !j.purged {
				w.fail("3 nothing decided from silence", "run %s decided lost but its job %s is still known to the scheduler", id, jid)
			}
		}
	}
	if o.Outcome == schema.OutcomePartial {
		// invariant 4: only checkpoints of the current generation count
		best := 0.0
		for _, a := range rec.CurrentGen() {
			best = max(best, w.best[id][a.N])
		}
		if best < w.task.Proceed.MinFraction {
			w.fail("4 evidence of this generation", "run %s ended partial (%s) but the current generation checkpointed at most %.1f", id, o.Reason, best)
		}
	}
}

// Quiesce ends the schedule: faults stop, the clock runs on, a monitor
// decides everything, and the end-state invariants are checked: every
// run decided, no live job left, every cancel carried out.
func (w *World) Quiesce() {
	w.calm = true
	w.sched.outage = 0
	w.note("quiesce")
	m := w.monitors[0]
	for range 300 {
		w.sched.Tick()
		w.now = w.now.Add(30 * time.Second)
		w.step++
		w.runOp(m, func(ctx context.Context) error { _, err := m.mon.Cycle(ctx, m.mon.Sites[0], 0); return err })
		w.check()
		if w.failed || w.settled() {
			break
		}
	}
	if w.failed {
		return
	}
	store := &rundir.Store{Dir: w.dir}
	for _, id := range w.runs() {
		run := store.Run(id)
		rec, err := run.Load()
		if err != nil {
			continue
		}
		o, done, _ := run.Outcome()
		if !done && len(rec.Attempts) > 0 {
			w.fail("liveness", "run %s is still not decided after the faults ended", id)
			return
		}
		if done && rec.CancelRequested != nil && o.Outcome != schema.OutcomeCancelled && o.Outcome != schema.OutcomeSucceeded {
			w.fail("2 no lost cancel", "run %s had a cancel requested but ended %s (%s)", id, o.Outcome, o.Reason)
		}
	}
	for _, jid := range w.sched.order {
		if j := w.sched.jobs[jid]; j.live() {
			w.fail("1 one live job per run", "job %s of run %s is still live after every run was decided", jid, j.runID)
			return
		}
	}
	w.stats.Jobs = len(w.sched.order)
}

// settled: every run with an attempt is decided and nothing is live.
func (w *World) settled() bool {
	store := &rundir.Store{Dir: w.dir}
	for _, id := range w.runs() {
		rec, err := store.Run(id).Load()
		if err != nil {
			continue
		}
		if _, done, _ := store.Run(id).Outcome(); !done && len(rec.Attempts) > 0 {
			return false
		}
	}
	for _, jid := range w.sched.order {
		if w.sched.jobs[jid].live() {
			return false
		}
	}
	return true
}
