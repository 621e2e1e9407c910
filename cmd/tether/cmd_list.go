package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
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
	// Reason says why a run that is not decided is in its state.
	Reason string `json:"reason,omitempty"`
}

func (a *app) listCmd() *cobra.Command {
	var asJSON, active bool
	c := &cobra.Command{
		Use:   "list [flags]",
		Short: "List the runs of a site",
		Long: `list shows the runs of the site's state directory, oldest first. Runs that
are not decided are looked at with ONE scheduler query for all of them
(through the site's shared poll cache, like status): a run whose job has
ended but that nobody decided (its tether run was killed) shows "ended",
with the decision an acting command would take in its reason. list never
decides or acts. Decided runs come from a listing cache in the state
directory, so a list of 100,000 runs reads a few files.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			site, err := a.loadSite()
			if err != nil {
				return err
			}
			s, err := a.open(site)
			if err != nil {
				return err
			}
			rows, err := s.store.Rows()
			if err != nil {
				return err
			}
			act, _ := s.store.ActiveOf(site.Name)
			all, _ := s.store.Active()
			entries := make([]listEntry, 0, len(rows))
			var settle []int
			for _, r := range rows {
				if r.Element {
					continue // an array's elements are shown by its run
				}
				e := listEntry{RunID: r.RunID, Name: r.Name, State: r.Outcome, JobID: r.JobID, Attempts: r.Attempts,
					Key: r.Key, Created: r.Created, RunDir: s.store.Run(r.RunID).Dir}
				switch _, mine := act[r.RunID]; {
				case r.Broken:
					e.State, e.Reason = "unreadable", "run.json cannot be read"
				case e.State != "":
				case mine:
					e.State = "active"
					settle = append(settle, len(entries))
				case all[r.RunID] != "":
					e.State = "active" // another site's, sharing this state directory
				default:
					e.State = "undecided"
				}
				entries = append(entries, e)
			}
			a.settle(ctx, s, entries, settle, act)
			if active {
				live := entries[:0]
				for _, e := range entries {
					if isLive(e.State) {
						live = append(live, e)
					}
				}
				entries = live
			}
			if asJSON {
				return printJSON(a.stdout, entries)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tSTATE\tJOB\tATTEMPTS\tCREATED")
			now := a.now()
			for _, r := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.RunID, r.State, r.JobID, r.Attempts, relTime(r.Created, now))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	c.Flags().BoolVar(&active, "active", false, "only runs that are not decided")
	return c
}

// settle looks at the site's active runs with one scheduler query for all
// of them and puts what each look saw in its entry.
func (a *app) settle(ctx context.Context, s *session, entries []listEntry, which []int, act map[string]string) {
	if len(which) == 0 {
		return
	}
	ids := make([]backends.JobID, 0, len(which))
	for _, i := range which {
		if j := act[entries[i].RunID]; j != "" {
			ids = append(ids, backends.JobID(j))
		}
	}
	snap, perr := s.engine.Poller.Status(ctx, ids, s.site.Poll.MinInterval.D())
	if perr != nil {
		a.logf("scheduler query failed (%v); active runs show the last known state", perr)
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(8, len(which)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				run := s.store.Run(entries[i].RunID)
				st, err := s.engine.LookWith(ctx, run, &snap, perr, monitor.NewTracker(run))
				if err != nil {
					entries[i].Reason = err.Error()
					continue
				}
				entries[i].State, entries[i].Reason = lookState(st.Outcome.Outcome, st.Outcome.Final, st.Outcome.Reason)
				if rec := st.Record; rec != nil {
					entries[i].JobID, entries[i].Attempts = rec.JobLabel(), len(rec.Attempts)
				}
			}
		}()
	}
	for _, i := range which {
		next <- i
	}
	close(next)
	wg.Wait()
}

// lookState is a listing's state for a look's outcome.
func lookState(outcome string, final bool, reason string) (string, string) {
	if final {
		return outcome, ""
	}
	if strings.HasPrefix(reason, monitor.NotDecidedYet) {
		return "ended", reason
	}
	return outcome, reason
}

func isLive(state string) bool {
	switch state {
	case "succeeded", "partial", "failed", "cancelled", "skipped":
		return false
	}
	return true
}
