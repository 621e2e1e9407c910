package main

import (
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
)

// listEntry is one row of `tether list`.
type listEntry struct {
	RunID    string    `json:"run_id"`
	Name     string    `json:"name"`
	State    string    `json:"state"`
	JobID    string    `json:"job_id"`
	Attempts int       `json:"attempts"`
	Key      string    `json:"key,omitempty"`
	Created  time.Time `json:"created"`
	RunDir   string    `json:"run_dir"`
}

func (a *app) listCmd() *cobra.Command {
	var asJSON, active bool
	c := &cobra.Command{
		Use:   "list [flags]",
		Short: "List the runs of a site",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			site, err := a.loadSite()
			if err != nil {
				return err
			}
			s, err := a.open(site)
			if err != nil {
				return err
			}
			ids, err := s.store.ListRuns()
			if err != nil {
				return err
			}
			act, _ := s.store.ActiveOf(site.Name)
			snap := s.engine.Poller.Cached()
			var rows []listEntry
			for _, id := range ids {
				run := s.store.Run(id)
				rec, err := run.Load()
				if err != nil || rec.Element != nil {
					continue // an array's elements are shown by its run
				}
				e := listEntry{RunID: id, Name: rec.Task.Name, Attempts: len(rec.Attempts), Key: rec.Key, Created: rec.CreatedAt, RunDir: run.Dir, JobID: jobOf(rec)}
				if o, done, _ := run.Outcome(); done {
					e.State = o.Outcome
				} else if _, ok := act[id]; ok {
					e.State = "active"
					if js, ok := snap.Jobs[backends.JobID(e.JobID)]; ok {
						e.State = string(js.State)
					}
				} else {
					e.State = "undecided"
				}
				if active && !isLive(e.State) {
					continue
				}
				rows = append(rows, e)
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].Created.Before(rows[j].Created) })
			if asJSON {
				if rows == nil {
					rows = []listEntry{}
				}
				return printJSON(a.stdout, rows)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tSTATE\tJOB\tATTEMPTS\tCREATED")
			now := a.now()
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.RunID, r.State, r.JobID, r.Attempts, relTime(r.Created, now))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	c.Flags().BoolVar(&active, "active", false, "only runs that are not decided")
	return c
}

func isLive(state string) bool {
	switch state {
	case "succeeded", "partial", "failed", "cancelled", "skipped":
		return false
	}
	return true
}
