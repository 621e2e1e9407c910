package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
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
}

// Submit adds an attempt to rec and submits it; the caller holds the run
// lock. The attempt is recorded before the backend call, so a crash in
// between leaves a marker that Recover resolves instead of submitting twice.
// A rejected submit removes the attempt again.
// next supplies Reason, Generation, ResumeFrom and Exclude.
func (s *Submitter) Submit(ctx context.Context, run rundir.Run, rec *schema.RunRecord, next schema.Attempt) (*schema.Attempt, error) {
	a := schema.Attempt{
		N:           len(rec.Attempts) + 1,
		SubmittedAt: s.Now().UTC(),
		Reason:      next.Reason,
		Generation:  next.Generation,
		ResumeFrom:  next.ResumeFrom,
		Exclude:     next.Exclude,
	}
	rec.Attempts = append(rec.Attempts, a)
	return s.submitCurrent(ctx, run, rec)
}

// Recover finishes an attempt whose job id was never recorded (the
// submitter died): it looks the job up by tag where the backend can,
// and submits it otherwise.
func (s *Submitter) Recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (*schema.Attempt, error) {
	cur := rec.Current()
	if cur == nil || cur.JobID != "" {
		return cur, nil
	}
	if f, ok := s.Backend.(backends.Finder); ok {
		id, found, err := f.FindByTag(ctx, Tag(run.ID, cur.N))
		if err != nil {
			return nil, fmt.Errorf("look for the job of attempt %d: %w", cur.N, err)
		}
		if found {
			cur.JobID = string(id)
			if err := run.Save(rec); err != nil {
				return nil, err
			}
			return cur, s.Store.SetActive(run.ID, cur.JobID, s.Site.Name)
		}
	}
	return s.submitCurrent(ctx, run, rec)
}

func (s *Submitter) submitCurrent(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (*schema.Attempt, error) {
	cur := rec.Current()
	warnTimer := true
	if wd, ok := s.Backend.(backends.WarnDeliverer); ok && wd.DeliversWarnSignal(ctx) {
		warnTimer = false
	}
	plan, err := Build(run, &rec.Task, s.Site, AttemptSpec{N: cur.N, ResumeFrom: cur.ResumeFrom, Exclude: cur.Exclude, WarnTimer: warnTimer}, s.TetherPath)
	if err != nil {
		return nil, err
	}
	dir := run.AttemptDir(cur.N)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", rundir.ErrStateDir, err)
	}
	if plan.TaskScript != nil {
		if err := rundir.WriteFileReplace(run.TaskScript(cur.N), plan.TaskScript, 0o755); err != nil {
			return nil, err
		}
	}
	// the scheduler reads the scripts at submit: no fsync needed
	if err := rundir.WriteFileReplace(run.Script(cur.N), plan.Script, 0o755); err != nil {
		return nil, err
	}
	if err := run.Save(rec); err != nil {
		return nil, err
	}
	id, err := s.Backend.Submit(ctx, plan.Request)
	if err != nil {
		if !errors.Is(err, backends.ErrUnavailable) {
			// Nothing was submitted: forget the attempt.
			rec.Attempts = rec.Attempts[:len(rec.Attempts)-1]
			if serr := run.Save(rec); serr != nil {
				return nil, errors.Join(err, serr)
			}
		}
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
