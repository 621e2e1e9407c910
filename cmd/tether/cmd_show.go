package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/monitor"
)

func (a *app) showCmd() *cobra.Command {
	var key string
	var asJSON bool
	c := &cobra.Command{
		Use:   "show [flags] RUN | --key KEY",
		Short: "Show a run's history: its spec, attempts, checkpoints, decision and evidence",
		Long: `show prints what tether knows about a run: the Task as it was submitted,
every attempt (job id, scheduler state, nodes, start and end, exit code and
signal, cause, memory asked and resources used), the checkpoints and results
the Task reported, the decision with the evidence it rests on, and the
commands that print the logs. Like status it only looks (through the site's
shared poll cache): it never decides or acts. --json prints one JSON object.`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRunOrKey(args, key)
			if err != nil {
				return err
			}
			d, err := s.engine.Detail(ctx, run, s.site.Poll.MinInterval.D())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, d)
			}
			writeDetail(a.stdout, d, a.now())
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "find the run by its idempotency key instead of its id")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	a.elementFlag(c)
	return c
}

// writeDetail renders a Detail for a terminal.
func writeDetail(w io.Writer, d *monitor.Detail, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("Run", d.RunID)
	row("Site", d.Site+" (backend "+d.Backend+")")
	task := d.Spec.Name
	if d.TaskFile != "" {
		task += " (" + d.TaskFile + ")"
	}
	row("Task", task)
	row("Key", d.Key)
	if d.Spec.Array != "" {
		row("Array", fmt.Sprintf("element %d of %s", *d.Spec.Index, d.Spec.Array))
	}
	state := d.State
	if d.Outcome.Cause != "" {
		state += " (" + string(d.Outcome.Cause) + ")"
	}
	if !d.Final {
		state += ", not decided yet"
	}
	row("State", state)
	row("Reason", d.Decision.Reason)
	if d.Decision.DecidedAt != nil {
		row("Decided", stamp(*d.Decision.DecidedAt)+" by "+d.Decision.DecidedBy)
	}
	row("Stuck", d.Decision.Stuck)
	if f := d.Outcome.Fraction; f != nil {
		p := fmt.Sprintf("%.0f%%", *f*100)
		if d.Outcome.Message != "" {
			p += " " + d.Outcome.Message
		}
		row("Progress", p)
	}
	if d.LastHeartbeat != nil {
		row("Heartbeat", relTime(*d.LastHeartbeat, now))
	}
	row("Created", stamp(d.CreatedAt))
	row("Spec", specLine(d.Spec))
	if d.Spec.Proceed != "" {
		row("Proceed", d.Spec.Proceed)
	}
	row("Run dir", d.RunDir)
	tw.Flush()

	if len(d.Attempts) > 0 {
		fmt.Fprintln(w, "\nAttempts")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tJOB\tSTATE\tNODES\tSUBMITTED\tSTARTED\tENDED\tEXIT\tCAUSE\tMEMORY")
		for _, at := range d.Attempts {
			exit := "-"
			if at.ExitCode != nil {
				exit = fmt.Sprint(*at.ExitCode)
			}
			if at.Signal != 0 {
				exit += fmt.Sprintf(" (signal %d)", at.Signal)
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", at.N, dash(at.JobID), dash(at.State),
				dash(strings.Join(at.Nodes, ",")), stamp(at.SubmittedAt), stampp(at.StartedAt), stampp(at.EndedAt), exit,
				dash(at.Cause), dash(at.Memory))
		}
		tw.Flush()
		for _, at := range d.Attempts {
			line := fmt.Sprintf("  attempt %d: %s", at.N, at.Reason)
			if at.Decision != "" {
				line += "; then " + at.Decision
			}
			if len(at.Exclude) > 0 {
				line += "; kept away from " + strings.Join(at.Exclude, ",")
			}
			if at.ResumeFrom != "" {
				line += "; resumed from " + at.ResumeFrom
			}
			fmt.Fprintln(w, line)
			if u := at.Usage; u != nil {
				fmt.Fprintf(w, "  attempt %d used: %.0f s elapsed, %.0f CPU-s, %.0f GPU-s, max RSS %s (%s)\n", at.N, u.ElapsedS, u.CPUS, u.GPUS, bytesHuman(u.MaxRSSBytes), u.Source)
			}
		}
	}
	if len(d.Elements) > 0 {
		fmt.Fprintf(w, "\nElements (%d)", len(d.Elements))
		if c := d.Outcome.Counts; len(c) > 0 {
			keys := make([]string, 0, len(c))
			for k := range c {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%s %d", k, c[k])
			}
			fmt.Fprintf(w, ": %s", strings.Join(parts, ", "))
		}
		fmt.Fprintln(w)
		for _, el := range d.Outcome.Elements {
			if el.Outcome != "succeeded" {
				fmt.Fprintf(w, "  %s  %s  %s\n", el.RunID, el.Outcome, el.Reason)
			}
		}
	}
	if len(d.Checkpoints) > 0 {
		fmt.Fprintln(w, "\nCheckpoints")
		for _, cp := range d.Checkpoints {
			f := "-"
			if cp.Fraction != nil {
				f = fmt.Sprintf("%.0f%%", *cp.Fraction*100)
			}
			line := fmt.Sprintf("  %s  attempt %d  %s", stamp(cp.At), cp.Attempt, f)
			if len(cp.Paths) > 0 {
				line += "  " + strings.Join(cp.Paths, " ")
			}
			if cp.Resume != "" {
				line += "  resume " + cp.Resume
			}
			fmt.Fprintln(w, line)
		}
	}
	if len(d.Results) > 0 {
		fmt.Fprintln(w, "\nResults")
		keys := make([]string, 0, len(d.Results))
		for k := range d.Results {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s = %s\n", k, d.Results[k])
		}
	}
	if len(d.Decision.Evidence) > 0 {
		fmt.Fprintln(w, "\nEvidence")
		for _, e := range d.Decision.Evidence {
			fmt.Fprintf(w, "  - %s\n", e)
		}
	}
	fmt.Fprintln(w, "\nLogs")
	for _, c := range d.Logs.Commands {
		fmt.Fprintf(w, "  %s\n", c)
	}
	if d.Logs.Stdout != "" {
		fmt.Fprintf(w, "  (files: %s, %s)\n", d.Logs.Stdout, d.Logs.Stderr)
	}
}

func specLine(s monitor.Spec) string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(s.Nodes, "nodes")
	add(s.NTasks, "tasks")
	add(s.PerNode, "tasks/node")
	add(s.CPUs, "CPUs/task")
	add(s.GPUs, "GPUs/task")
	if s.Memory != "" {
		parts = append(parts, s.Memory+" memory")
	}
	if s.Walltime != "" {
		parts = append(parts, "walltime "+s.Walltime)
	}
	if s.Launcher != "" {
		parts = append(parts, "launcher "+s.Launcher)
	}
	if s.Retries > 1 {
		parts = append(parts, fmt.Sprintf("up to %d attempts", s.Retries))
	}
	if s.ArraySize > 0 {
		parts = append(parts, fmt.Sprintf("array of %d", s.ArraySize))
	}
	cmd := s.Script
	if len(s.Command) > 0 {
		cmd = strings.Join(s.Command, " ")
	}
	if cmd != "" {
		parts = append(parts, "runs: "+cmd)
	}
	return strings.Join(parts, ", ")
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func stampp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return stamp(*t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(b int64) string {
	switch {
	case b <= 0:
		return "-"
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}
