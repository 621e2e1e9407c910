package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/health"
	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Submitter starts attempts; launcher.Submitter implements it. Callers
// hold the run lock.
type Submitter interface {
	// Submit appends the attempt next and submits it.
	Submit(ctx context.Context, run rundir.Run, rec *schema.RunRecord, next schema.Attempt) (*schema.Attempt, error)
	// Recover looks for the current attempt's job by its tag and records
	// it; when none is found and send is set, it submits the attempt again.
	Recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord, send bool) (*schema.Attempt, error)
	// Find looks for the current attempt's job by its tag and records it.
	Find(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (backends.JobID, bool, error)
	// SubmitArray carries an array run's submission on: its elements'
	// runs, its scheduler arrays, the elements' job ids.
	SubmitArray(ctx context.Context, run rundir.Run, rec *schema.RunRecord) error
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
	// Called, when set, counts the engine's own scheduler calls by kind
	// ("cancel", "nodes"); the monitor's metrics set it.
	Called func(kind string)
	// BadNodes, when set, is the site's shared bad-node list: every node
	// an attempt failed on is counted there.
	BadNodes NodeRecorder
	// Watch, when set, is the inotify watcher Wait shares with every other
	// waiter of the process (tether watch); nil: one watcher per Wait.
	Watch *SharedWatch
}

// NodeRecorder counts nodes that failed attempts (health.List).
type NodeRecorder interface {
	Record(ctx context.Context, nodes []string) ([]string, error)
	Nodes() ([]health.Node, error)
}

// Tracker keeps what an engine learned about one run between steps: the
// status file is read incrementally and run.json only when it changes.
type Tracker struct {
	// mu: the monitor's cycle and its watch goroutine (refresh) share a
	// tracker; other users have one goroutine per tracker
	mu      sync.Mutex
	run     rundir.Run
	status  rundir.StatusReader
	rec     *schema.RunRecord
	recMod  time.Time
	recSize int64
	started *schema.Started
	// the exit file, read again only when it changed (every write renames
	// a new file in)
	exit   *schema.ExitFile
	exitN  int
	exitFi os.FileInfo
	// marks: directory marks stand in for the reads of unchanged files
	// (the monitor's trackers; see quiet.go)
	marks *quiet
}

// NewTracker starts tracking a run.
func NewTracker(run rundir.Run) *Tracker {
	return &Tracker{run: run, status: rundir.StatusReader{Path: run.Status()}}
}

// Summary is the latest status-file summary.
func (t *Tracker) Summary() rundir.Summary { return t.status.Summary }

// record returns run.json, reading it again only when it changed.
func (t *Tracker) record(run rundir.Run) (*schema.RunRecord, error) {
	if t.rec != nil && t.marks.runUnchanged() {
		return t.rec, nil
	}
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

func (t *Tracker) forget() {
	t.rec = nil
	t.marks.reset()
}

// exitFile reads an attempt's exit file (nil when absent), again only when
// it changed: a look at a live run costs one stat.
func (t *Tracker) exitFile(run rundir.Run, n int) (*schema.ExitFile, error) {
	fi, err := os.Stat(run.ExitCode(n))
	if err != nil {
		t.exit, t.exitFi = nil, nil
		return nil, nil
	}
	if t.exitFi != nil && t.exitN == n && os.SameFile(fi, t.exitFi) && fi.ModTime().Equal(t.exitFi.ModTime()) && fi.Size() == t.exitFi.Size() {
		return t.exit, nil
	}
	e, _, err := run.ExitFile(n)
	if err != nil {
		return nil, err
	}
	t.exit, t.exitN, t.exitFi = e, n, fi
	return e, nil
}

// startedFile reads an attempt's started file until it exists, then keeps it.
func (t *Tracker) startedFile(run rundir.Run, n int) *schema.Started {
	if t.started != nil && t.started.Attempt == n {
		return t.started
	}
	var s schema.Started
	if err := rundir.ReadJSON(run.Started(n), &s); err != nil {
		return nil
	}
	if s.Attempt == n {
		t.started = &s
	}
	return &s
}

// Status is one look at a run.
type Status struct {
	Outcome  schema.Outcome
	Decision Decision
	Job      *backends.JobStatus // nil when the scheduler has not reported the job
	Deadline time.Time
	// PollErr is a scheduler query failure; the run is not decided on it.
	PollErr error
	// ActErr is a failed action (a cancel or a submit the scheduler did
	// not take); the next acting look tries again.
	ActErr error
	// What the look saw, for metrics and stuck detection (live runs).
	Record     *schema.RunRecord
	Started    *schema.Started
	Summary    rundir.Summary
	Missing    bool
	MissingFor time.Duration
}

// A look at a run has three steps with small types between them:
//
//	observe: read the run's files and the scheduler snapshot into an Input
//	         (nothing is written);
//	Decide:  the pure decision table (decide.go);
//	act:     carry the decision out under the run lock (finish, retry,
//	         submit, recover, cancel), re-checking the run first.
//
// Look stops after Decide (tether status); Step and StepWith act (tether
// run, wait, step, cancel and the monitor).

// Look observes and decides a run without acting: nothing of the run is
// written (the shared poll cache may be refreshed). A run that has ended
// but is not decided yet is shown live, with the decision that an acting
// look would take in its reason.
func (e *Engine) Look(ctx context.Context, run rundir.Run, maxAge time.Duration, tr *Tracker) (Status, error) {
	return e.step(ctx, run, nil, nil, maxAge, tr, false)
}

// Step looks at a run once and acts: it reads the run directory, asks the
// shared poller (accepting an answer up to maxAge old), decides and
// carries the decision out. A run whose outcome is already written is
// returned as it is.
func (e *Engine) Step(ctx context.Context, run rundir.Run, maxAge time.Duration, tr *Tracker) (Status, error) {
	return e.step(ctx, run, nil, nil, maxAge, tr, true)
}

// StepWith is Step with a snapshot the caller already has: the monitor
// polls once for every run of a site, then steps each run.
func (e *Engine) StepWith(ctx context.Context, run rundir.Run, snap *Snapshot, perr error, tr *Tracker) (Status, error) {
	return e.step(ctx, run, snap, perr, 0, tr, true)
}

// LookWith is Look with a snapshot the caller already has (tether list
// polls once for every active run of a site).
func (e *Engine) LookWith(ctx context.Context, run rundir.Run, snap *Snapshot, perr error, tr *Tracker) (Status, error) {
	return e.step(ctx, run, snap, perr, 0, tr, false)
}

// Refresh re-reads run.json if it changed and returns it.
func (t *Tracker) Refresh(run rundir.Run) (*schema.RunRecord, error) { return t.record(run) }

func (e *Engine) step(ctx context.Context, run rundir.Run, snap *Snapshot, perr error, maxAge time.Duration, tr *Tracker, act bool) (Status, error) {
	tr.checkRun(run, true)
	if !tr.marks.runUnchanged() {
		if o, ok, err := run.Outcome(); err != nil {
			return Status{}, err
		} else if ok {
			return Status{Outcome: *o}, nil
		}
	}
	rec, err := tr.record(run)
	if err != nil {
		return Status{}, err
	}
	tr.commitRun()
	if rec.Task.Array.Enabled() {
		if snap != nil {
			maxAge = -1 // the monitor steps the elements itself, as runs of their own
		}
		return e.stepArray(ctx, run, rec, act, maxAge)
	}
	if cur := rec.Current(); rec.Element != nil && cur != nil && cur.InArray && cur.JobID == "" {
		// its array run sends it, and nothing else
		o := e.live(run, rec, Status{}, tr.Summary(), nil)
		o.Reason = "waiting for array run " + rec.Element.Array + " to be submitted"
		return Status{Outcome: o, Record: rec}, nil
	}
	if snap == nil {
		var s Snapshot
		if cur := rec.Current(); cur != nil && cur.JobID != "" && !e.endedByItself(run, cur.N, tr) {
			s, perr = e.Poller.Status(ctx, []backends.JobID{backends.JobID(cur.JobID)}, maxAge)
			if perr != nil && !errors.Is(perr, ErrQuery) {
				return Status{}, perr
			}
		} else {
			s = e.Poller.Cached() // nothing to ask the scheduler about
		}
		snap = &s
	}
	obs := e.observe(ctx, run, rec, snap, perr, tr)
	d := Decide(obs.in)
	st := obs.st
	st.Decision = d
	if act && (d.Action != Wait || d.CancelJob) {
		o, aerr := e.act(ctx, run, obs, d)
		if aerr != nil {
			if !retryable(aerr) {
				return st, aerr
			}
			e.Log.Warn("could not act on the run; trying again at the next look", "run", run.ID, "action", d.Action.String(), "err", aerr)
			st.ActErr = aerr
		}
		if o != nil {
			st.Outcome = *o
			return st, nil
		}
		tr.forget()
		if r, err := tr.record(run); err == nil {
			rec, st.Record = r, r
		}
	}
	st.Outcome = e.live(run, rec, st, st.Summary, st.Started)
	if !act && d.Action != Wait && d.Action != Submit && d.Action != Recover {
		st.Outcome.Reason = NotDecidedYet + " (tether run, wait, step or monitor decides): would " + d.Action.String() + ": " + d.Reason
	}
	return st, nil
}

// NotDecidedYet starts the reason of a look (not acting) at a run whose
// job ended but that nobody decided yet.
const NotDecidedYet = "ended, not decided yet"

// retryable reports whether a failed action is left for the next look
// rather than returned as the command's error: everything but an
// interrupted command. A failed action never decides the run (a scheduler
// or state-directory error during a retry is not a failure of the Task).
func retryable(err error) bool {
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// endedByItself: the attempt's exit file is conclusive, so the look needs
// no scheduler query (the cached snapshot is enough).
func (e *Engine) endedByItself(run rundir.Run, n int, tr *Tracker) bool {
	exit, err := tr.exitFile(run, n)
	return err == nil && e.decidesAlone(run, n, exit, tr.startedFile(run, n))
}

// decidesAlone: the exit file is conclusive and the job's stdout file is
// there. A site whose scheduler copies the output back only at the job's
// end (PBS stage-out) waits for the scheduler instead: the copy may have
// begun, so a file that exists may not be complete.
func (e *Engine) decidesAlone(run rundir.Run, n int, exit *schema.ExitFile, started *schema.Started) bool {
	if !Conclusive(exit, started) || e.Site.OutputAtEnd() {
		return false
	}
	_, err := os.Stat(run.Stdout(n))
	return err == nil
}

func (e *Engine) called(kind string) {
	if e.Called != nil {
		e.Called(kind)
	}
}

// observation is what observe read: the decision's input, and the
// status that shows it.
type observation struct {
	in  Input
	st  Status
	cur *schema.Attempt // nil without an attempt
	at  time.Time       // the scheduler answer the input is from
}

// observe builds the decision's Input from the run's files and the
// scheduler snapshot. It reads, and writes nothing.
func (e *Engine) observe(ctx context.Context, run rundir.Run, rec *schema.RunRecord, snap *Snapshot, perr error, tr *Tracker) observation {
	cur := rec.Current()
	in := Input{
		CancelRequested:  rec.CancelRequested != nil,
		Proceed:          rec.Task.Proceed,
		Retry:            rec.Task.Retry,
		Walltime:         rec.Task.Resources.Walltime.D(),
		Grace:            e.Site.Poll.VanishGrace.D(),
		EvidenceGrace:    e.Site.Poll.EvidenceGrace.D(),
		RecoverAfter:     e.Site.Poll.RecoverAfter.D(),
		SchedulerRequeue: e.Site.Retry.Requeue,
		PendingTimeout:   e.Site.Pending.Timeout.D(),
	}
	st := Status{PollErr: perr, Record: rec}
	obs := observation{cur: cur, at: snap.At}
	if cur == nil {
		in.NoAttempt = true
		obs.in, obs.st = in, st
		return obs
	}
	in.Attempts = attemptsIn(rec, cur.Generation)
	in.MemoryMiB = cur.MemoryMiB
	if in.MemoryMiB == 0 {
		in.MemoryMiB = rec.Task.Resources.Memory.MiB()
	}
	id := backends.JobID(cur.JobID)
	js, known := snap.Jobs[id]
	if cur.JobID == "" {
		known = false
		in.NoJob, in.Unsent = true, cur.Unsent
		in.SubmitAge = e.Now().Sub(cur.SubmittedAt)
	}
	// Scheduler state first, then the exit file, then the status file: a
	// Task writes its last checkpoint before it exits and the job ends, so
	// evidence read in this order is never older than the state it explains.
	exit, started, kept, err := tr.attemptFiles(run, cur.N, js.State, known)
	if err != nil {
		e.Log.Warn("damaged exit file", "run", run.ID, "err", err)
	}
	if known {
		in.State = js.State
	}
	in.Exit = exit
	tr.status.FromAttempt, tr.status.Since = rundir.EvidenceWindow(rec) // only the current generation's evidence
	if _, err := tr.updateStatus(quietLook(kept, &in)); err != nil {
		e.Log.Warn("cannot read the status file", "run", run.ID, "err", err)
	}
	sum := tr.status.Summary
	in.Exit, in.Started = exit, started != nil
	in.ExitConclusive = e.decidesAlone(run, cur.N, exit, started)
	in.Evidence = Weigh(sum, &rec.Task, rundir.GenerationStart(rec))
	st.Started, st.Summary = started, sum
	if known {
		j := js
		st.Job = &j
		in.State, in.Native, in.SchedExit, in.SchedSig, in.SchedNote, in.Nodes = js.State, js.Native, js.ExitCode, js.Signal, js.Reason, js.Nodes
		in.SchedLimit = js.LimitKill
		st.Deadline = js.Deadline
		if js.State == backends.Pending && !cur.SubmittedAt.IsZero() {
			in.PendingFor = max(snap.At.Sub(cur.SubmittedAt), 0)
		}
		if since, ok := snap.Ended[id]; ok && js.State.Terminal() {
			in.EndedFor = snap.At.Sub(since)
		}
	} else if since, gone := snap.Missing[id]; gone && cur.JobID != "" {
		// missing ages in scheduler time: an outage ages nothing
		in.Missing, in.MissingFor = true, max(snap.At.Sub(since), 0)
		st.Missing, st.MissingFor = true, in.MissingFor
	}
	if cur.CancelSentAt != nil {
		f := max(snap.At.Sub(*cur.CancelSentAt), 0)
		in.CancelSentFor = &f
	}
	if len(in.Nodes) == 0 && started != nil && started.Nodes != "" {
		in.Nodes = strings.Split(started.Nodes, ",")
	}
	if in.State == backends.NodeFail || in.State == backends.BootFail || in.State == backends.Requeued || (exit != nil && exit.Requeued) {
		// name the node that failed (one extra call, only now)
		if nc, ok := e.Backend.(backends.NodeChecker); ok && len(in.Nodes) > 0 {
			e.called("nodes")
			if down, err := nc.DownNodes(ctx, in.Nodes); err == nil {
				in.DownNodes = down
			}
		}
	}
	if in.State == backends.Failed && killedLikeOOM(exit, in.SchedExit, in.SchedSig) {
		// a step OOM-killed while the batch script lived on (one extra
		// call, only now)
		if oc, ok := e.Backend.(backends.StepOOMChecker); ok && cur.JobID != "" {
			e.called("usage")
			if steps, err := oc.StepOOM(ctx, id); err == nil {
				in.StepOOM = steps
			}
		}
	}
	if in.StepOOM == "" && (in.State == backends.Failed || in.Missing && exit != nil) && killedBySystem(exit) {
		// the batch system's own kill notice in the job's stderr: Slurm's
		// jobacct_gather memory kill (no OUT_OF_MEMORY state without
		// cgroups), a PBS MoM's mem kill when the server kept no history
		in.StepOOM = backends.MemoryKill(tailOf(run.Stderr(cur.N), 64<<10))
	}
	obs.in, obs.st = in, st
	return obs
}

// killedBySystem: the Task was killed by a signal (SIGKILL or SIGTERM, or
// their 128+n codes), or the job ended without an exit file.
func killedBySystem(exit *schema.ExitFile) bool {
	if exit != nil {
		return exit.Signal == 9 || exit.Signal == 15 || exit.ExitCode == 137 || exit.ExitCode == 143
	}
	return true
}

// tailOf reads the last n bytes of a file (nil when it cannot).
func tailOf(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
			return nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}

// killedLikeOOM: the Task's end looks like an out-of-memory kill — SIGKILL
// (9, exit 137) or srun's 125 for a step that ran out of memory.
func killedLikeOOM(exit *schema.ExitFile, schedExit *int, schedSig int) bool {
	if exit != nil {
		return exit.Signal == 9 || exit.ExitCode == 137 || exit.ExitCode == 125
	}
	return schedSig == 9 || schedExit != nil && (*schedExit == 137 || *schedExit == 125)
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

// sameAttempt reports whether the run's current attempt is still the one
// a decision was made about.
func sameAttempt(a, b *schema.Attempt) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.N == b.N && a.JobID == b.JobID
}

// act carries a decision out under the run lock. It re-reads the run
// first: a run decided or changed by another process meanwhile is left as
// it is, and a cancel requested since the look is decided again with it.
// It returns the outcome when the run is finished.
func (e *Engine) act(ctx context.Context, run rundir.Run, obs observation, d Decision) (*schema.Outcome, error) {
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
	if !sameAttempt(cur, obs.cur) {
		return nil, nil // another process moved the run on: look again
	}
	in := obs.in
	if rec.CancelRequested != nil && !in.CancelRequested {
		in.CancelRequested = true
		d = Decide(in)
	}
	if d.CancelJob && cur != nil && cur.JobID != "" {
		// Neither retry nor finish while the job may live on: on an
		// error the next look sends the cancel again.
		if err := e.sendCancel(ctx, run, rec); err != nil {
			return nil, err
		}
		e.Log.Info("cancelled the job", "run", run.ID, "job", cur.JobID, "why", d.Reason)
	}
	if (d.Action == Finish || d.Action == Retry) && cur != nil && cur.Usage == nil {
		// a decision from the exit file alone comes before the scheduler
		// has closed the job: no waiting for its accounting then
		cur.Usage = e.attemptUsage(ctx, rec, obs, !d.FromExitFile)
	}
	if (d.Action == Finish || d.Action == Retry) && len(d.FailedNodes) > 0 && e.BadNodes != nil {
		if listed, err := e.BadNodes.Record(ctx, d.FailedNodes); err != nil {
			e.Log.Warn("cannot update the site's bad-node list", "run", run.ID, "err", err)
		} else if len(listed) > 0 {
			e.Log.Warn("nodes put on the site's bad-node list: new submissions avoid them", "nodes", strings.Join(listed, ","),
				"failures", e.Site.BadNodes.After, "within", e.Site.BadNodes.Window(), "for", e.Site.BadNodes.Exclusion())
		}
	}
	switch d.Action {
	case Finish:
		return e.finish(run, rec, in, d, obs.st.Summary)
	case Retry:
		return e.retry(ctx, run, rec, in, d, obs.st.Summary)
	case Submit:
		_, err := e.Submitter.Submit(ctx, run, rec, schema.Attempt{Reason: "first attempt", Generation: 1})
		return e.refusedOr(run, rec, in, d, obs.st.Summary, err)
	case Recover:
		return e.recover(ctx, run, rec, in, obs.st.Summary)
	}
	return nil, nil
}

// recover handles an attempt without a job id: find the job by its tag;
// send it again only when it certainly never reached the scheduler or the
// recovery window has passed without a sign of it; with a cancel
// requested, never send anything.
func (e *Engine) recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord, in Input, sum rundir.Summary) (*schema.Outcome, error) {
	noSign := (in.Unsent || in.SubmitAge >= in.RecoverAfter) && !in.Started && in.Exit == nil
	if !in.CancelRequested && in.Exit == nil && !in.Started {
		_, err := e.Submitter.Recover(ctx, run, rec, noSign)
		return e.refusedOr(run, rec, in, Decision{Reason: "the job was sent again"}, sum, err)
	}
	id, found, err := e.Submitter.Find(ctx, run, rec)
	if err != nil {
		return nil, err
	}
	if found {
		if !in.CancelRequested {
			return nil, nil // recorded: the next look decides with the scheduler's word
		}
		e.Log.Info("found the job of a cancelled run", "run", run.ID, "job", id)
		return nil, e.sendCancel(ctx, run, rec)
	}
	// The scheduler answered and knows no job with this tag.
	gone := in.Exit != nil ||
		in.Started && in.Walltime > 0 && in.SubmitAge >= in.Walltime+in.RecoverAfter
	if gone {
		// It ran and is forgotten (purged, no accounting): decide as for
		// a vanished job, from the exit file or as lost.
		in.NoJob, in.Missing, in.MissingFor = false, true, in.Grace
		switch d := Decide(in); d.Action {
		case Finish:
			return e.finish(run, rec, in, d, sum)
		case Retry:
			return e.retry(ctx, run, rec, in, d, sum)
		}
		return nil, nil
	}
	if !in.CancelRequested || !noSign {
		return nil, nil // the job may still show up: look again later
	}
	d := Decision{Action: Finish, Outcome: schema.OutcomeCancelled, Cause: schema.CauseCancelled,
		Reason: "cancelled before the scheduler took a job"}
	return e.finish(run, rec, in, d, sum)
}

// sendCancel asks the scheduler to end the current attempt's job and
// records when it accepted (callers hold the run lock).
func (e *Engine) sendCancel(ctx context.Context, run rundir.Run, rec *schema.RunRecord) error {
	cur := rec.Current()
	e.called("cancel")
	if err := e.Backend.Cancel(ctx, backends.JobID(cur.JobID)); err != nil {
		return fmt.Errorf("cancel job %s: %w", cur.JobID, err)
	}
	t := e.Now().UTC()
	cur.CancelSentAt = &t
	return run.Save(rec)
}

// endAttempt records how an attempt ended.
func endAttempt(a *schema.Attempt, in Input, d Decision, now time.Time) {
	t := now.UTC()
	a.EndedAt = &t
	a.State = string(in.State)
	switch {
	case in.Missing:
		a.State = "VANISHED"
	case d.FromExitFile:
		a.State = "" // the scheduler had not reported the end yet
	}
	a.ExitCode = d.ExitCode
	a.Nodes = in.Nodes
	a.Decision = d.Action.String() + ": " + d.Reason
	a.Cause = d.Cause
}

// finish writes the outcome (callers hold the run lock and have checked
// that no outcome exists).
func (e *Engine) finish(run rundir.Run, rec *schema.RunRecord, in Input, d Decision, sum rundir.Summary) (*schema.Outcome, error) {
	cur := rec.Current()
	now := e.Now().UTC()
	o := e.outcomeBase(run, rec, sum)
	if cur != nil {
		endAttempt(cur, in, d, now)
		o.SchedulerState = cur.State
	}
	o.Outcome, o.Final, o.Proceed, o.Reason, o.Cause = d.Outcome, true, schema.Proceeds(d.Outcome), d.Reason, d.Cause
	o.ExitCode, o.Signal = d.ExitCode, d.Signal
	o.Nodes = in.Nodes
	o.DecidedAt, o.DecidedBy = &now, e.Actor
	if err := run.WriteOutcome(&o); err != nil {
		return nil, err
	}
	if err := run.Save(rec); err != nil {
		e.Log.Warn("outcome written but run.json not updated", "run", run.ID, "err", err)
	}
	if err := e.Store.ClearActive(run.ID); err != nil {
		e.Log.Warn("cannot clear the active mark", "run", run.ID, "err", err)
	}
	e.Log.Info("run decided", "run", run.ID, "outcome", o.Outcome, "cause", o.Cause, "reason", o.Reason)
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

// retry ends the current attempt and submits the next (callers hold the
// run lock). Only a definite refusal of the new job fails the run; any
// other submit error leaves the attempt without a job id for the next
// look to recover.
func (e *Engine) retry(ctx context.Context, run rundir.Run, rec *schema.RunRecord, in Input, d Decision, sum rundir.Summary) (*schema.Outcome, error) {
	cur := rec.Current()
	endAttempt(cur, in, d, e.Now())
	next := schema.Attempt{Reason: d.Reason, Generation: cur.Generation, ResumeFrom: d.ResumeFrom, MemoryMiB: cur.MemoryMiB}
	if d.MemoryMiB > 0 {
		next.MemoryMiB = d.MemoryMiB // more memory after an out-of-memory end
	}
	if e.Site.Retry.ExcludeFailedNodes {
		next.Exclude = append(slices.Clone(cur.Exclude), d.FailedNodes...)
		slices.Sort(next.Exclude)
		next.Exclude = slices.Compact(next.Exclude)
	}
	e.Log.Info("retrying", "run", run.ID, "attempt", cur.N+1, "cause", d.Cause, "reason", d.Reason)
	_, err := e.Submitter.Submit(ctx, run, rec, next)
	return e.refusedOr(run, rec, in, d, sum, err)
}

// refusedOr finishes the run failed when the scheduler definitely
// refused the job just sent (the request must change: retrying cannot
// help), and returns any other submit error as it is: such an attempt
// stays without a job id, to be found by its tag or sent again later.
func (e *Engine) refusedOr(run rundir.Run, rec *schema.RunRecord, in Input, d Decision, sum rundir.Summary, err error) (*schema.Outcome, error) {
	if err == nil || !errors.Is(err, backends.ErrRejected) {
		return nil, err
	}
	fd := d
	fd.Action, fd.Outcome, fd.Cause = Finish, schema.OutcomeFailed, schema.CauseRefused
	fd.Reason = "the scheduler refused the job: " + err.Error()
	if d.Reason != "" && d.Action == Retry {
		fd.Reason = d.Reason + "; but the retry was refused: " + err.Error()
	}
	// the refused attempt never ran: it has no scheduler state of its own
	rin := in
	rin.State, rin.Missing, rin.Nodes = "", false, nil
	return e.finish(run, rec, rin, fd, sum)
}

// outcomeBase fills the fields every outcome line has.
func (e *Engine) outcomeBase(run rundir.Run, rec *schema.RunRecord, sum rundir.Summary) schema.Outcome {
	o := schema.Outcome{
		V: schema.OutcomeVersion, RunID: rec.RunID, Site: rec.Site, Backend: rec.Backend,
		Attempts: len(rec.Attempts), RunDir: run.Dir, Key: rec.Key,
		Fraction: sum.Fraction, Message: sum.Message, Results: sum.Results, Truncated: sum.Truncated,
	}
	if cur := rec.Current(); cur != nil {
		o.JobID = cur.JobID
	}
	o.AttemptMemory = attemptMemory(rec)
	o.Usage = runUsage(rec)
	if el := rec.Element; el != nil {
		o.Array, o.Index = el.Array, &el.Index
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
		if es := st.Job.ExpectedStart; !es.IsZero() && !st.Job.State.Started() {
			t := es.UTC()
			o.ExpectedStart = &t
			if o.Reason == "" || o.Reason == st.Decision.Reason {
				o.Reason = "pending"
			}
			o.Reason += "; the scheduler expects it to start at " + t.Format(time.RFC3339)
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

// attemptMemory lists each attempt's memory request when a retry raised
// it (nil otherwise).
func attemptMemory(rec *schema.RunRecord) []string {
	raised := false
	for _, a := range rec.Attempts {
		raised = raised || a.MemoryMiB > 0
	}
	if !raised {
		return nil
	}
	out := make([]string, len(rec.Attempts))
	for i, a := range rec.Attempts {
		mib := a.MemoryMiB
		if mib == 0 {
			mib = rec.Task.Resources.Memory.MiB()
		}
		out[i] = units.HumanMemory(mib)
	}
	return out
}
