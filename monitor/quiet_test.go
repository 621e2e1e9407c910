package monitor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// seedOf returns TETHER_SEED when set (to replay a failure), else a new
// seed; the test logs it.
func seedOf(t *testing.T) uint64 {
	if v := os.Getenv("TETHER_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TETHER_SEED=%q: %v", v, err)
		}
		return s
	}
	return uint64(time.Now().UnixNano())
}

// The monitor's trackers let a run directory's mark stand in for reading
// run.json, outcome.json, started and exitcode again (quiet.go). Over a
// random schedule of the changes other processes make — a wrapper's exit
// file, a decider's outcome, a cancel request in run.json, the
// scheduler's end of the job, a Task's progress — every change shows at
// the very next cycle, for runs whose directories are long settled.
// Replay a failure with TETHER_SEED=<seed>.
func TestCycleMarksSeeEveryChange(t *testing.T) {
	seed := seedOf(t)
	t.Logf("seed %d (replay: TETHER_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	e := newEnv(t)
	eng := e.engine()
	task := baseTask()
	task.HeartbeatTimeout = schema.Duration(time.Hour)
	task.Workdir = t.TempDir()
	t0 := e.now.Add(-time.Minute)
	const n = 40
	runs := make([]rundir.Run, n)
	for i := range runs {
		id := fmt.Sprintf("q-%02d", i)
		job := strconv.Itoa(100 + i)
		rec := &schema.RunRecord{RunID: id, Site: "s", Backend: "sbatch", Task: task, CreatedAt: t0,
			Attempts: []schema.Attempt{{N: 1, JobID: job, SubmittedAt: t0, Generation: 1}}}
		run, err := e.store.CreateRun(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := run.MkAttemptDir(1); err != nil {
			t.Fatal(err)
		}
		if err := rundir.WriteJSON(run.Started(1), schema.Started{V: 1, Time: t0, Host: "n1", JobID: job, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(run.Stdout(1), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.store.SetActive(id, job, "s"); err != nil {
			t.Fatal(err)
		}
		e.be.Put(backends.JobStatus{ID: backends.JobID(job), State: backends.Running, Start: t0})
		runs[i] = run
	}
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: e.site, Store: e.store, Engine: eng}}, "test", e.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// every directory is long settled by the filesystem's clock
	m.FileClock = func() time.Time { return time.Now().Add(time.Hour) }
	ctx := context.Background()
	cycle := func() {
		t.Helper()
		if _, err := m.Cycle(ctx, m.Sites[0], 0); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 { // the trackers' full reads, then looks by mark
		cycle()
	}
	// the monitor's watcher of status files (its stat loop here): the
	// cycles leave quiet runs' status files to it
	tick := m.StatTicker(m.Sites[0])
	tick()
	// progress written in a cycle without a tick: the cycle itself shows
	// it at the run's next full read (fraction and the cycle it is due by)
	type due struct {
		f  float64
		by int
	}
	unticked := map[int]due{}
	views := func() map[string]monitor.RunView {
		out := map[string]monitor.RunView{}
		for _, v := range m.Metrics.Runs() {
			out[v.RunID] = v
		}
		return out
	}
	jobState := func(i int) backends.State {
		id := backends.JobID(strconv.Itoa(100 + i))
		js, _ := e.be.Query(ctx, []backends.JobID{id})
		return js[id].State
	}
	type change struct {
		run  int
		kind string
		want func() error // holds after the next cycle
	}
	live := map[int]bool{}
	for i := range n {
		live[i] = true
	}
	ended := func(i int, outcome string) func() error {
		return func() error {
			o, ok, err := runs[i].Outcome()
			if err != nil || !ok || o.Outcome != outcome {
				return fmt.Errorf("outcome %v %v %v, want %s", o, ok, err, outcome)
			}
			if _, shown := views()[runs[i].ID]; shown {
				return fmt.Errorf("still shown live")
			}
			return nil
		}
	}
	for c := 0; c < 60 && len(live) > 0; c++ {
		var changes []change
		touched := map[int]bool{}
		ticks := rng.IntN(2) == 0
		for range rng.IntN(3) {
			var ids []int // in order: the schedule replays from its seed
			for j := range n {
				if live[j] && !touched[j] {
					ids = append(ids, j)
				}
			}
			if len(ids) == 0 {
				break
			}
			i := ids[rng.IntN(len(ids))]
			touched[i] = true
			run, job := runs[i], strconv.Itoa(100+i)
			switch k := rng.IntN(5); k {
			case 0: // the wrapper's exit file (0): decided from it
				delete(live, i)
				if err := rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, Time: t0.Add(time.Second), ExitCode: 0}); err != nil {
					t.Fatal(err)
				}
				changes = append(changes, change{i, "exit file", ended(i, "succeeded")})
			case 1: // another process decided the run
				delete(live, i)
				if err := run.WriteOutcome(&schema.Outcome{V: 1, RunID: run.ID, Outcome: "failed", Final: true, Reason: "by another"}); err != nil {
					t.Fatal(err)
				}
				changes = append(changes, change{i, "outcome", func() error {
					if _, shown := views()[run.ID]; shown {
						return fmt.Errorf("still shown live")
					}
					return nil
				}})
			case 2: // tether cancel: the request in run.json
				delete(live, i)
				rec, err := run.Load()
				if err != nil {
					t.Fatal(err)
				}
				at := e.now
				rec.CancelRequested = &at
				if err := run.Save(rec); err != nil {
					t.Fatal(err)
				}
				changes = append(changes, change{i, "cancel request", func() error {
					if s := jobState(i); s != backends.Cancelled {
						return fmt.Errorf("job %s, want cancelled", s)
					}
					return nil
				}})
			case 3: // the scheduler ends the job, the wrapper wrote exit 3,
				// the Task's last checkpoint just before (no watcher has
				// seen it): the decision weighs it
				delete(live, i)
				f := float64(1+rng.IntN(99)) / 100
				if err := rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventCheckpoint, Fraction: &f}); err != nil {
					t.Fatal(err)
				}
				if err := rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, Time: t0.Add(time.Second), ExitCode: 3}); err != nil {
					t.Fatal(err)
				}
				e.be.Set(backends.JobID(job), backends.Failed, 3)
				changes = append(changes, change{i, fmt.Sprintf("job failed after a checkpoint at %.2f", f), func() error {
					if err := ended(i, "failed")(); err != nil {
						return err
					}
					o, _, _ := run.Outcome()
					if o.Fraction == nil || *o.Fraction != f {
						return fmt.Errorf("outcome's fraction %v, want the checkpoint's %.2f", o.Fraction, f)
					}
					return nil
				}})
			case 4: // progress
				f := float64(rng.IntN(100)) / 100
				if err := rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f}); err != nil {
					t.Fatal(err)
				}
				if !ticks {
					unticked[i] = due{f, c + monitor.FullEvery - 1}
					continue
				}
				delete(unticked, i)
				changes = append(changes, change{i, fmt.Sprintf("progress %.2f", f), func() error {
					v, ok := views()[run.ID]
					if !ok || v.Fraction == nil || *v.Fraction != f {
						return fmt.Errorf("view %+v", v)
					}
					return nil
				}})
			}
			if !live[i] {
				delete(unticked, i)
			}
		}
		if ticks {
			tick()
		}
		cycle()
		for _, ch := range changes {
			if err := ch.want(); err != nil {
				t.Fatalf("cycle %d: run %s, %s not seen at the next cycle: %v (replay: TETHER_SEED=%d)", c, runs[ch.run].ID, ch.kind, err, seed)
			}
		}
		for i, d := range unticked {
			v, ok := views()[runs[i].ID]
			switch {
			case ok && v.Fraction != nil && *v.Fraction == d.f:
				delete(unticked, i)
			case c >= d.by:
				t.Fatalf("cycle %d: run %s, progress %.2f without a watcher not seen within %d cycles: view %+v (replay: TETHER_SEED=%d)", c, runs[i].ID, d.f, monitor.FullEvery, v, seed)
			}
		}
	}
}

// The monitor's watch goroutine re-reads a run's status file on every
// inotify event (refresh) while its cycles step the same runs: with
// events arriving throughout the cycles, the race detector (make test
// runs this package with -race) finds no unguarded access to a tracker.
func TestRefreshDuringCycles(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	task := baseTask()
	task.HeartbeatTimeout = schema.Duration(time.Hour)
	task.Workdir = t.TempDir()
	var runs []rundir.Run
	for i := range 4 {
		id, job := fmt.Sprintf("r-%d", i), strconv.Itoa(200+i)
		rec := &schema.RunRecord{RunID: id, Site: "s", Backend: "sbatch", Task: task, CreatedAt: e.now,
			Attempts: []schema.Attempt{{N: 1, JobID: job, SubmittedAt: e.now, Generation: 1}}}
		run, err := e.store.CreateRun(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.SetActive(id, job, "s"); err != nil {
			t.Fatal(err)
		}
		e.be.Put(backends.JobStatus{ID: backends.JobID(job), State: backends.Running, Start: e.now})
		runs = append(runs, run)
	}
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: e.site, Store: e.store, Engine: eng}}, "test", e.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	fraction := func(id string) float64 {
		for _, v := range m.Metrics.Runs() {
			if v.RunID == id && v.Fraction != nil {
				return *v.Fraction
			}
		}
		return -1
	}
	for i := 1; i <= 100; i++ {
		f := float64(i) / 100
		for _, run := range runs {
			if err := rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f}); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); fraction(runs[3].ID) != f; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("progress %.2f not shown within 10 s (shown: %.2f)", f, fraction(runs[3].ID))
			}
		}
	}
}
