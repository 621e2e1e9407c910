package monitor_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

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
	if err := rundir.WriteJSON(run.OutcomeFile(), schema.Outcome{V: 1, RunID: run.ID, Outcome: "failed", Final: true, Reason: "lost: job gone"}); err != nil {
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
