package launcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Submitter writes an attempt's files, submits it and records it.
type Submitter struct {
	Store      *rundir.Store
	Site       *schema.Site
	Backend    backends.Backend
	TetherPath string
	Now        func() time.Time
	// Limits places each request in a partition that can run it, or
	// refuses it before it reaches the scheduler (nil: no check).
	Limits *Limits
	// BadNodes, when set, names the nodes the site's bad-node list keeps
	// new submissions away from.
	BadNodes interface{ Excluded() ([]string, error) }
	// Pace spaces the site's submits ([submit] max_per_second; nil: none).
	Pace *Pace
	// LimitWait is how long a submit the scheduler turns away for a limit
	// on submitted jobs is waited out and sent again (0: not at all, the
	// error is returned and the attempt sent again by a later look).
	LimitWait time.Duration
	// LimitBackoff is the first wait after a submit-limit refusal (0: 2 s).
	LimitBackoff time.Duration
	// MaybeLimitWait bounds the wait for a refusal that may be a submit
	// limit or a size/time limit (backends.ErrMaybeSubmitLimit; 0: 5 min).
	MaybeLimitWait time.Duration
	// Log says when a submit limit makes a submit wait (nil: silent).
	Log *slog.Logger
}

// limitBackoff is the first wait after a submit-limit refusal (then twice
// as long each time, up to limitBackoffMax).
const (
	limitBackoff    = 2 * time.Second
	limitBackoffMax = time.Minute
)

func (s *Submitter) maybeLimitWait() time.Duration {
	if s.MaybeLimitWait > 0 {
		return s.MaybeLimitWait
	}
	return 5 * time.Minute
}

// send submits a request at its paced slot, and waits out the
// scheduler's limit on submitted jobs (while LimitWait and ctx allow):
// such a refusal created no job, and the same request is taken once some
// of the user's jobs have ended.
func (s *Submitter) send(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	return s.sendWith(ctx, req, s.Backend.Submit)
}

// sendWith is send with another submit call (an array's).
func (s *Submitter) sendWith(ctx context.Context, req backends.JobRequest, submit func(context.Context, backends.JobRequest) (backends.JobID, error)) (backends.JobID, error) {
	wait, waited := limitBackoff, time.Duration(0)
	if s.LimitBackoff > 0 {
		wait = s.LimitBackoff
	}
	for {
		if err := s.Pace.Wait(ctx); err != nil {
			return "", fmt.Errorf("%w: %w: waiting for the site's submit pace: %w", backends.ErrNotSent, backends.ErrUnavailable, err)
		}
		id, err := submit(ctx, req)
		if errors.Is(err, backends.ErrMaybeSubmitLimit) && waited >= s.maybeLimitWait() {
			// it did not clear: a size or time limit, which never does
			return "", fmt.Errorf("%w: still refused after %s of waiting: %w", backends.ErrRejected, waited, err)
		}
		if !errors.Is(err, backends.ErrSubmitLimit) || waited+wait > s.LimitWait {
			return id, err
		}
		if s.Log != nil {
			s.Log.Warn("the scheduler's limit on submitted jobs is reached: waiting before sending the job again", "run", req.RunID, "wait", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", err
		case <-t.C:
		}
		waited += wait
		wait = min(2*wait, limitBackoffMax)
	}
}

// Submit adds an attempt to rec and submits it; the caller holds the run
// lock. The attempt is recorded before the backend call, so a crash in
// between leaves a marker that Recover resolves instead of submitting twice.
// A rejected submit removes the attempt again.
// next supplies Reason, Generation, ResumeFrom, Exclude and MemoryMiB.
func (s *Submitter) Submit(ctx context.Context, run rundir.Run, rec *schema.RunRecord, next schema.Attempt) (*schema.Attempt, error) {
	a := schema.Attempt{
		N:           len(rec.Attempts) + 1,
		SubmittedAt: s.Now().UTC(),
		Reason:      next.Reason,
		Generation:  next.Generation,
		ResumeFrom:  next.ResumeFrom,
		Exclude:     next.Exclude,
		MemoryMiB:   next.MemoryMiB,
	}
	rec.Attempts = append(rec.Attempts, a)
	return s.submitCurrent(ctx, run, rec)
}

// Recover finishes an attempt whose job id was never recorded (the
// submitter died): it looks the job up by tag where the backend can,
// and submits it otherwise.
// Find looks for the current attempt's job by its tag (backends that can)
// and records the job id when found. Callers hold the run lock.
func (s *Submitter) Find(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (backends.JobID, bool, error) {
	cur := rec.Current()
	if cur == nil {
		return "", false, nil
	}
	if cur.JobID != "" {
		return backends.JobID(cur.JobID), true, nil
	}
	f, ok := s.Backend.(backends.Finder)
	if !ok {
		return "", false, nil
	}
	id, found, err := f.FindByTag(ctx, Tag(run.ID, cur.N))
	if err != nil {
		return "", false, fmt.Errorf("look for the job of attempt %d: %w", cur.N, err)
	}
	if !found {
		return "", false, nil
	}
	cur.JobID, cur.Unsent = string(id), false
	if err := run.Save(rec); err != nil {
		return "", false, err
	}
	return id, true, s.Store.SetActive(run.ID, cur.JobID, s.Site.Name)
}

// Recover completes an attempt whose job id was never recorded (its
// submitter died, or the submit's answer was lost): it looks for the job
// by its tag, and submits the attempt again only when send is set (the
// caller knows the job never reached the scheduler, or the recovery
// window has passed without a sign of it). Callers hold the run lock.
func (s *Submitter) Recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord, send bool) (*schema.Attempt, error) {
	cur := rec.Current()
	if cur == nil || cur.JobID != "" {
		return cur, nil
	}
	if _, found, err := s.Find(ctx, run, rec); err != nil || found {
		return cur, err
	}
	if !send {
		return cur, nil
	}
	return s.submitCurrent(ctx, run, rec)
}

func (s *Submitter) submitCurrent(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (*schema.Attempt, error) {
	cur := rec.Current()
	cur.ExcludeBad = s.badNodes(cur.Exclude)
	plan, err := Build(run, &rec.Task, s.Site, AttemptSpec{N: cur.N, ResumeFrom: cur.ResumeFrom, Exclude: slices.Concat(cur.Exclude, cur.ExcludeBad), MemoryMiB: cur.MemoryMiB, WarnTimer: NeedsWarnTimer(ctx, s.Backend), Env: rec.Env, Element: rec.Element}, s.TetherPath)
	if err != nil {
		return nil, err
	}
	pl, err := s.Limits.Place(ctx, plan.Request)
	if err != nil {
		if errors.Is(err, backends.ErrRejected) {
			cur.Unsent = true // never sent: the caller decides
			if serr := run.Save(rec); serr != nil {
				return nil, errors.Join(err, serr)
			}
		}
		return nil, err
	}
	plan.Request.Partition = pl.Partition
	if err := run.MkAttemptDir(cur.N); err != nil {
		return nil, err
	}
	if plan.TaskScript != nil {
		if err := run.WriteScript(run.TaskScript(cur.N), plan.TaskScript); err != nil {
			return nil, err
		}
	}
	// the scheduler reads the scripts at submit: no fsync needed
	if err := run.WriteScript(run.Script(cur.N), plan.Script); err != nil {
		return nil, err
	}
	cur.Unsent = false
	if err := run.Save(rec); err != nil {
		return nil, err
	}
	// The run is active before its job can exist, so a crash anywhere
	// after the submit still leaves it in front of the monitors.
	if err := s.Store.SetActive(run.ID, "", s.Site.Name); err != nil {
		return nil, err
	}
	id, err := s.send(ctx, plan.Request)
	if errors.Is(err, backends.ErrRejected) && len(cur.ExcludeBad) > 0 {
		// the site's bad-node list may leave the job no node it can
		// run on: it is advice, so the job goes without it
		cur.ExcludeBad = nil
		plan.Request.Exclude = cur.Exclude
		if serr := run.Save(rec); serr != nil {
			return nil, serr
		}
		id, err = s.send(ctx, plan.Request)
	}
	if err != nil {
		if errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrNotSent) {
			// It never reached the scheduler (or was refused, which the
			// caller decides on): it may be sent again at once.
			cur.Unsent = true
			if serr := run.Save(rec); serr != nil {
				return nil, errors.Join(err, serr)
			}
		}
		// Anything else may have reached the scheduler: the attempt
		// stays without a job id, to be found by its tag or sent again
		// after the recovery window.
		return nil, err
	}
	cur.JobID = string(id)
	if err := run.Save(rec); err != nil {
		return nil, fmt.Errorf("job %s was submitted but could not be recorded: %w", id, err)
	}
	if err := s.Store.SetActive(run.ID, cur.JobID, s.Site.Name); err != nil {
		return nil, err
	}
	return cur, nil
}

// NeedsWarnTimer: the wrapper sends the warn signal itself unless the
// backend's scheduler delivers it to the batch script.
func NeedsWarnTimer(ctx context.Context, b backends.Backend) bool {
	wd, ok := b.(backends.WarnDeliverer)
	return !ok || !wd.DeliversWarnSignal(ctx)
}

// badNodes are the nodes of the site's bad-node list an attempt avoids
// beyond its own exclusions.
func (s *Submitter) badNodes(own []string) []string {
	if s.BadNodes == nil {
		return nil
	}
	bad, err := s.BadNodes.Excluded()
	if err != nil {
		return nil // advice only: a damaged list never stops a submit
	}
	return slices.DeleteFunc(bad, func(n string) bool { return slices.Contains(own, n) })
}
