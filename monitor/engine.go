package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Submitter starts attempts; launcher.Submitter implements it.
type Submitter interface {
	Submit(ctx context.Context, run rundir.Run, rec *schema.RunRecord, next schema.Attempt) (*schema.Attempt, error)
	Recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (*schema.Attempt, error)
}

// Engine polls, decides and acts for the runs of one site.
type Engine struct {
	Site      *schema.Site
	Store     *rundir.Store
	Backend   backends.Backend
	Poller    *Poller
	Submitter Submitter
	Now       func() time.Time
	Log       *slog.Logger
	// Actor names the deciding process in outcome.json ("tether run pid 42 on login1").
	Actor string
}

// Tracker keeps what an engine learned about one run between steps: the
// status file is read incrementally and run.json only when it changes.
type Tracker struct {
	status  rundir.StatusReader
	rec     *schema.RunRecord
	recMod  time.Time
	recSize int64
	started *schema.Started
}

// NewTracker starts tracking a run.
func NewTracker(run rundir.Run) *Tracker {
	return &Tracker{status: rundir.StatusReader{Path: run.Status()}}
}

// Summary is the latest status-file summary.
func (t *Tracker) Summary() rundir.Summary { return t.status.Summary }

// record returns run.json, reading it again only when it changed.
func (t *Tracker) record(run rundir.Run) (*schema.RunRecord, error) {
	fi, err := os.Stat(run.RunJSON())
	if err == nil && t.rec != nil && fi.ModTime().Equal(t.recMod) && fi.Size() == t.recSize {
		return t.rec, nil
	}
	rec, err := run.Load()
	if err != nil {
		return nil, err
	}
	if fi != nil {
		t.rec, t.recMod, t.recSize = rec, fi.ModTime(), fi.Size()
	}
	return rec, nil
}

func (t *Tracker) forget() { t.rec = nil }

// startedFile reads an attempt's started file until it exists, then keeps it.
func (t *Tracker) startedFile(run rundir.Run, n int) *schema.Started {
	if t.started != nil && t.started.Attempt == n {
		return t.started
	}
	s, ok, _ := run.StartedFile(n)
	if ok && s.Attempt == n {
		t.started = s
	}
	return s
}

// Status is one look at a run.
type Status struct {
	Outcome  schema.Outcome
	Decision Decision
	Job      *backends.JobStatus // nil when the scheduler has not reported the job
	Deadline time.Time
	// PollErr is a scheduler query failure; the run is not decided on it.
	PollErr error
	// What the look saw, for metrics and stuck detection (live runs).
	Record     *schema.RunRecord
	Started    *schema.Started
	Summary    rundir.Summary
	Missing    bool
	MissingFor time.Duration
}

// Step looks at a run once: it reads the run directory, asks the shared
// poller (accepting an answer up to maxAge old), decides and acts. A run
// whose outcome is already written is returned as it is.
func (e *Engine) Step(ctx context.Context, run rundir.Run, maxAge time.Duration, tr *Tracker) (Status, error) {
	rec, st, done, err := e.prepare(ctx, run, tr)
	if done || err != nil {
		return st, err
	}
	snap, perr := e.Poller.Status(ctx, []backends.JobID{backends.JobID(rec.Current().JobID)}, maxAge)
	if perr != nil && !errors.Is(perr, ErrQuery) {
		return Status{}, perr
	}
	return e.decide(ctx, run, rec, &snap, perr, tr)
}

// StepWith is Step with a snapshot the caller already has: the monitor
// polls once for every run of a site, then steps each run. The caller has
// just refreshed the tracker's run record (Tracker.Refresh); a run another
// process decided meanwhile comes back with its outcome from finish.
func (e *Engine) StepWith(ctx context.Context, run rundir.Run, snap *Snapshot, perr error, tr *Tracker) (Status, error) {
	rec := tr.rec
	if rec == nil || rec.Current() == nil || rec.Current().JobID == "" {
		var st Status
		var done bool
		var err error
		if rec, st, done, err = e.prepare(ctx, run, tr); done || err != nil {
			return st, err
		}
	}
	return e.decide(ctx, run, rec, snap, perr, tr)
}

// Refresh re-reads run.json if it changed and returns it.
func (t *Tracker) Refresh(run rundir.Run) (*schema.RunRecord, error) { return t.record(run) }

// prepare returns the run's record, or done with the outcome of a run that
// is already decided. A run without a submitted job gets one.
func (e *Engine) prepare(ctx context.Context, run rundir.Run, tr *Tracker) (*schema.RunRecord, Status, bool, error) {
	if o, ok, err := run.Outcome(); err != nil {
		return nil, Status{}, true, err
	} else if ok {
		return nil, Status{Outcome: *o}, true, nil
	}
	rec, err := tr.record(run)
	if err != nil {
		return nil, Status{}, true, err
	}
	if cur := rec.Current(); cur == nil || cur.JobID == "" {
		if err := e.ensureSubmitted(ctx, run); err != nil {
			return nil, Status{}, true, err
		}
		tr.forget()
		if rec, err = tr.record(run); err != nil {
			return nil, Status{}, true, err
		}
	}
	return rec, Status{}, false, nil
}

// decide weighs the run's files against the scheduler's answer and acts.
func (e *Engine) decide(ctx context.Context, run rundir.Run, rec *schema.RunRecord, snap *Snapshot, perr error, tr *Tracker) (Status, error) {
	cur := rec.Current()
	// Scheduler state first, then the exit file, then the status file: a
	// Task writes its last checkpoint before it exits and the job ends, so
	// evidence read in this order is never older than the state it explains.
	id := backends.JobID(cur.JobID)
	js, known := snap.Jobs[id]
	var exit *schema.ExitFile
	if !known || js.State.Terminal() || js.State == backends.Unknown {
		// a live job is not decided on its exit file: read it only now
		var err error
		if exit, _, err = run.ExitFile(cur.N); err != nil {
			e.Log.Warn("damaged exit file", "run", run.ID, "err", err)
		}
	}
	started := tr.startedFile(run, cur.N)
	tr.status.FromAttempt, tr.status.Since = rundir.EvidenceWindow(rec) // only the current generation's evidence
	if _, err := tr.status.Update(); err != nil {
		e.Log.Warn("cannot read the status file", "run", run.ID, "err", err)
	}
	sum := tr.status.Summary

	in := Input{
		Exit:            exit,
		CancelRequested: rec.CancelRequested != nil,
		Evidence:        Weigh(sum, &rec.Task, rundir.GenerationStart(rec)),
		Proceed:         rec.Task.Proceed,
		Retry:           rec.Task.Retry,
		Attempts:        attemptsIn(rec, cur.Generation),
		Walltime:        rec.Task.Resources.Walltime.D(),
		Grace:           e.Site.Poll.VanishGrace.D(),

		SchedulerRequeue: e.Site.Retry.Requeue,
	}
	st := Status{PollErr: perr, Record: rec, Started: started, Summary: sum}
	if known {
		j := js
		st.Job = &j
		in.State, in.Native, in.SchedExit, in.SchedSig, in.SchedNote, in.Nodes = js.State, js.Native, js.ExitCode, js.Signal, js.Reason, js.Nodes
		st.Deadline = js.Deadline
	} else if since, gone := snap.Missing[id]; gone {
		in.Missing, in.MissingFor = true, e.Now().Sub(since)
		st.Missing, st.MissingFor = true, in.MissingFor
	}
	if len(in.Nodes) == 0 && started != nil && started.Nodes != "" {
		in.Nodes = strings.Split(started.Nodes, ",")
	}
	if in.State == backends.NodeFail || in.State == backends.BootFail {
		// name the node that failed (one extra call, only now)
		if nc, ok := e.Backend.(backends.NodeChecker); ok {
			if down, err := nc.DownNodes(ctx, in.Nodes); err == nil {
				in.DownNodes = down
			}
		}
	}
	d := Decide(in)
	st.Decision = d
	if d.CancelJob && d.Action != Wait {
		if err := e.Backend.Cancel(ctx, id); err != nil {
			return st, fmt.Errorf("cancel the requeued job %s: %w", id, err)
		}
	}
	switch d.Action {
	case Finish:
		o, err := e.finish(ctx, run, cur.N, in, d, sum)
		if err != nil {
			return st, err
		}
		st.Outcome = *o
		return st, nil
	case Retry:
		if err := e.retry(ctx, run, cur.N, in, d); err != nil {
			return st, err
		}
		tr.forget()
		if r, err := tr.record(run); err == nil {
			rec, st.Record = r, r
		}
	}
	st.Outcome = e.live(run, rec, st, sum, started)
	return st, nil
}

func attemptsIn(rec *schema.RunRecord, gen int) int {
	n := 0
	for _, a := range rec.Attempts {
		if a.Generation == gen {
			n++
		}
	}
	return n
}

// ensureSubmitted submits the first attempt, or recovers one whose job id
// was never recorded.
func (e *Engine) ensureSubmitted(ctx context.Context, run rundir.Run) error {
	lock, err := run.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	rec, err := run.Load()
	if err != nil {
		return err
	}
	if cur := rec.Current(); cur == nil {
		_, err = e.Submitter.Submit(ctx, run, rec, schema.Attempt{Reason: "first attempt", Generation: 1})
	} else if cur.JobID == "" {
		_, err = e.Submitter.Recover(ctx, run, rec)
	}
	return err
}

// endAttempt records how an attempt ended.
func endAttempt(a *schema.Attempt, in Input, d Decision, now time.Time) {
	t := now.UTC()
	a.EndedAt = &t
	a.State = string(in.State)
	if in.Missing {
		a.State = "VANISHED"
	}
	a.ExitCode = d.ExitCode
	a.Nodes = in.Nodes
	a.Decision = d.Action.String() + ": " + d.Reason
}

func (e *Engine) finish(ctx context.Context, run rundir.Run, n int, in Input, d Decision, sum rundir.Summary) (*schema.Outcome, error) {
	lock, err := run.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if o, ok, err := run.Outcome(); err != nil || ok {
		return o, err // decided by another process meanwhile
	}
	rec, err := run.Load()
	if err != nil {
		return nil, err
	}
	cur := rec.Current()
	if cur == nil || cur.N != n {
		return nil, fmt.Errorf("run %s changed while deciding; look again", run.ID)
	}
	endAttempt(cur, in, d, e.Now())
	now := e.Now().UTC()
	o := e.outcomeBase(run, rec, sum)
	o.Outcome, o.Final, o.Proceed, o.Reason = d.Outcome, true, schema.Proceeds(d.Outcome), d.Reason
	o.ExitCode, o.Signal = d.ExitCode, d.Signal
	o.SchedulerState = cur.State
	o.Nodes = in.Nodes
	o.DecidedAt, o.DecidedBy = &now, e.Actor
	if err := rundir.WriteJSON(run.OutcomeFile(), o); err != nil {
		return nil, err
	}
	if err := run.Save(rec); err != nil {
		e.Log.Warn("outcome written but run.json not updated", "run", run.ID, "err", err)
	}
	if err := e.Store.ClearActive(run.ID); err != nil {
		e.Log.Warn("cannot clear the active mark", "run", run.ID, "err", err)
	}
	e.Log.Info("run decided", "run", run.ID, "outcome", o.Outcome, "reason", o.Reason)
	return &o, nil
}

// ClearDecided removes the active mark of a run that has an outcome. The
// mark is cleared under the run lock after checking the outcome again, so
// a new attempt started meanwhile (a key reused after a failure) keeps it.
func (e *Engine) ClearDecided(ctx context.Context, run rundir.Run) error {
	lock, err := run.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if _, ok, err := run.Outcome(); err != nil || !ok {
		return err
	}
	return e.Store.ClearActive(run.ID)
}

func (e *Engine) retry(ctx context.Context, run rundir.Run, n int, in Input, d Decision) error {
	lock, err := run.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if _, ok, err := run.Outcome(); err != nil || ok {
		return err
	}
	rec, err := run.Load()
	if err != nil {
		return err
	}
	cur := rec.Current()
	if cur == nil || cur.N != n {
		return nil // another process already started the next attempt
	}
	endAttempt(cur, in, d, e.Now())
	next := schema.Attempt{Reason: d.Reason, Generation: cur.Generation, ResumeFrom: d.ResumeFrom}
	if e.Site.Retry.ExcludeFailedNodes {
		next.Exclude = append(slices.Clone(cur.Exclude), d.FailedNodes...)
		slices.Sort(next.Exclude)
		next.Exclude = slices.Compact(next.Exclude)
	}
	e.Log.Info("retrying", "run", run.ID, "attempt", n+1, "reason", d.Reason)
	if _, err := e.Submitter.Submit(ctx, run, rec, next); err != nil {
		if errors.Is(err, backends.ErrUnavailable) {
			return nil // recorded as a marker; the next step recovers it
		}
		// The retry cannot be submitted: the run fails with the reason.
		fd := d
		fd.Action, fd.Outcome = Finish, schema.OutcomeFailed
		fd.Reason = d.Reason + "; but the retry was refused: " + err.Error()
		lock.Unlock()
		_, ferr := e.finish(ctx, run, n, in, fd, rundir.Summary{})
		return ferr
	}
	return nil
}

// outcomeBase fills the fields every outcome line has.
func (e *Engine) outcomeBase(run rundir.Run, rec *schema.RunRecord, sum rundir.Summary) schema.Outcome {
	o := schema.Outcome{
		V: schema.OutcomeVersion, RunID: rec.RunID, Site: rec.Site, Backend: rec.Backend,
		Attempts: len(rec.Attempts), RunDir: run.Dir, Key: rec.Key,
		Fraction: sum.Fraction, Message: sum.Message, Results: sum.Results,
	}
	if cur := rec.Current(); cur != nil {
		o.JobID = cur.JobID
	}
	return o
}

// live describes a run that is not finished.
func (e *Engine) live(run rundir.Run, rec *schema.RunRecord, st Status, sum rundir.Summary, started *schema.Started) schema.Outcome {
	o := e.outcomeBase(run, rec, sum)
	o.Outcome = "pending"
	o.Reason = st.Decision.Reason
	if st.Job != nil {
		o.SchedulerState = string(st.Job.State)
		if st.Job.State.Started() {
			o.Outcome = "running"
		}
		if st.Job.State == backends.Pending && st.Job.Reason != "" {
			o.Reason = "pending: " + st.Job.Reason
		}
		o.Nodes = st.Job.Nodes
	}
	if started != nil && o.Outcome == "pending" {
		// the wrapper has started, whatever the cached scheduler answer says
		o.Outcome, o.Reason = "running", "job is running"
	}
	if st.PollErr != nil {
		o.Reason = "scheduler unreachable, waiting: " + st.PollErr.Error()
	}
	st.Record, st.Started, st.Summary = rec, started, sum
	if _, detail := Stuck(e.Now(), st, e.Site); detail != "" {
		o.Stuck = detail
	}
	return o
}
