package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Weigh turns the status summary into checkpoint evidence for the task's
// proceed policy: the latest checkpoint's fraction must reach min_fraction,
// the paths it names must exist, and every require_outputs glob (relative
// to the workdir) must match a file. Without require_outputs a checkpoint
// event is needed at all.
//
// Evidence counts only from the current generation: sum must come from a
// StatusReader with the generation's window, and files (checkpoint paths
// and require_outputs matches) count only when their mtime is not before
// since, so outputs left by an earlier generation of the same key, or by
// anything before the run, prove nothing. since is rundir.GenerationStart:
// the generation's first SubmittedAt less rundir.ClockSlack (2 s, for
// coarse filesystem mtimes and clock skew between the nodes), never before
// the previous generation's end. A zero since checks existence only. A directory counts by its own mtime, which
// changes when entries are created, removed or renamed in it.
func Weigh(sum rundir.Summary, task *schema.Task, since time.Time) Evidence {
	p := task.Proceed
	ev := Evidence{}
	if sum.Resumable != nil {
		ev.Resume = sum.Resumable.Resume
	}
	var problems []string
	cp := sum.Checkpoint
	if cp != nil && cp.Fraction != nil {
		f := *cp.Fraction
		ev.Fraction = &f
	}
	switch {
	case cp == nil && len(p.RequireOutputs) == 0:
		problems = append(problems, "the Task wrote no checkpoint")
	case cp != nil:
		f := 0.0
		if cp.Fraction != nil {
			f = *cp.Fraction
		}
		if f < p.MinFraction {
			problems = append(problems, fmt.Sprintf("checkpoint at %s, %s required", pct(f), pct(p.MinFraction)))
		}
		for _, path := range cp.Paths {
			if !filepath.IsAbs(path) {
				path = filepath.Join(task.Workdir, path)
			}
			if fi, err := os.Stat(path); err != nil {
				problems = append(problems, "checkpoint output "+path+" is missing")
			} else if !fresh(fi, since) {
				problems = append(problems, "checkpoint output "+path+" was written before this generation started")
			}
		}
	case p.MinFraction > 0:
		problems = append(problems, fmt.Sprintf("no checkpoint, %s required", pct(p.MinFraction)))
	}
	for _, g := range p.RequireOutputs {
		pattern := g
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(task.Workdir, g)
		}
		m, _ := filepath.Glob(pattern)
		n := 0
		for _, path := range m {
			if fi, err := os.Stat(path); err == nil && fresh(fi, since) {
				n++
			}
		}
		switch {
		case len(m) == 0:
			problems = append(problems, fmt.Sprintf("required output %q does not exist", g))
		case n == 0:
			problems = append(problems, fmt.Sprintf("required output %q was written only before this generation started", g))
		}
	}
	if len(problems) == 0 {
		ev.Satisfied = true
		parts := []string{}
		if ev.Fraction != nil {
			parts = append(parts, fmt.Sprintf("checkpoint at %s (%s required)", pct(*ev.Fraction), pct(p.MinFraction)))
		}
		if len(p.RequireOutputs) > 0 {
			parts = append(parts, "required outputs exist")
		}
		if len(parts) == 0 {
			parts = append(parts, "checkpoint recorded")
		}
		ev.Why = strings.Join(parts, ", ")
	} else {
		ev.Why = strings.Join(problems, "; ")
	}
	return ev
}

// fresh reports whether a file was written in the current generation.
func fresh(fi os.FileInfo, since time.Time) bool {
	return since.IsZero() || !fi.ModTime().Before(since)
}

func pct(f float64) string {
	return fmt.Sprintf("%.4g%%", f*100)
}
