package monitor

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// syncBuffer is a log sink the monitor may write from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// A state directory shared with another site, and active runs whose
// run.json cannot be read: the monitor tracks only its own runs, logs an
// unreadable run once (and counts it in tether_monitor_unreadable_runs),
// forgets what leaves the index, and is not woken by the other site's
// runs.
func TestMonitorSharedStateDir(t *testing.T) {
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\nmin_interval='1ms'\nmax_interval='10ms'\nevidence_grace='0s'\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := rundir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	be := fake.New()
	now := time.Now().UTC()
	task := schema.DefaultTask()
	task.Name, task.Command, task.Workdir = "t", []string{"true"}, t.TempDir()
	task.Resources.Walltime = schema.Duration(time.Hour)
	newRun := func(id, siteName, jobID string) rundir.Run {
		t.Helper()
		rec := &schema.RunRecord{RunID: id, Site: siteName, Backend: "sbatch", Task: task, CreatedAt: now,
			Attempts: []schema.Attempt{{N: 1, JobID: jobID, SubmittedAt: now, Generation: 1}}}
		run, err := store.CreateRun(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.SetActive(id, jobID, siteName); err != nil {
			t.Fatal(err)
		}
		be.Put(backends.JobStatus{ID: backends.JobID(jobID), State: backends.Running, Start: now})
		return run
	}
	for i, id := range []string{"s-1", "s-2", "s-3"} {
		newRun(id, "s", string(rune('1'+i)))
	}
	newRun("t-1", "t", "11")
	newRun("t-2", "t", "12")
	damaged := newRun("s-damaged", "s", "21")
	if err := os.WriteFile(damaged.RunJSON(), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	store.SetActive("ghost", "31", "s") // an active mark whose run directory is gone

	logs := &syncBuffer{}
	eng := &Engine{Site: site, Store: store, Backend: be, Poller: &Poller{Store: store, Backend: be, Now: time.Now},
		Now: time.Now, Log: slog.New(slog.NewTextHandler(logs, nil)), Actor: "test"}
	m := NewMonitor([]*SiteRuntime{{Site: site, Store: store, Engine: eng}}, "test", time.Now, eng.Log)
	s := m.Sites[0]
	ctx := context.Background()
	cycle := func() {
		t.Helper()
		if _, err := m.Cycle(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	gauges := func(tracked, unreadable int) {
		t.Helper()
		if got := testutil.ToFloat64(m.Metrics.tracked.WithLabelValues("s")); got != float64(tracked) {
			t.Errorf("tether_monitor_tracked_runs %v, want %d", got, tracked)
		}
		if got := testutil.ToFloat64(m.Metrics.unreadable.WithLabelValues("s")); got != float64(unreadable) {
			t.Errorf("tether_monitor_unreadable_runs %v, want %d", got, unreadable)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.trackers) != tracked {
			t.Errorf("%d trackers, want %d", len(m.trackers), tracked)
		}
	}
	const warning = "cannot read the run's run.json"
	for i := 0; i < 3; i++ {
		cycle()
	}
	gauges(3, 2)
	if n := logs.count(warning); n != 2 {
		t.Errorf("%d warnings about unreadable runs in 3 cycles, want 2 (once each):\n%s", n, logs.b.String())
	}
	if n := len(m.Metrics.Runs()); n != 3 {
		t.Errorf("%d runs in the metrics, want 3", n)
	}

	// The stat fallback is not woken by the other site's runs.
	marks := map[string]fileMark{}
	m.statOnce(s, marks)
	m.statOnce(s, marks)
	select {
	case <-m.kick["s"]:
		t.Error("the stat fallback woke the cycle although nothing changed")
	default:
	}

	// run.json repaired: the run is tracked; the warning is not repeated.
	rec := &schema.RunRecord{V: schema.RunVersion, RunID: "s-damaged", Site: "s", Backend: "sbatch", Task: task, CreatedAt: now,
		Attempts: []schema.Attempt{{N: 1, JobID: "21", SubmittedAt: now, Generation: 1}}}
	if err := damaged.Save(rec); err != nil {
		t.Fatal(err)
	}
	cycle()
	gauges(4, 1)
	if n := logs.count(warning); n != 2 {
		t.Errorf("%d warnings, want still 2", n)
	}

	// Runs that leave the index are forgotten, the other site's too.
	for _, id := range []string{"t-1", "t-2", "ghost", "s-1"} {
		store.ClearActive(id)
	}
	cycle()
	gauges(3, 0)
	m.mu.Lock()
	if len(m.others) != 0 {
		t.Errorf("%d other runs remembered after they left the index: %v", len(m.others), m.others)
	}
	m.mu.Unlock()
	// A new active entry, of any site, wakes the stat fallback.
	newRun("t-3", "t", "13")
	m.statOnce(s, marks)
	select {
	case <-m.kick["s"]:
	default:
		t.Error("a new active entry did not wake the cycle")
	}
}
