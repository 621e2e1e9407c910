package launcher

import (
	"fmt"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
)

// AutoPartition asks tether to pick the partition (queue): the first of
// the site's candidates (or of all the scheduler's partitions, the default
// first) whose limits fit the request.
const AutoPartition = "auto"

// Placement is where a request goes and why.
type Placement struct {
	Partition string // "" leaves it to the scheduler's default
	Why       string
}

// Fit checks a request against the scheduler's partitions (queues). A
// request that no partition it may go to can ever run is refused with
// backends.ErrRejected, naming the partition and the limit ("walltime 2h
// exceeds partition "short" MaxTime 2m"). For partition "auto" it picks
// the first candidate that fits (candidates: the site's list, or every
// partition, the default first). Partitions are only refused for limits
// the scheduler reports; what it does not report is left to it.
func Fit(req backends.JobRequest, parts []backends.Partition, candidates []string) (Placement, error) {
	noun := "partition"
	if len(parts) > 0 {
		noun = parts[0].Noun()
	}
	byName := map[string]backends.Partition{}
	var names []string
	for _, p := range parts {
		byName[p.Name] = p
		names = append(names, p.Name)
	}
	known := func(list []string) error {
		for _, n := range list {
			if _, ok := byName[n]; !ok {
				return refuse("%s %q does not exist (the scheduler has %s)", noun, n, strings.Join(quoteAll(names), ", "))
			}
		}
		return nil
	}
	switch req.Partition {
	case AutoPartition:
		list := candidates
		if len(list) == 0 {
			list = defaultFirst(parts)
		}
		if err := known(list); err != nil {
			return Placement{}, err
		}
		var misfits []string
		for _, n := range list {
			p := byName[n]
			if p.Inactive {
				misfits = append(misfits, fmt.Sprintf("%s %q is inactive", p.Noun(), n))
				continue
			}
			if why := misfit(req, p); why != "" {
				misfits = append(misfits, why)
				continue
			}
			return Placement{Partition: n, Why: fmt.Sprintf("%s = auto: %q is the first of %s whose limits fit (%s)", p.Noun(), n, strings.Join(quoteAll(list), ", "), limitsOf(p))}, nil
		}
		return Placement{}, refuse("%s = auto: no %s fits: %s", noun, noun, strings.Join(misfits, "; "))
	case "":
		// the scheduler's default partition; where the scheduler does
		// not say which that is, refuse only what fits none
		for _, p := range parts {
			if !p.Default {
				continue
			}
			if why := misfit(req, p); why != "" {
				return Placement{}, refuse("%s (the default %s; name another with %s =)", why, noun, noun)
			}
			return Placement{Why: fmt.Sprintf("the default %s %q fits (%s)", noun, p.Name, limitsOf(p))}, nil
		}
		var misfits []string
		for _, p := range parts {
			why := misfit(req, p)
			if why == "" {
				return Placement{Why: "the scheduler's default " + noun}, nil
			}
			misfits = append(misfits, why)
		}
		if len(misfits) > 0 {
			return Placement{}, refuse("no %s fits: %s", noun, strings.Join(misfits, "; "))
		}
		return Placement{Why: "the scheduler's default " + noun}, nil
	default:
		// Slurm takes a list ("a,b"): the job runs in whichever fits
		list := strings.Split(req.Partition, ",")
		if err := known(list); err != nil {
			return Placement{}, err
		}
		var misfits []string
		for _, n := range list {
			p := byName[n]
			why := misfit(req, p)
			if why == "" && p.Inactive {
				why = fmt.Sprintf("%s %q is inactive (takes no jobs)", p.Noun(), n)
			}
			if why == "" {
				return Placement{Partition: req.Partition, Why: fmt.Sprintf("%s %q fits (%s)", p.Noun(), n, limitsOf(p))}, nil
			}
			misfits = append(misfits, why)
		}
		return Placement{}, refuse("%s", strings.Join(misfits, "; "))
	}
}

// misfit names the first limit of p the request exceeds, "" if it fits.
func misfit(req backends.JobRequest, p backends.Partition) string {
	nodes := max(req.Nodes, 1)
	tasks := max(req.NTasks, 1)
	if req.NTasksPerNode > 0 {
		tasks = max(tasks, req.NTasksPerNode*nodes)
	}
	cpus := tasks * max(req.CPUsPerTask, 1)
	perNode := (cpus + nodes - 1) / nodes
	if req.NTasksPerNode > 0 {
		perNode = req.NTasksPerNode * max(req.CPUsPerTask, 1)
	}
	switch {
	case p.MaxTime > 0 && req.Walltime > p.MaxTime:
		return fmt.Sprintf("walltime %s exceeds %s %q MaxTime %s", units.Human(req.Walltime), p.Noun(), p.Name, units.Human(p.MaxTime))
	case p.MaxNodes > 0 && nodes > p.MaxNodes:
		return fmt.Sprintf("%d nodes exceed %s %q MaxNodes %d", nodes, p.Noun(), p.Name, p.MaxNodes)
	case p.TotalNodes > 0 && nodes > p.TotalNodes:
		return fmt.Sprintf("%d nodes exceed the %d of %s %q", nodes, p.TotalNodes, p.Noun(), p.Name)
	case p.MaxCPUs > 0 && cpus > p.MaxCPUs:
		return fmt.Sprintf("%d CPUs exceed %s %q max ncpus %d", cpus, p.Noun(), p.Name, p.MaxCPUs)
	case p.TotalCPUs > 0 && cpus > p.TotalCPUs:
		return fmt.Sprintf("%d CPUs exceed the %d of %s %q", cpus, p.TotalCPUs, p.Noun(), p.Name)
	case p.MaxCPUsPerNode > 0 && perNode > p.MaxCPUsPerNode:
		return fmt.Sprintf("%d CPUs per node exceed %s %q MaxCPUsPerNode %d", perNode, p.Noun(), p.Name, p.MaxCPUsPerNode)
	case p.MaxMemPerNodeMiB > 0 && req.MemoryMiB > p.MaxMemPerNodeMiB:
		return fmt.Sprintf("memory %s per node exceeds %s %q MaxMemPerNode %s", units.FormatMemory(req.MemoryMiB), p.Noun(), p.Name, units.FormatMemory(p.MaxMemPerNodeMiB))
	}
	return ""
}

// limitsOf describes a partition's limits for dry runs.
func limitsOf(p backends.Partition) string {
	var l []string
	if p.MaxTime > 0 {
		l = append(l, "MaxTime "+units.Human(p.MaxTime))
	}
	if p.MaxNodes > 0 {
		l = append(l, fmt.Sprintf("MaxNodes %d", p.MaxNodes))
	}
	if p.TotalNodes > 0 {
		l = append(l, fmt.Sprintf("%d nodes", p.TotalNodes))
	}
	if p.TotalCPUs > 0 {
		l = append(l, fmt.Sprintf("%d CPUs", p.TotalCPUs))
	}
	if p.MaxCPUs > 0 {
		l = append(l, fmt.Sprintf("max ncpus %d", p.MaxCPUs))
	}
	if len(l) == 0 {
		return "no limits reported"
	}
	return strings.Join(l, ", ")
}

// defaultFirst lists the partitions' names, the default first.
func defaultFirst(parts []backends.Partition) []string {
	var out []string
	for _, p := range parts {
		if p.Default {
			out = append([]string{p.Name}, out...)
		} else {
			out = append(out, p.Name)
		}
	}
	return out
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

// LimitError is a request refused before it was submitted because the
// scheduler's limits say it can never run. It is a backends.ErrRejected:
// the request must change (exit 2).
type LimitError struct{ Msg string }

func (e *LimitError) Error() string {
	return "can never run (the scheduler's limits, checked before submitting): " + e.Msg
}
func (e *LimitError) Unwrap() error { return backends.ErrRejected }

func refuse(format string, args ...any) error { return &LimitError{Msg: fmt.Sprintf(format, args...)} }
