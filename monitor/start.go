package monitor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// ErrKeyConflict: an idempotency key names a run made from another spec.
var ErrKeyConflict = errors.New("idempotency key conflict")

// StartRequest is what `tether run` and `tether submit` ask for.
type StartRequest struct {
	Task     *schema.Task
	TaskFile string // absolute path, for the record
	SiteFile string
	Key      string // idempotency key, "" for none
	SpecHash string // identity of the spec under the key
	// Env is the submitter's environment as the site's policy lets it
	// through (launcher.JobEnv), EnvHash its identity (launcher.EnvHash);
	// EnvDiff names the variables in which two such environments differ.
	Env     map[string]string
	EnvHash string
	EnvDiff func(a, b map[string]string) []string
}

// Start creates the run for a request, or finds the key's run, and makes
// sure it has a live attempt. It returns a finished outcome to replay
// instead when the key's run already ended in a way that may proceed. It
// never submits while a cancel is requested, and never a second job for
// a key whose current attempt is not decided.
func (e *Engine) Start(ctx context.Context, req StartRequest) (rundir.Run, *schema.Outcome, error) {
	if req.Key != "" {
		lock, err := e.Store.KeyLock(ctx, req.Key)
		if err != nil {
			return rundir.Run{}, nil, err
		}
		defer lock.Unlock()
		if id, ok, err := e.Store.LookupKey(req.Key); err != nil {
			return rundir.Run{}, nil, err
		} else if ok {
			run := e.Store.Run(id)
			rec, err := run.Load()
			if err == nil {
				return e.reuse(ctx, run, rec, req)
			}
			if !errors.Is(err, rundir.ErrNoRun) {
				return rundir.Run{}, nil, err
			}
			// The run directory was removed: the key is free again.
		}
	}
	if req.Task.Array.Enabled() {
		run, err := e.startArray(ctx, req)
		if err != nil && errors.Is(err, backends.ErrRejected) && run.ID != "" {
			if rec, lerr := run.Load(); lerr == nil && rec.Array != nil && rec.Array.Chunks[0].JobID == "" {
				// refused, nothing ran: the key stays free
				e.removeArray(run, rec)
				if req.Key != "" {
					e.Store.UnbindKey(req.Key)
				}
			}
		}
		if err != nil {
			return run, nil, fmt.Errorf("submit: %w", err)
		}
		return run, nil, nil
	}
	rec := e.newRecord(req)
	run, err := e.Store.CreateRun(rec)
	if err != nil {
		return rundir.Run{}, nil, err
	}
	// active from the start: a run whose creator dies before or during
	// the first submit is carried on by the monitor
	if err := e.Store.SetActive(run.ID, "", e.Site.Name); err != nil {
		return rundir.Run{}, nil, err
	}
	if req.Key != "" {
		if err := e.Store.BindKey(req.Key, rec.RunID); err != nil {
			return rundir.Run{}, nil, err
		}
	}
	lock, err := run.Lock(ctx)
	if err != nil {
		return rundir.Run{}, nil, err
	}
	defer lock.Unlock()
	if rec, err = run.Load(); err != nil { // a cancel may have come first
		return rundir.Run{}, nil, err
	}
	if rec.CancelRequested != nil || len(rec.Attempts) > 0 {
		// cancelled already (the next look decides it), or a monitor
		// found the new run and submitted it first
		return run, nil, nil
	}
	if _, err := e.Submitter.Submit(ctx, run, rec, schema.Attempt{Reason: "first attempt", Generation: 1}); err != nil {
		if errors.Is(err, backends.ErrRejected) {
			// Refused, nothing ran: remove the run so the key stays free.
			e.Store.ClearActive(run.ID)
			e.Store.RemoveRun(run)
			if req.Key != "" {
				e.Store.UnbindKey(req.Key)
			}
		}
		return run, nil, fmt.Errorf("submit: %w", err)
	}
	return run, nil, nil
}

// reuse applies the idempotency rules to a key's existing run (the key
// lock is held).
func (e *Engine) reuse(ctx context.Context, run rundir.Run, rec *schema.RunRecord, req StartRequest) (rundir.Run, *schema.Outcome, error) {
	if rec.SpecHash != req.SpecHash {
		return rundir.Run{}, nil, fmt.Errorf("%w: key %q belongs to run %s, which was made from a different spec (task file, --set or site changed); use another --key",
			ErrKeyConflict, req.Key, rec.RunID)
	}
	lock, err := run.Lock(ctx)
	if err != nil {
		return rundir.Run{}, nil, err
	}
	defer lock.Unlock()
	out, done, err := run.Outcome()
	if err != nil {
		return rundir.Run{}, nil, err
	}
	if !done {
		return run, nil, nil // reattach: the acting looks carry it on
	}
	// A finished run is replayed or started again only for the same
	// work: the same key with another environment is another piece of
	// work (typically mapped tasks without a map index in the key), and
	// says so instead of replaying silently.
	if rec.EnvHash != "" && req.EnvHash != "" && rec.EnvHash != req.EnvHash {
		// Not a silent replay: the same key with another environment is
		// another piece of work (typically mapped tasks without a map
		// index in the key).
		var names []string
		if req.EnvDiff != nil {
			names = req.EnvDiff(rec.Env, req.Env)
		}
		return rundir.Run{}, nil, fmt.Errorf("%w: key %q belongs to run %s, whose job got another environment (differs in %s); "+
			"give every piece of work its own key, e.g. for mapped Airflow tasks --key \"{{ dag.dag_id }}/{{ run_id }}/{{ ti.task_id }}/{{ ti.map_index }}\"",
			ErrKeyConflict, req.Key, rec.RunID, namesOr(names))
	}

	if out.Proceed {
		return run, out, nil
	}
	if rec.Task.Array.Enabled() {
		return run, nil, e.rerunArray(ctx, run, rec, out, req.Key)
	}
	if rec, err = run.Load(); err != nil {
		return rundir.Run{}, nil, err
	}
	// Finished without proceeding: a new attempt, as a new generation.
	// Its attempt is recorded before the outcome is archived, so a crash
	// in between leaves the old decision in place (and the next rerun
	// carries on with the recorded attempt) instead of an undecided run
	// that would be decided a second time.
	if rerunAttempt(rec, out, fmt.Sprintf("run again with key %q after outcome %s", req.Key, out.Outcome), e.Now()) {
		if err := run.Save(rec); err != nil {
			return rundir.Run{}, nil, err
		}
	}
	// active before the old outcome goes: the monitor carries the new
	// attempt on if this process dies now
	if err := e.Store.SetActive(run.ID, "", e.Site.Name); err != nil {
		return rundir.Run{}, nil, err
	}
	n := max(out.Attempts, 1)
	archived, err := run.ArchiveOutcome(n)
	if err != nil {
		return rundir.Run{}, nil, err
	}
	if _, err := e.Submitter.Recover(ctx, run, rec, true); err != nil {
		if errors.Is(err, backends.ErrRejected) {
			run.RestoreOutcome(archived)
			e.Store.ClearActive(run.ID)
		}
		return run, nil, fmt.Errorf("submit: %w", err)
	}
	return run, nil, nil
}

func namesOr(names []string) string {
	if len(names) == 0 {
		return "variables tether cannot name"
	}
	if len(names) > 10 {
		names = append(names[:10:10], "...")
	}
	return strings.Join(names, ", ")
}

// Cancel records a cancel request, tells the scheduler at once when the
// job is known, and looks at the run (acting). The request is never lost:
// it is in run.json before anything else happens, every acting look
// re-checks it before it submits, and a cancel the scheduler did not take
// is sent again by the next acting look (Status.ActErr says so).
func (e *Engine) Cancel(ctx context.Context, run rundir.Run) (Status, error) {
	o, cerr, err := e.requestCancel(ctx, run)
	if err != nil || o != nil {
		if o != nil {
			return Status{Outcome: *o}, nil
		}
		return Status{}, err
	}
	st, err := e.Step(ctx, run, 0, NewTracker(run))
	if err != nil {
		return st, err
	}
	if st.ActErr == nil && cerr != nil && !st.Outcome.Final {
		st.ActErr = cerr
	}
	return st, nil
}

// requestCancel records the cancel request under the run lock and tells
// the scheduler when the job is known. It returns the outcome of a run
// that is already decided, and cerr when the scheduler did not take the
// cancel.
func (e *Engine) requestCancel(ctx context.Context, run rundir.Run) (o *schema.Outcome, cerr, err error) {
	lock, err := run.Lock(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer lock.Unlock()
	if o, ok, err := run.Outcome(); err != nil || ok {
		return o, nil, err
	}
	rec, err := run.Load()
	if err != nil {
		return nil, nil, err
	}
	if rec.CancelRequested == nil {
		now := e.Now().UTC()
		rec.CancelRequested = &now
		if err := run.Save(rec); err != nil {
			return nil, nil, err
		}
	}
	cur := rec.Current()
	if cur == nil || cur.JobID == "" || cur.CancelSentAt != nil {
		return nil, nil, nil
	}
	// not taken (or not recorded): the next acting look sends it again
	return nil, e.sendCancel(ctx, run, rec), nil
}

// rerunAttempt adds the attempt that starts a decided run again, as a new
// generation not sent yet, unless the run has it already (an earlier
// rerun died before archiving the outcome). It reports whether it added.
func rerunAttempt(rec *schema.RunRecord, out *schema.Outcome, reason string, now time.Time) bool {
	cur := rec.Current()
	if cur != nil && out.Attempts < len(rec.Attempts) {
		return false
	}
	gen := 1
	if cur != nil {
		gen = cur.Generation + 1
	}
	rec.CancelRequested = nil
	rec.Attempts = append(rec.Attempts, schema.Attempt{
		N: len(rec.Attempts) + 1, SubmittedAt: now.UTC(), Generation: gen, Unsent: true, Reason: reason,
	})
	return true
}

// newRecord is the first run.json of a request's new run.
func (e *Engine) newRecord(req StartRequest) *schema.RunRecord {
	return &schema.RunRecord{
		RunID: rundir.NewRunID(req.Task.Name, e.Now()), Key: req.Key, SpecHash: req.SpecHash,
		Site: e.Site.Name, SiteFile: req.SiteFile, Backend: e.Site.Backend,
		TaskFile: req.TaskFile, Task: *req.Task, CreatedAt: e.Now().UTC(),
		Env: req.Env, EnvHash: req.EnvHash,
	}
}
