package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Weigh turns the status summary into checkpoint evidence for the task's
// proceed policy: the latest checkpoint's fraction must reach min_fraction,
// the paths it names must exist, and every require_outputs glob (relative
// to the workdir) must match a file. Without require_outputs a checkpoint
// event is needed at all.
func Weigh(sum rundir.Summary, task *schema.Task) Evidence {
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
			if _, err := os.Stat(path); err != nil {
				problems = append(problems, "checkpoint output "+path+" is missing")
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
		if m, _ := filepath.Glob(pattern); len(m) == 0 {
			problems = append(problems, fmt.Sprintf("required output %q does not exist", g))
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

func pct(f float64) string {
	return fmt.Sprintf("%.4g%%", f*100)
}
