package monitor_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// A decider that died after writing outcome.json but before clearing the
// active mark: the monitor counts the outcome once, clears the mark, and
// a key reused for a new attempt is not counted again for the old one.
func TestMonitorStaleActiveMarkCountedOnce(t *testing.T) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	run := e.newRun(t, baseTask())
	if _, err := eng.Step(ctx, run, 0, monitor.NewTracker(run)); err != nil {
		t.Fatal(err)
	}
	rec, err := run.Load()
	if err != nil {
		t.Fatal(err)
	}
	jobID := rec.Current().JobID
	// The outcome is written, the active mark stays (the decider died).
	if err := rundir.WriteJSON(run.OutcomeFile(), schema.Outcome{V: 1, RunID: run.ID, Outcome: "failed", Final: true, Reason: "lost: job gone", Cause: schema.CauseLost}); err != nil {
		t.Fatal(err)
	}
	e.be.Set(backends.JobID(jobID), backends.Failed, 1)
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: e.site, Store: e.store, Engine: eng}}, "test", e.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := 0; i < 3; i++ {
		if _, err := m.Cycle(ctx, m.Sites[0], 0); err != nil {
			t.Fatal(err)
		}
	}
	names, err := e.store.ActiveNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Errorf("active mark not cleared: %v", names)
	}
	want := `
# HELP tether_runs_lost_total Runs failed as lost: gone from the scheduler with no exit file after the grace window.
# TYPE tether_runs_lost_total counter
tether_runs_lost_total{site="s"} 1
`
	if err := testutil.GatherAndCompare(m.Metrics.Registry, strings.NewReader(want), "tether_runs_lost_total"); err != nil {
		t.Error(err)
	}
	var buf strings.Builder
	if err := testutil.GatherAndCompare(m.Metrics.Registry, strings.NewReader(`
# HELP tether_outcomes_total Runs that ended while the monitor watched them, by outcome.
# TYPE tether_outcomes_total counter
tether_outcomes_total{outcome="cancelled",site="s"} 0
tether_outcomes_total{outcome="failed",site="s"} 1
tether_outcomes_total{outcome="partial",site="s"} 0
tether_outcomes_total{outcome="skipped",site="s"} 0
tether_outcomes_total{outcome="succeeded",site="s"} 0
`), "tether_outcomes_total"); err != nil {
		buf.WriteString(err.Error())
		t.Error(buf.String())
	}
}

// slowSite cycles rarely, so what happens within a second of a file
// change comes from inotify or the stat fallback, not from a cycle.
func slowSite(t *testing.T, e *env) {
	t.Helper()
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\nmin_interval='20s'\nmax_interval='1m'\nevidence_grace='0s'\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.site = site
}

func runningRun(t *testing.T, e *env, eng *monitor.Engine) (rundir.Run, string) {
	t.Helper()
	run := e.newRun(t, baseTask())
	if _, err := eng.Step(context.Background(), run, 0, monitor.NewTracker(run)); err != nil {
		t.Fatal(err)
	}
	rec, _ := run.Load()
	id := rec.Current().JobID
	e.be.Put(backends.JobStatus{ID: backends.JobID(id), State: backends.Running, Start: e.now})
	return run, id
}

func eventually(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventuallyRepeating does act, and again every `again` until ok holds;
// it fails the test if ok does not hold within.
func eventuallyRepeating(t *testing.T, what string, within, again time.Duration, act func(), ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		act()
		next := time.Now().Add(again)
		for time.Now().Before(next) {
			if ok() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func progressOf(m *monitor.Monitor, runID string) float64 {
	for _, v := range m.Metrics.Runs() {
		if v.RunID == runID && v.Fraction != nil {
			return *v.Fraction
		}
	}
	return -1
}

// Without inotify (NFS, Lustre, --stat-only) the stat fallback notices a
// status-file write and a new exit file between cycles.
func TestMonitorStatFallback(t *testing.T) {
	for _, statOnly := range []bool{true, false} {
		t.Run(map[bool]string{true: "stat-only", false: "inotify"}[statOnly], func(t *testing.T) {
			e := newEnv(t)
			e.now = time.Now()
			slowSite(t, e)
			eng := e.engine()
			run, id := runningRun(t, e, eng)
			m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: e.site, Store: e.store, Engine: eng}}, "test", time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
			m.StatOnly, m.StatEvery = statOnly, 50*time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { m.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			eventually(t, "first cycle", 2*time.Second, func() bool { return len(m.Metrics.Runs()) == 1 })

			f := 0.25
			progress := func() {
				rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f, TS: time.Now()})
			}
			if statOnly {
				// The fallback's first look at the run records its files
				// and shows nowhere; a write before it is the baseline, not
				// a change. So the write is repeated until one is seen.
				eventuallyRepeating(t, "progress metric", 2*time.Second, 200*time.Millisecond, progress, func() bool { return progressOf(m, run.ID) == 0.25 })
			} else {
				// after the first cycle the monitor watches the run's
				// directory and its attempt's
				waitWatched(t, 2*time.Second, run.Dir, run.AttemptDir(1))
				progress()
				eventually(t, "progress metric", 2*time.Second, func() bool { return progressOf(m, run.ID) == 0.25 })
			}

			// The job ends: the wrapper's exit file wakes a cycle at once
			// (the next scheduled one is 20 s away).
			lastCycle := func() float64 {
				for _, sv := range m.Metrics.Sites() {
					if sv.Name == "s" {
						return sv.LastCycle
					}
				}
				return 0
			}
			before := lastCycle()
			e.be.Set(backends.JobID(id), backends.Completed, 0)
			if err := rundir.WriteJSON(run.ExitCode(1), schema.ExitFile{V: 1, Time: time.Now(), ExitCode: 0}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "a cycle woken by the exit file", 2*time.Second, func() bool { return lastCycle() > before })
		})
	}
}

func TestNetworkFSLocal(t *testing.T) {
	if fs := rundir.NetworkFS(t.TempDir()); fs != "" && fs != "fuse" && fs != "9p" {
		t.Errorf("a test temp dir reads as network filesystem %q", fs)
	}
}
