package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
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
			// one short-lived listing of up to 100,000s of rows: fewer
			// collections while the heap grows to hold them
			defer debug.SetGCPercent(debug.SetGCPercent(400))
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
			// one read of the active index: this site's runs (with the
			// marks of a tether that recorded no site) and other sites'
			all, _ := s.store.ActiveEntries()
			act := make(map[string]string, len(all))
			for id, a := range all {
				if a.Of(site.Name) {
					act[id] = a.Job
				}
			}
			entries := make([]listEntry, 0, len(rows))
			runsDir := s.store.Run("x").Dir
			runsDir = runsDir[:len(runsDir)-1] // ".../runs/"
			var settle []int
			for _, r := range rows {
				if r.Element {
					continue // an array's elements are shown by its run
				}
				e := listEntry{RunID: r.RunID, Name: r.Name, State: r.Outcome, JobID: r.JobID, Attempts: r.Attempts,
					Key: r.Key, Created: r.Created, RunDir: runsDir + r.RunID}
				switch _, mine := act[r.RunID]; {
				case r.Broken:
					e.State, e.Reason = "unreadable", "run.json cannot be read"
				case e.State != "":
				case mine:
					e.State = "active"
					settle = append(settle, len(entries))
				case all[r.RunID] != (rundir.ActiveEntry{}):
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
				return writeListJSON(a.stdout, entries)
			}
			return writeListText(a.stdout, entries, a.now())
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
	// ids are every active job of the site (the caller read the index):
	// the poller need not read it again
	s.engine.Poller.Complete = true
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

// writeListText prints the table (columns padded like tabwriter's, in one
// pass over the rows to measure them and one to write).
func writeListText(w io.Writer, entries []listEntry, now time.Time) error {
	head := [5]string{"RUN", "STATE", "JOB", "ATTEMPTS", "CREATED"}
	var width [4]int
	for i := range width {
		width[i] = len(head[i])
	}
	for _, e := range entries {
		width[0] = max(width[0], len(e.RunID))
		width[1] = max(width[1], len(e.State))
		width[2] = max(width[2], len(e.JobID))
		width[3] = max(width[3], len(strconv.Itoa(e.Attempts)))
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	line := make([]byte, 0, 256)
	cell := func(v string, col int) {
		line = append(line, v...)
		for range width[col] - len(v) + 2 {
			line = append(line, ' ')
		}
	}
	cell(head[0], 0)
	cell(head[1], 1)
	cell(head[2], 2)
	cell(head[3], 3)
	bw.Write(append(append(line, head[4]...), '\n'))
	for _, e := range entries {
		line = line[:0]
		cell(e.RunID, 0)
		cell(e.State, 1)
		cell(e.JobID, 2)
		cell(strconv.Itoa(e.Attempts), 3)
		line = append(append(line, relTime(e.Created, now)...), '\n')
		bw.Write(line)
	}
	return bw.Flush()
}

// writeListJSON prints the entries as one JSON array, as encoding/json
// would (TestListJSONMatchesEncodingJSON), without reflection: a list of
// 100,000 runs is encoded in a few milliseconds.
func writeListJSON(w io.Writer, entries []listEntry) error {
	buf := make([]byte, 0, len(entries)*256+3)
	buf = append(buf, '[')
	for i, e := range entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"run_id":`...)
		buf = appendJSONString(buf, e.RunID)
		buf = append(buf, `,"name":`...)
		buf = appendJSONString(buf, e.Name)
		buf = append(buf, `,"state":`...)
		buf = appendJSONString(buf, e.State)
		buf = append(buf, `,"job_id":`...)
		buf = appendJSONString(buf, e.JobID)
		buf = append(buf, `,"attempts":`...)
		buf = strconv.AppendInt(buf, int64(e.Attempts), 10)
		if e.Key != "" {
			buf = append(buf, `,"key":`...)
			buf = appendJSONString(buf, e.Key)
		}
		buf = append(buf, `,"created":`...)
		if y := e.Created.Year(); y < 0 || y > 9999 {
			return fmt.Errorf("run %s: created year %d outside [0,9999]", e.RunID, y)
		}
		buf = append(buf, '"')
		buf = e.Created.AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, '"')
		buf = append(buf, `,"run_dir":`...)
		buf = appendJSONString(buf, e.RunDir)
		if e.Reason != "" {
			buf = append(buf, `,"reason":`...)
			buf = appendJSONString(buf, e.Reason)
		}
		buf = append(buf, '}')
	}
	buf = append(buf, ']', '\n')
	_, err := w.Write(buf)
	return err
}

// appendJSONString appends s as encoding/json encodes it (HTML-escaped).
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

func isLive(state string) bool {
	switch state {
	case "succeeded", "partial", "failed", "cancelled", "skipped":
		return false
	}
	return true
}
