package monitor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func fptr(f float64) *float64 { return &f }

// writeAt writes a file and sets its mtime.
func writeAt(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// twoGenerations is a run whose first generation (attempt 1) failed an
// hour ago; the second started at start.
func twoGenerations(start time.Time) *schema.RunRecord {
	ended := start.Add(-time.Hour)
	return &schema.RunRecord{Attempts: []schema.Attempt{
		{N: 1, Generation: 1, SubmittedAt: start.Add(-2 * time.Hour), EndedAt: &ended, State: "FAILED"},
		{N: 2, Generation: 2, SubmittedAt: start},
	}}
}

// The reproduction: generation 1 checkpoints 0.9 and exits 1; the same key
// runs again and times out without a checkpoint of its own. The old
// checkpoint must not make the new generation partial.
func TestWeighIgnoresCheckpointOfEarlierGeneration(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "status.jsonl")
	start := time.Now().UTC().Add(-time.Minute)
	rec := twoGenerations(start)
	rec.Task = schema.Task{Workdir: dir, Proceed: schema.Proceed{OnTimeout: "checkpoint", MinFraction: 0.5}}
	for _, ev := range []schema.Event{
		{TS: start.Add(-90 * time.Minute), Type: schema.EventCheckpoint, Attempt: 1, Fraction: fptr(0.9), Resume: "step=9"},
		{TS: start.Add(-90 * time.Minute), Type: schema.EventCheckpoint, Fraction: fptr(0.9)}, // untagged, appended by the Task
		{TS: start.Add(time.Second), Type: schema.EventHeartbeat, Attempt: 2},
	} {
		if err := rundir.AppendEvent(status, ev); err != nil {
			t.Fatal(err)
		}
	}
	r := rundir.StatusReader{Path: status}
	r.FromAttempt, r.Since = rundir.EvidenceWindow(rec)
	if _, err := r.Update(); err != nil {
		t.Fatal(err)
	}
	ev := Weigh(r.Summary, &rec.Task, r.Since)
	if ev.Satisfied || ev.Fraction != nil || ev.Resume != "" {
		t.Fatalf("generation 1's checkpoint counted for generation 2: %+v", ev)
	}
	if !strings.Contains(ev.Why, "no checkpoint") {
		t.Errorf("why = %q", ev.Why)
	}
	// generation 2's own checkpoint counts
	rundir.AppendEvent(status, schema.Event{TS: start.Add(2 * time.Second), Type: schema.EventCheckpoint, Attempt: 2, Fraction: fptr(0.6)})
	r.Update()
	if ev := Weigh(r.Summary, &rec.Task, r.Since); !ev.Satisfied || *ev.Fraction != 0.6 {
		t.Errorf("generation 2's checkpoint: %+v", ev)
	}
}

func TestWeighRequireOutputsOnlyFromThisGeneration(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	rec := twoGenerations(start)
	rec.Task = schema.Task{Workdir: dir, Proceed: schema.Proceed{OnTimeout: "checkpoint", RequireOutputs: []string{"out/*.dat", "summary.csv"}}}
	since := rundir.GenerationStart(rec)
	sum := rundir.Summary{}

	// Outputs of generation 1 exist; they prove nothing for generation 2.
	writeAt(t, filepath.Join(dir, "out", "part-0.dat"), start.Add(-90*time.Minute))
	writeAt(t, filepath.Join(dir, "summary.csv"), start.Add(-90*time.Minute))
	ev := Weigh(sum, &rec.Task, since)
	if ev.Satisfied {
		t.Fatalf("old outputs satisfied the policy: %+v", ev)
	}
	if !strings.Contains(ev.Why, `"out/*.dat" was written only before this generation started`) || !strings.Contains(ev.Why, `"summary.csv" was written only before this generation started`) {
		t.Errorf("why = %q", ev.Why)
	}
	// Without a generation start, existence is enough (as before).
	if ev := Weigh(sum, &rec.Task, time.Time{}); !ev.Satisfied {
		t.Errorf("zero since: %+v", ev)
	}

	// A new file for one glob; the other is still old.
	writeAt(t, filepath.Join(dir, "out", "part-1.dat"), start.Add(30*time.Second))
	if ev := Weigh(sum, &rec.Task, since); ev.Satisfied || strings.Contains(ev.Why, "out/*.dat") {
		t.Errorf("one glob fresh: %+v", ev)
	}
	// summary.csv rewritten within the clock allowance before the start
	// (coarse mtimes, a skewed file server) counts; older than that does not.
	writeAt(t, filepath.Join(dir, "summary.csv"), start.Add(-rundir.ClockSlack-time.Second))
	if ev := Weigh(sum, &rec.Task, since); ev.Satisfied {
		t.Errorf("mtime %s before the start counted: %+v", rundir.ClockSlack+time.Second, ev)
	}
	writeAt(t, filepath.Join(dir, "summary.csv"), start.Add(-rundir.ClockSlack+time.Second))
	if ev := Weigh(sum, &rec.Task, since); !ev.Satisfied || ev.Why != "required outputs exist" {
		t.Errorf("mtime within the allowance: %+v", ev)
	}

	// A missing output is still reported as missing.
	rec.Task.Proceed.RequireOutputs = append(rec.Task.Proceed.RequireOutputs, "never/*")
	if ev := Weigh(sum, &rec.Task, since); ev.Satisfied || !strings.Contains(ev.Why, `"never/*" does not exist`) {
		t.Errorf("missing output: %+v", ev)
	}
}

func TestWeighCheckpointPathsOnlyFromThisGeneration(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	rec := twoGenerations(start)
	rec.Task = schema.Task{Workdir: dir, Proceed: schema.Proceed{OnTimeout: "checkpoint", MinFraction: 0.5}}
	since := rundir.GenerationStart(rec)
	abs := filepath.Join(dir, "abs.ckpt")
	sum := rundir.Summary{Checkpoint: &schema.Event{Type: schema.EventCheckpoint, Attempt: 2, Fraction: fptr(0.7), Paths: []string{"rel.ckpt", abs}}}

	writeAt(t, filepath.Join(dir, "rel.ckpt"), start.Add(-90*time.Minute)) // left by generation 1
	writeAt(t, abs, start.Add(10*time.Second))
	ev := Weigh(sum, &rec.Task, since)
	if ev.Satisfied || !strings.Contains(ev.Why, "rel.ckpt was written before this generation started") || strings.Contains(ev.Why, "abs.ckpt") {
		t.Fatalf("old checkpoint path: %+v", ev)
	}
	writeAt(t, filepath.Join(dir, "rel.ckpt"), start.Add(20*time.Second))
	if ev := Weigh(sum, &rec.Task, since); !ev.Satisfied {
		t.Errorf("fresh checkpoint paths: %+v", ev)
	}
	os.Remove(abs)
	if ev := Weigh(sum, &rec.Task, since); ev.Satisfied || !strings.Contains(ev.Why, abs+" is missing") {
		t.Errorf("missing checkpoint path: %+v", ev)
	}
}

// In the first generation too, files from before the run (an earlier run
// in the same workdir) prove nothing.
func TestWeighFirstGenerationIgnoresOutputsFromBeforeTheRun(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	rec := &schema.RunRecord{Attempts: []schema.Attempt{{N: 1, Generation: 1, SubmittedAt: start}}}
	rec.Task = schema.Task{Workdir: dir, Proceed: schema.Proceed{OnTimeout: "checkpoint", RequireOutputs: []string{"result.txt"}}}
	writeAt(t, filepath.Join(dir, "result.txt"), start.Add(-24*time.Hour))
	if ev := Weigh(rundir.Summary{}, &rec.Task, rundir.GenerationStart(rec)); ev.Satisfied {
		t.Fatalf("yesterday's output counted: %+v", ev)
	}
	writeAt(t, filepath.Join(dir, "result.txt"), start.Add(time.Second))
	if ev := Weigh(rundir.Summary{}, &rec.Task, rundir.GenerationStart(rec)); !ev.Satisfied {
		t.Errorf("fresh output: %+v", ev)
	}
}
