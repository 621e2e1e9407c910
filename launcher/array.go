package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// An array run is submitted in three recorded steps, so a crash anywhere
// leaves a state the next look (any tether process, the monitor) carries
// on without submitting an element twice:
//
//  1. the array run's chunks are recorded (one per scheduler array) and
//     every element's run directory is made with its first attempt's
//     wrapper, but no run.json yet: nothing but the array run ever sends
//     an element's first attempt (in_array);
//  2. each chunk is sent as one scheduler array (recorded as sent
//     before the call; a chunk whose answer was lost is looked for by its
//     tag, like a single job);
//  3. each element's run.json is written with its first attempt's job id
//     and the element becomes active; from then on it is a run like any
//     other, and retries are single jobs of its own. A look that finds an
//     element of a sent array without its record writes it.

// ArrayDir is where an array run keeps its dispatch scripts.
func ArrayDir(run rundir.Run) string { return filepath.Join(run.Dir, "array") }

// chunkDir is one chunk's directory.
func chunkDir(run rundir.Run, k int) string { return filepath.Join(ArrayDir(run), strconv.Itoa(k)) }

// ElementRun is the run of an array run's element i.
func (s *Submitter) ElementRun(array string, i int) rundir.Run {
	return s.Store.Run(schema.ElementRunID(array, i))
}

// PlanArray records an array run's chunks (step 1's first half).
func PlanArray(rec *schema.RunRecord, site *schema.Site) {
	if rec.Array != nil {
		return
	}
	n := rec.Task.Array.Size()
	st := &schema.ArrayState{Size: n, MaxRunning: rec.Task.Array.MaxRunning}
	size := max(site.ArraySize(), 1)
	for first := 0; first < n; first += size {
		st.Chunks = append(st.Chunks, schema.ArrayChunk{First: first, Last: min(first+size, n) - 1, Unsent: true})
	}
	rec.Array = st
}

// SubmitArray carries an array run's submission as far as it can: it
// creates the elements' runs, sends every chunk not sent yet and records
// the elements' job ids. Callers hold the array run's lock. With a
// cancel requested nothing more is sent.
func (s *Submitter) SubmitArray(ctx context.Context, run rundir.Run, rec *schema.RunRecord) error {
	as, ok := s.Backend.(backends.ArraySubmitter)
	if !ok {
		return fmt.Errorf("%w: the %s backend cannot submit job arrays", backends.ErrRejected, s.Site.Backend)
	}
	if rec.Array == nil {
		PlanArray(rec, s.Site)
		if err := run.Save(rec); err != nil {
			return err
		}
	}
	var req *backends.JobRequest
	for k := range rec.Array.Chunks {
		c := &rec.Array.Chunks[k]
		if c.JobID == "" && rec.CancelRequested == nil {
			if req == nil {
				r, err := s.makeElements(ctx, run, rec)
				if err != nil {
					return err
				}
				req = r
			}
			if err := s.sendChunk(ctx, as, run, rec, k, *req); err != nil {
				return err
			}
		}
		if c.JobID != "" && !c.Recorded {
			if err := s.recordChunk(as, run, rec, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeElements creates every element's run that does not exist yet, with
// its first attempt's scripts, and returns the request the chunks are
// sent with (element 0's, placed in a partition).
func (s *Submitter) makeElements(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (*backends.JobRequest, error) {
	warnTimer := NeedsWarnTimer(ctx, s.Backend)
	reqs := make([]*backends.JobRequest, rec.Array.Size)
	err := parallel(rec.Array.Size, func(i int) error {
		erun := s.ElementRun(rec.RunID, i)
		erec := elementRecord(rec, i, s.Now())
		if _, err := os.Stat(erun.Script(1)); err == nil && i > 0 {
			return nil // made by an earlier look: only element 0's request is needed
		}
		erun, err := s.Store.PrepareRun(erun.ID)
		if err != nil {
			return err
		}
		plan, err := Build(erun, &erec.Task, s.Site, AttemptSpec{N: 1, WarnTimer: warnTimer, Env: rec.Env, Element: erec.Element}, s.TetherPath)
		if err != nil {
			return err
		}
		if plan.TaskScript != nil {
			if err := erun.WriteScript(erun.TaskScript(1), plan.TaskScript); err != nil {
				return err
			}
		}
		if err := erun.WriteScript(erun.Script(1), plan.Script); err != nil {
			return err
		}
		reqs[i] = &plan.Request
		return nil
	})
	if err != nil {
		return nil, err
	}
	first := reqs[0]
	pl, err := s.Limits.Place(ctx, *first)
	if err != nil {
		return nil, err
	}
	first.Partition = pl.Partition
	first.Exclude = s.badNodes(nil)
	return first, nil
}

// sendChunk sends chunk k as one scheduler array.
func (s *Submitter) sendChunk(ctx context.Context, as backends.ArraySubmitter, run rundir.Run, rec *schema.RunRecord, k int, base backends.JobRequest) error {
	c := &rec.Array.Chunks[k]
	if !c.Unsent {
		// sent before, and its answer lost: look for it by its tag
		if f, ok := s.Backend.(backends.Finder); ok {
			id, found, err := f.FindByTag(ctx, Tag(run.ID, k+1))
			if err != nil {
				return fmt.Errorf("look for the array of elements %d-%d: %w", c.First, c.Last, err)
			}
			if found {
				c.JobID = string(id)
				return run.Save(rec)
			}
		}
		if c.SubmittedAt != nil && s.Now().Sub(*c.SubmittedAt) < s.Site.Poll.RecoverAfter.D() {
			return nil // it may still show up
		}
	}
	dir := chunkDir(run, k)
	if err := os.MkdirAll(dir, run.Modes().Dir); err != nil {
		return fmt.Errorf("%w: %w", rundir.ErrStateDir, err)
	}
	req := base
	req.RunID, req.Attempt, req.Tag = run.ID, k+1, Tag(run.ID, k+1)
	req.Script = filepath.Join(dir, "job.sh")
	req.Dir = dir
	runs := filepath.Dir(run.Dir)
	if c.First == 0 {
		// the scheduler's index is the element's: it writes the
		// element's own files
		req.Stdout = filepath.Join(runs, run.ID+"."+backends.ArrayIndexToken, "attempts", "1", "stdout")
		req.Stderr = filepath.Join(runs, run.ID+"."+backends.ArrayIndexToken, "attempts", "1", "stderr")
	} else {
		// later chunks' indices start at 0 again: their files are links
		// to the elements' own
		for i := c.First; i <= c.Last; i++ {
			erun := s.ElementRun(run.ID, i)
			for _, f := range []struct{ link, target string }{{".stdout", erun.Stdout(1)}, {".stderr", erun.Stderr(1)}} {
				link := filepath.Join(dir, strconv.Itoa(i-c.First)+f.link)
				os.Remove(link)
				if err := os.Symlink(f.target, link); err != nil {
					return fmt.Errorf("%w: %w", rundir.ErrStateDir, err)
				}
			}
		}
		req.Stdout = filepath.Join(dir, backends.ArrayIndexToken+".stdout")
		req.Stderr = filepath.Join(dir, backends.ArrayIndexToken+".stderr")
	}
	if err := run.WriteScript(req.Script, []byte(dispatcher(run, c, as.ArrayIndexVar()))); err != nil {
		return err
	}
	now := s.Now().UTC()
	c.Unsent, c.SubmittedAt = false, &now
	if err := run.Save(rec); err != nil {
		return err
	}
	if err := s.Store.SetActive(run.ID, "", s.Site.Name); err != nil {
		return err
	}
	spec := backends.ArraySpec{Size: c.Last - c.First + 1, MaxRunning: rec.Array.MaxRunning}
	id, err := s.sendWith(ctx, req, func(ctx context.Context, r backends.JobRequest) (backends.JobID, error) {
		return as.SubmitArray(ctx, r, spec)
	})
	if err != nil {
		if errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrNotSent) {
			c.Unsent = true
			if serr := run.Save(rec); serr != nil {
				return errors.Join(err, serr)
			}
		}
		return err
	}
	c.JobID = string(id)
	if err := run.Save(rec); err != nil {
		return fmt.Errorf("array %s was submitted but could not be recorded: %w", id, err)
	}
	if s.Log != nil {
		s.Log.Debug("array submitted", "run", run.ID, "job", id, "elements", fmt.Sprintf("%d-%d", c.First, c.Last))
	}
	return nil
}

// recordChunk gives every element of chunk k its job id and makes it
// active.
func (s *Submitter) recordChunk(as backends.ArraySubmitter, run rundir.Run, rec *schema.RunRecord, k int) error {
	c := &rec.Array.Chunks[k]
	err := parallel(c.Last-c.First+1, func(j int) error {
		i := c.First + j
		erun := s.ElementRun(run.ID, i)
		erec, err := erun.Load()
		switch {
		case errors.Is(err, rundir.ErrNoRun):
			erec = elementRecord(rec, i, s.Now())
			erec.Attempts[0].JobID = string(as.ElementID(backends.JobID(c.JobID), j))
			if _, err := s.Store.CreateRun(erec); err != nil {
				return err
			}
		case err != nil:
			return err
		case erec.Attempts[0].JobID == "":
			erec.Attempts[0].JobID = string(as.ElementID(backends.JobID(c.JobID), j))
			if err := erun.Save(erec); err != nil {
				return err
			}
		}
		if _, done, _ := erun.Outcome(); !done && len(erec.Attempts) == 1 {
			return s.Store.SetActive(erun.ID, erec.Attempts[0].JobID, s.Site.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Recorded = true
	return run.Save(rec)
}

// dispatcher is a chunk's batch script: it runs the element's own
// wrapper (attempt 1 of the element's run) for the scheduler's index.
func dispatcher(run rundir.Run, c *schema.ArrayChunk, indexVar string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# tether array dispatcher v%d for run %s, elements %d-%d. Generated; do not edit.\n", WrapperVersion, run.ID, c.First, c.Last)
	fmt.Fprintf(&b, "__tether_i=${%s:-}\n", indexVar)
	fmt.Fprintf(&b, "case $__tether_i in ''|*[!0-9]*) echo \"tether: %s is not set: this script runs as an element of a job array\" >&2; exit 97;; esac\n", indexVar)
	prefix := filepath.Join(filepath.Dir(run.Dir), run.ID) + "."
	fmt.Fprintf(&b, "exec /bin/bash %s\"$((%d + 10#$__tether_i))\"%s\n", Quote(prefix), c.First, Quote("/attempts/1/job.sh"))
	return b.String()
}

// elementWorkers is how many elements' files are written at once.
const elementWorkers = 8

// parallel runs f(0..n-1) on elementWorkers goroutines and returns the
// first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, elementWorkers)
	next := make(chan int)
	for w := range elementWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil && errs[w] == nil {
					errs[w] = err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// elementRecord is element i's run record, its first attempt in the
// array and not sent yet.
func elementRecord(rec *schema.RunRecord, i int, now time.Time) *schema.RunRecord {
	task := rec.Task
	task.Array = schema.TaskArray{}
	task.Proceed.MinSucceeded = nil
	return &schema.RunRecord{
		RunID: schema.ElementRunID(rec.RunID, i), SpecHash: rec.SpecHash, Site: rec.Site, SiteFile: rec.SiteFile, Backend: rec.Backend,
		TaskFile: rec.TaskFile, Task: task, CreatedAt: now.UTC(), Env: rec.Env, EnvHash: rec.EnvHash,
		Element:  &schema.Element{Array: rec.RunID, Index: i, Size: rec.Array.Size, Params: rec.Task.Array.ElementParams(i)},
		Attempts: []schema.Attempt{{N: 1, SubmittedAt: now.UTC(), Reason: "first attempt, in the array", Generation: 1, InArray: true}},
	}
}
