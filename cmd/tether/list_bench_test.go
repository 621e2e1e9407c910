package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// synthRuns fills a local site's state directory with n runs, active of
// them in the active index (with job ids the local backend does not know),
// the rest decided.
func synthRuns(tb testing.TB, stateDir string, n, active int) {
	store, err := rundir.Open(stateDir)
	if err != nil {
		tb.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exit0 := 0
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Second)
		id := rundir.NewRunID("syn", at)
		ended := at.Add(time.Minute)
		rec := &schema.RunRecord{RunID: id, Site: "local", Backend: "local", SpecHash: "x", CreatedAt: at,
			Task:     schema.Task{Name: "syn", Command: []string{"true"}},
			Attempts: []schema.Attempt{{N: 1, JobID: fmt.Sprint(1000000 + i), SubmittedAt: at, Reason: "first attempt", Generation: 1}}}
		if i%10 == 0 {
			rec.Key = fmt.Sprintf("dag/run-%d/task", i)
		}
		live := i >= n-active
		if !live {
			rec.Attempts[0].EndedAt, rec.Attempts[0].State, rec.Attempts[0].ExitCode = &ended, "COMPLETED", &exit0
		}
		run, err := store.CreateRun(rec)
		if err != nil {
			tb.Fatal(err)
		}
		if live {
			if err := store.SetActive(id, rec.Attempts[0].JobID, "local"); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		o := schema.Outcome{V: schema.OutcomeVersion, RunID: id, JobID: rec.Attempts[0].JobID, Site: "local", Backend: "local",
			Outcome: "succeeded", Final: true, Proceed: true, Reason: "completed with exit code 0", ExitCode: &exit0,
			Attempts: 1, RunDir: run.Dir, DecidedAt: &ended}
		b, _ := json.Marshal(o)
		// not WriteOutcome: 100,000 fsyncs would take minutes
		if err := os.WriteFile(run.OutcomeFile(), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkList100k: `tether list` over 100,000 runs, 1,000 of them active
// (target under 200 ms). cold-ms is the first list, which reads every
// run.json and writes the listing cache; ms/list the lists after it.
func BenchmarkList100k(b *testing.B) {
	dir := b.TempDir()
	synthRuns(b, filepath.Join(dir, "state", "tether"), 100_000, 1_000)
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+dir)
	list := func(args ...string) time.Duration {
		cmd := exec.Command(tetherBin, append([]string{"list"}, args...)...)
		cmd.Env, cmd.Dir = env, dir
		start := time.Now()
		out, err := cmd.Output()
		d := time.Since(start)
		if err != nil || len(out) < 100_000 {
			b.Fatalf("tether list: %v (%d bytes)", err, len(out))
		}
		return d
	}
	cold := list()
	var text, js time.Duration
	for b.Loop() {
		text += list()
		js += list("--json")
	}
	b.ReportMetric(float64(cold.Milliseconds()), "cold-ms")
	b.ReportMetric(float64(text.Milliseconds())/float64(b.N), "ms/list")
	b.ReportMetric(float64(js.Milliseconds())/float64(b.N), "ms/list-json")
	b.ReportMetric(0, "ns/op")
}
