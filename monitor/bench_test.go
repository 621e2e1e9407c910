package monitor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is the process's high-water resident set size in MB.
func peakRSS() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkMonitorCycle100k: one monitor cycle over a state directory of
// 100,000 run directories, 10,000 of them active, with a fake backend.
// Targets: CPU time per cycle < 150 ms, RSS no higher than before
// (81-111 MB peak). Also reported: the peak RSS before the measured
// cycles (setup and the warm cycle) and the heap in use after the warm
// cycle. TETHER_HEAP_PROF=FILE writes an exact heap profile (every
// allocation sampled) after the warm cycle, to compare two trees with
// go tool pprof -diff_base.
func BenchmarkMonitorCycle100k(b *testing.B) {
	total, active := 100_000, 10_000
	if os.Getenv("TETHER_HEAP_PROF") != "" {
		runtime.MemProfileRate = 1
	}
	if v := os.Getenv("TETHER_BENCH_TOTAL"); v != "" {
		total, _ = strconv.Atoi(v)
	}
	e := &env{}
	site, _ := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\nmin_interval='1ms'\nmax_interval='10ms'\nevidence_grace='0s'\n"))
	store, err := rundir.Open(filepath.Join(b.TempDir(), "state"))
	if err != nil {
		b.Fatal(err)
	}
	e.store, e.site, e.be, e.now = store, site, fake.New(), time.Now()
	task := baseTask()
	task.HeartbeatTimeout = schema.Duration(time.Hour)
	task.Workdir = b.TempDir()
	now := time.Now().UTC()
	b.Logf("creating %d run directories", total)
	for i := 0; i < total; i++ {
		id := fmt.Sprintf("t-%06d", i)
		rec := &schema.RunRecord{RunID: id, Site: "s", Backend: "sbatch", Task: task, CreatedAt: now,
			Attempts: []schema.Attempt{{N: 1, JobID: strconv.Itoa(i + 1), SubmittedAt: now, Generation: 1}}}
		run, err := store.CreateRun(rec)
		if err != nil {
			b.Fatal(err)
		}
		if i < active {
			store.SetActive(id, strconv.Itoa(i+1), "s")
			e.be.Put(backends.JobStatus{ID: backends.JobID(strconv.Itoa(i + 1)), State: backends.Running, Start: now})
			f := 0.5
			rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f})
			// a running attempt: its directory, started file and stdout
			if err := run.MkAttemptDir(1); err != nil {
				b.Fatal(err)
			}
			rundir.WriteJSON(run.Started(1), schema.Started{V: 1, Attempt: 1, JobID: strconv.Itoa(i + 1), Host: "n1"})
			os.WriteFile(run.Stdout(1), nil, 0o600)
		} else {
			rundir.WriteJSON(run.OutcomeFile(), schema.Outcome{V: 1, RunID: id, Outcome: "succeeded", Final: true})
		}
	}
	eng := e.engine()
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: site, Store: store, Engine: eng}}, "bench", time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if _, err := m.Cycle(ctx, m.Sites[0], 0); err != nil { // warm: trackers and run records
		b.Fatal(err)
	}
	if n := len(m.Metrics.Runs()); n != active {
		b.Fatalf("%d active runs seen, want %d", n, active)
	}
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	hwm0 := peakRSS()
	if f := os.Getenv("TETHER_HEAP_PROF"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		if err := errors.Join(pprof.WriteHeapProfile(w), w.Close()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	c0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := m.Cycle(ctx, m.Sites[0], 0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-c0).Milliseconds())/float64(b.N), "cpu-ms/cycle")
	b.ReportMetric(peakRSS(), "peak-RSS-MB")
	b.ReportMetric(hwm0, "warm-peak-RSS-MB")
	b.ReportMetric(float64(ms0.HeapInuse)/1e6, "live-heap-MB")
	if q := e.be.Queries.Load(); q > int64(b.N+2) {
		b.Errorf("%d scheduler queries for %d cycles", q, b.N+1)
	}
}

// BenchmarkStatusToMetric: time from a Task's status-file write to the
// monitor's metric changing (target < 1 s).
func BenchmarkStatusToMetric(b *testing.B) {
	site, _ := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\nmin_interval='1s'\nmax_interval='30s'\n"))
	store, _ := rundir.Open(filepath.Join(b.TempDir(), "state"))
	e := &env{store: store, site: site, be: fake.New(), now: time.Now()}
	e.now = time.Now()
	task := baseTask()
	task.Workdir = b.TempDir()
	rec := &schema.RunRecord{RunID: "r-1", Site: "s", Backend: "sbatch", Task: task, CreatedAt: e.now,
		Attempts: []schema.Attempt{{N: 1, JobID: "1", SubmittedAt: e.now, Generation: 1}}}
	run, _ := store.CreateRun(rec)
	store.SetActive("r-1", "1", "s")
	e.be.Put(backends.JobStatus{ID: "1", State: backends.Running, Start: e.now})
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: site, Store: store, Engine: e.engine()}}, "bench", time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }() // stopped before its temp dirs go
	fraction := func() float64 {
		for _, r := range m.Metrics.Runs() {
			if r.Fraction != nil {
				return *r.Fraction
			}
		}
		return -1
	}
	for deadline := time.Now().Add(5 * time.Second); len(m.Metrics.Runs()) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("the monitor's first cycle did not show the run within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	waitWatched(b, 5*time.Second, run.Dir) // status-file writes are seen
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		f := float64(i%100) / 100
		if f == fraction() {
			f += 0.001
		}
		t0 := time.Now()
		rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f})
		for fraction() != f {
			if time.Since(t0) > 5*time.Second {
				b.Fatalf("metric did not change within 5s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		d := time.Since(t0)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-write-to-metric")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-worst")
}
