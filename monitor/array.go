package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// An array run's elements are runs of their own (schema.ElementRunID):
// each is decided by the decision table like a single Task, and retried
// as single jobs of its own. The array run submits the elements' first
// attempts as scheduler arrays (launcher.Submitter.SubmitArray) and is
// decided once every element is: by the counts and [proceed]
// min_succeeded.

// elementRun is element i's run.
func (e *Engine) elementRun(array string, i int) rundir.Run {
	return e.Store.Run(schema.ElementRunID(array, i))
}

// arraySubmitted reports whether every chunk is sent and recorded.
func arraySubmitted(rec *schema.RunRecord) bool {
	if rec.Array == nil {
		return false
	}
	for _, c := range rec.Array.Chunks {
		if c.JobID == "" || !c.Recorded {
			return false
		}
	}
	return true
}

// stepArray looks at an array run: it carries its submission on (act),
// reads every element and, once all are decided, decides the array.
func (e *Engine) stepArray(ctx context.Context, run rundir.Run, rec *schema.RunRecord, act bool, maxAge time.Duration) (Status, error) {
	st := Status{Record: rec}
	if act && (!arraySubmitted(rec) || rec.CancelRequested != nil) {
		if err := e.carryArray(ctx, run); err != nil {
			if !retryable(err) {
				return st, err
			}
			e.Log.Warn("could not carry the array's submission on; trying again at the next look", "run", run.ID, "err", err)
			st.ActErr = err
		}
		if r, err := run.Load(); err == nil {
			rec, st.Record = r, r
		}
	}
	o := e.arrayOutcome(run, rec)
	if act && arraySubmitted(rec) && unrecorded(o) {
		// an element of a sent array has no record (its write was lost):
		// write it again
		if err := e.rerecordArray(ctx, run); err != nil {
			st.ActErr = err
		} else if r, err := run.Load(); err == nil {
			rec, st.Record = r, r
			o = e.arrayOutcome(run, rec)
		}
	}
	if act && !o.Final && maxAge >= 0 {
		// tether step and the trigger act on the array: its elements too
		ended, perr, aerr := e.stepElements(ctx, run, o.Elements, nil, maxAge)
		st.PollErr = perr
		if st.ActErr == nil {
			st.ActErr = aerr
		}
		if ended {
			o = e.arrayOutcome(run, rec)
		}
	}
	if o.Final {
		if !act {
			o.Final, o.Reason = false, "every element is decided; the array is not decided yet (tether run, wait, step or monitor decides): "+o.Reason
			o.Outcome = "running"
		} else {
			done, err := e.finishArray(ctx, run, o)
			if err != nil {
				return st, err
			}
			o = *done
		}
	}
	st.Outcome = o
	return st, nil
}

// unrecorded reports whether an element has no record yet.
func unrecorded(o schema.Outcome) bool {
	for _, el := range o.Elements {
		if el.Reason == notCreated {
			return true
		}
	}
	return false
}

// notCreated is the reason of an element whose record is not written.
const notCreated = "not created yet"

// rerecordArray records every element's job id again.
func (e *Engine) rerecordArray(ctx context.Context, run rundir.Run) error {
	lock, err := run.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	rec, err := run.Load()
	if err != nil {
		return err
	}
	for k := range rec.Array.Chunks {
		rec.Array.Chunks[k].Recorded = false
	}
	if err := run.Save(rec); err != nil {
		return err
	}
	return e.Submitter.SubmitArray(ctx, run, rec)
}

// carryArray submits what is not submitted yet, or sends the array's
// cancel, under the array run's lock.
func (e *Engine) carryArray(ctx context.Context, run rundir.Run) error {
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
	if err := e.Submitter.SubmitArray(ctx, run, rec); err != nil {
		return err
	}
	if rec.CancelRequested != nil {
		return e.cancelElements(ctx, run, rec)
	}
	return nil
}

// cancelElements sends one cancel per scheduler array (every element it
// still runs ends with it) and one per element retried as a job of its
// own, and records the cancel in every element not decided. Callers hold
// the array run's lock.
func (e *Engine) cancelElements(ctx context.Context, run rundir.Run, rec *schema.RunRecord) error {
	now := e.Now().UTC()
	sent := map[int]*time.Time{}
	for k := range rec.Array.Chunks {
		c := &rec.Array.Chunks[k]
		if c.JobID == "" {
			continue
		}
		if c.CancelSentAt == nil {
			e.called("cancel")
			if err := e.Backend.Cancel(ctx, backends.JobID(c.JobID)); err != nil {
				return fmt.Errorf("cancel array %s: %w", c.JobID, err)
			}
			c.CancelSentAt = &now
			if err := run.Save(rec); err != nil {
				return err
			}
			e.Log.Info("cancelled the array", "run", run.ID, "job", c.JobID)
		}
		for i := c.First; i <= c.Last; i++ {
			sent[i] = c.CancelSentAt
		}
	}
	var errs []string
	for i := range rec.Array.Size {
		if err := e.cancelElement(ctx, e.elementRun(run.ID, i), sent[i]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cancel %d element(s): %s", len(errs), strings.Join(errs, "; "))
	}
	return nil
}

// cancelElement records the cancel in one element; its first attempt's
// job was cancelled with its array at arraySent.
func (e *Engine) cancelElement(ctx context.Context, erun rundir.Run, arraySent *time.Time) error {
	lock, err := erun.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if _, ok, err := erun.Outcome(); err != nil || ok {
		return err
	}
	erec, err := erun.Load()
	if err != nil {
		return err
	}
	changed := false
	if erec.CancelRequested == nil {
		now := e.Now().UTC()
		erec.CancelRequested, changed = &now, true
	}
	cur := erec.Current()
	switch {
	case cur == nil || cur.CancelSentAt != nil:
	case cur.InArray && arraySent != nil:
		cur.CancelSentAt, changed = arraySent, true
	case !cur.InArray && cur.JobID != "":
		// a retry runs as a job of its own
		return e.sendCancel(ctx, erun, erec)
	}
	if changed {
		return erun.Save(erec)
	}
	return nil
}

// arrayOutcome reads every element into the array's outcome: final once
// every element is.
func (e *Engine) arrayOutcome(run rundir.Run, rec *schema.RunRecord) schema.Outcome {
	o := schema.Outcome{V: schema.OutcomeVersion, RunID: rec.RunID, Site: rec.Site, Backend: rec.Backend,
		RunDir: run.Dir, Key: rec.Key, Counts: map[string]int{}}
	size := rec.Task.Array.Size()
	if rec.Array != nil {
		size = rec.Array.Size
		var ids []string
		for _, c := range rec.Array.Chunks {
			if c.JobID != "" {
				ids = append(ids, c.JobID)
			}
		}
		o.JobID = strings.Join(ids, ",")
	}
	o.Size = size
	min := rec.Task.Proceed.MinSucceededOr()
	o.MinSucceeded = &min
	o.Elements = make([]schema.ElementOutcome, 0, size)
	decided, good := 0, 0
	var usage schema.Usage
	views := make([]elementState, size)
	var wg sync.WaitGroup
	for w := range arrayStepWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < size; i += arrayStepWorkers {
				views[i] = e.elementView(e.elementRun(rec.RunID, i), i)
			}
		}()
	}
	wg.Wait()
	for i, el := range views {
		el.Params = rec.Task.Array.ElementParams(i)
		if el.Final {
			decided++
			if schema.Proceeds(el.Outcome) {
				good++
			}
		}
		o.Counts[el.Outcome]++
		o.Attempts += el.Attempts
		o.Elements = append(o.Elements, el.ElementOutcome)
		if el.usage != nil {
			usage.Add(*el.usage)
		}
	}
	if usage.Source != "" {
		o.Usage = &usage
	}
	frac := 0.0
	if size > 0 {
		frac = float64(good) / float64(size)
	}
	o.Succeeded = &frac
	o.Fraction = &frac
	words := countWords(o.Counts)
	switch {
	case rec.Array == nil || !arraySubmitted(rec) && decided < size:
		o.Outcome, o.Reason = "pending", "submitting the array: "+words
		if rec.CancelRequested != nil {
			o.Reason = "cancel requested: " + words
		}
	case decided < size:
		o.Outcome = "pending"
		if o.Counts["running"] > 0 || decided > 0 {
			o.Outcome = "running"
		}
		o.Reason = fmt.Sprintf("%d of %d elements decided: %s", decided, size, words)
	default:
		o.Final = true
		o.Proceed = frac >= min
		switch {
		case rec.CancelRequested != nil:
			o.Outcome, o.Cause = schema.OutcomeCancelled, schema.CauseCancelled
			o.Proceed = false
		case good == size && o.Counts[schema.OutcomeSucceeded] == size:
			o.Outcome, o.Cause = schema.OutcomeSucceeded, schema.CauseCompleted
		case o.Proceed:
			o.Outcome, o.Cause = schema.OutcomePartial, schema.CauseElements
		default:
			o.Outcome, o.Cause = schema.OutcomeFailed, schema.CauseElements
		}
		o.Reason = fmt.Sprintf("%d of %d elements succeeded or partial (%.3g, %s %.3g): %s", good, size, frac,
			map[bool]string{true: "at least", false: "below"}[frac >= min], min, words)
		if o.Outcome == schema.OutcomeCancelled {
			o.Reason = "cancelled by request: " + words
		}
	}
	return o
}

// countWords renders counts as "180 succeeded, 20 failed".
func countWords(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return c[keys[i]] > c[keys[j]] || c[keys[i]] == c[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", c[k], k)
	}
	return strings.Join(parts, ", ")
}

type elementState struct {
	schema.ElementOutcome
	usage *schema.Usage
}

// elementView reads one element: its outcome when decided, else whether
// its current attempt has started (no scheduler query).
func (e *Engine) elementView(erun rundir.Run, i int) elementState {
	el := elementState{ElementOutcome: schema.ElementOutcome{Index: i, RunID: erun.ID}}
	if o, ok, err := erun.Outcome(); err == nil && ok {
		el.Outcome, el.Final, el.Reason, el.Cause = o.Outcome, o.Final, o.Reason, o.Cause
		el.JobID, el.ExitCode, el.Attempts, el.Fraction, el.Results = o.JobID, o.ExitCode, o.Attempts, o.Fraction, o.Results
		el.usage = o.Usage
		return el
	}
	erec, err := erun.Load()
	if err != nil {
		el.Outcome, el.Reason = "pending", notCreated
		return el
	}
	el.Attempts = len(erec.Attempts)
	el.Outcome, el.Reason = "pending", "waiting for the scheduler"
	if cur := erec.Current(); cur != nil {
		el.JobID = cur.JobID
		if _, err := os.Stat(erun.Started(cur.N)); err == nil {
			el.Outcome, el.Reason = "running", "job is running"
		}
		if cur.JobID == "" {
			el.Reason = "not submitted yet"
		}
	}
	return el
}

// finishArray writes the array's outcome under its lock.
func (e *Engine) finishArray(ctx context.Context, run rundir.Run, o schema.Outcome) (*schema.Outcome, error) {
	lock, err := run.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if prev, ok, err := run.Outcome(); err != nil || ok {
		return prev, err
	}
	now := e.Now().UTC()
	o.DecidedAt, o.DecidedBy = &now, e.Actor
	if err := run.WriteOutcome(&o); err != nil {
		return nil, err
	}
	if err := e.Store.ClearActive(run.ID); err != nil {
		e.Log.Warn("cannot clear the active mark", "run", run.ID, "err", err)
	}
	e.Log.Info("array decided", "run", run.ID, "outcome", o.Outcome, "reason", o.Reason)
	return &o, nil
}

// startArray creates an array run and submits it (Start for array Tasks).
func (e *Engine) startArray(ctx context.Context, req StartRequest) (rundir.Run, error) {
	rec := e.newRecord(req)
	run, err := e.Store.CreateRun(rec)
	if err != nil {
		return rundir.Run{}, err
	}
	if err := e.Store.SetActive(run.ID, "", e.Site.Name); err != nil {
		return rundir.Run{}, err
	}
	if req.Key != "" {
		if err := e.Store.BindKey(req.Key, rec.RunID); err != nil {
			return rundir.Run{}, err
		}
	}
	return run, e.carryArray(ctx, run)
}

// removeArray removes an array run the scheduler refused, with its
// elements' runs (none of them ever had a job).
func (e *Engine) removeArray(run rundir.Run, rec *schema.RunRecord) {
	for i := range rec.Task.Array.Size() {
		erun := e.elementRun(rec.RunID, i)
		e.Store.ClearActive(erun.ID)
		e.Store.RemoveRun(erun)
	}
	e.Store.ClearActive(run.ID)
	e.Store.RemoveRun(run)
}

// arrayStepWorkers is how many elements waitArray steps at once.
const arrayStepWorkers = 8

// waitArray steps an array run and its live elements until the array is
// decided: ONE scheduler query (through the site's poller) per interval
// for every live element, whatever their number.
func (e *Engine) waitArray(ctx context.Context, run rundir.Run, update func(Status)) (*schema.Outcome, error) {
	minI, maxI := e.Site.Poll.MinInterval.D(), e.Site.Poll.MaxInterval.D()
	interval := minI
	trackers := map[int]*Tracker{}
	last := ""
	for {
		rec, err := run.Load()
		if err != nil {
			return nil, err
		}
		if o, ok, err := run.Outcome(); err != nil || ok {
			return o, err
		}
		st, err := e.stepArray(ctx, run, rec, true, -1) // the elements are stepped below
		if err != nil {
			return nil, err
		}
		if st.Outcome.Final {
			return &st.Outcome, nil
		}
		ended, perr, aerr := e.stepElements(ctx, run, st.Outcome.Elements, trackers, interval)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if perr != nil && !errors.Is(perr, ErrQuery) {
			return nil, perr
		}
		st.PollErr = perr
		if st.ActErr == nil {
			st.ActErr = aerr
		}
		st.Outcome.Message = countWords(st.Outcome.Counts)
		if update != nil {
			update(st)
		}
		if ended {
			interval = minI
			continue // decide the array at once when it can be
		}
		if words := st.Outcome.Message; words != last {
			last, interval = words, minI
		} else {
			interval = min(time.Duration(float64(interval)*1.5), maxI)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// rerunArray starts again, as a new generation, every element of a
// decided array run that did not proceed (the key's run ran again after
// a failure); the elements that proceeded keep their outcomes. Each
// element starts again before the array's outcome is archived, so a crash
// in between leaves the old decision, and the next rerun carries on.
// Callers hold the array run's lock.
func (e *Engine) rerunArray(ctx context.Context, run rundir.Run, rec *schema.RunRecord, out *schema.Outcome, key string) error {
	if err := e.Store.SetActive(run.ID, "", e.Site.Name); err != nil {
		return err
	}
	for i := range rec.Array.Size {
		erun := e.elementRun(run.ID, i)
		if err := e.rerunElement(ctx, erun, out, key); err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
	}
	rec.CancelRequested = nil
	if err := run.Save(rec); err != nil {
		return err
	}
	_, err := run.ArchiveOutcome(out.Attempts)
	return err
}

func (e *Engine) rerunElement(ctx context.Context, erun rundir.Run, arrayOut *schema.Outcome, key string) error {
	lock, err := erun.Lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	o, done, err := erun.Outcome()
	if err != nil || !done || o.Proceed {
		return err
	}
	erec, err := erun.Load()
	if err != nil {
		return err
	}
	if rerunAttempt(erec, o, fmt.Sprintf("array run again with key %q after the array's outcome %s", key, arrayOut.Outcome), e.Now()) {
		if err := erun.Save(erec); err != nil {
			return err
		}
	}
	if err := e.Store.SetActive(erun.ID, "", e.Site.Name); err != nil {
		return err
	}
	if _, err := erun.ArchiveOutcome(max(o.Attempts, 1)); err != nil {
		return err
	}
	_, err = e.Submitter.Recover(ctx, erun, erec, true)
	return err
}

// stepElements steps every live element of an array run (acting) with ONE
// scheduler query for all of them, 8 at a time; it reports whether one
// was decided. trackers keeps what was read of each element between calls
// (nil: read afresh).
func (e *Engine) stepElements(ctx context.Context, run rundir.Run, els []schema.ElementOutcome, trackers map[int]*Tracker, maxAge time.Duration) (ended bool, perr, aerr error) {
	var ids []backends.JobID
	var live []int
	for _, el := range els {
		if el.Final || el.JobID == "" {
			continue
		}
		live = append(live, el.Index)
		ids = append(ids, backends.JobID(el.JobID))
	}
	if len(ids) == 0 {
		return false, nil, nil
	}
	snap, perr := e.Poller.Status(ctx, ids, maxAge)
	if perr != nil && !errors.Is(perr, ErrQuery) {
		return false, perr, nil
	}
	if trackers == nil {
		trackers = map[int]*Tracker{}
	}
	for _, i := range live {
		if trackers[i] == nil {
			trackers[i] = NewTracker(e.elementRun(run.ID, i))
		}
	}
	// side by side: a decision may wait a few seconds for the
	// scheduler's accounting
	results := make([]Status, len(live))
	errs := make([]error, len(live))
	var wg sync.WaitGroup
	sem := make(chan struct{}, arrayStepWorkers)
	for k, i := range live {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[k], errs[k] = e.StepWith(ctx, e.elementRun(run.ID, i), &snap, perr, trackers[i])
		}()
	}
	wg.Wait()
	for k, i := range live {
		if errs[k] != nil {
			e.Log.Warn("could not look at an element", "run", run.ID, "element", i, "err", errs[k])
			continue
		}
		if results[k].Outcome.Final {
			ended = true
			delete(trackers, i)
		}
		if aerr == nil {
			aerr = results[k].ActErr
		}
	}
	return ended, perr, aerr
}
