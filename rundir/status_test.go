package rundir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tether-hpc/tether/schema"
)

func ptr[T any](v T) *T { return &v }

func TestStatusReaderSurvivesGarbageAndTornLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.jsonl")
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339Nano)
	lines := []string{
		`{"v":1,"ts":"` + ts + `","type":"progress","fraction":0.25,"message":"quarter"}`,
		`this is not json`,
		`{"v":1,"ts":"` + ts + `","type":"checkpoint","fraction":0.5,"resume":"s=5","paths":["/a"]}`,
		`{"v":1,"ts":"` + ts + `","type":"progress","fraction":7}`, // out of range
		`{"v":1,"ts":"` + ts + `","type":"teleport"}`,              // unknown type
		`{"ts":"` + ts + `","type":"heartbeat"}`,                   // no version
		`{"v":1,"type":"heartbeat"}`,                               // no time
		"\x00\x01\x02",
		`{"v":1,"ts":"` + ts + `","type":"result","results":{"rows":"12"}}`,
	}
	data := []byte(lines[0] + "\n" + lines[1] + "\n" + lines[2] + "\n" + lines[3] + "\n" + lines[4] + "\n" + lines[5] + "\n" + lines[6] + "\n" + lines[7] + "\n" + lines[8] + "\n")
	// a torn last line, still being written
	data = append(data, []byte(`{"v":1,"ts":"`+ts+`","type":"checkpoint","fra`)...)
	os.WriteFile(p, data, 0o644)
	r := StatusReader{Path: p}
	if _, err := r.Update(); err != nil {
		t.Fatal(err)
	}
	s := r.Summary
	if s.Events != 3 || s.Bad != 6 {
		t.Errorf("events=%d bad=%d, want 3 and 6", s.Events, s.Bad)
	}
	if s.Checkpoint == nil || *s.Checkpoint.Fraction != 0.5 || s.Resumable.Resume != "s=5" || s.Results["rows"] != "12" || s.Message != "quarter" {
		t.Errorf("summary wrong: %+v", s)
	}
	// The torn line is completed by its writer: the reader picks it up.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`ction":0.75}` + "\n")
	f.Close()
	if changed, _ := r.Update(); !changed || *r.Summary.Checkpoint.Fraction != 0.75 {
		t.Errorf("completed line not read: %+v", r.Summary.Checkpoint)
	}
	// A writer killed mid-line leaves it torn; the next append starts on a new line.
	f, _ = os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"v":1,"ts":"` + ts + `","ty`)
	f.Close()
	if err := AppendEvent(p, schema.Event{Type: schema.EventHeartbeat}); err != nil {
		t.Fatal(err)
	}
	r.Update()
	if r.Summary.LastHeartbeat.IsZero() || r.Summary.Bad != 7 {
		t.Errorf("event after a torn line lost: hb=%v bad=%d", r.Summary.LastHeartbeat, r.Summary.Bad)
	}
}

func TestReadStatusMissingFile(t *testing.T) {
	s, err := ReadStatus(filepath.Join(t.TempDir(), "none"))
	if err != nil || s.Events != 0 {
		t.Errorf("missing file: %+v %v", s, err)
	}
}

// Concurrent writers, goroutines and separate processes, never corrupt a line.
func TestConcurrentAppend(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.jsonl")
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				msg := fmt.Sprintf("w%d-%d-%s", w, i, bytes.Repeat([]byte("x"), 3000)) // > PIPE_BUF
				if err := AppendEvent(p, schema.Event{Type: schema.EventProgress, Fraction: ptr(0.5), Message: msg, Rank: ptr(w)}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	// and other processes at the same time
	procs := 4
	for i := 0; i < procs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAppend$")
			cmd.Env = append(os.Environ(), "RUNDIR_HELPER_FILE="+p, "RUNDIR_HELPER_N="+strconv.Itoa(each))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("helper: %v\n%s", err, out)
			}
		}(i)
	}
	wg.Wait()
	s, err := ReadStatus(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := (writers + procs) * each; s.Events != want || s.Bad != 0 {
		t.Errorf("events=%d bad=%d, want %d and 0", s.Events, s.Bad, want)
	}
}

func TestHelperAppend(t *testing.T) {
	p := os.Getenv("RUNDIR_HELPER_FILE")
	if p == "" {
		return // only runs as a child of TestConcurrentAppend
	}
	n, _ := strconv.Atoi(os.Getenv("RUNDIR_HELPER_N"))
	for i := 0; i < n; i++ {
		if err := AppendEvent(p, schema.Event{Type: schema.EventHeartbeat, Message: string(bytes.Repeat([]byte("y"), 5000))}); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzStatusReader: any bytes, read in any split, give a summary and no
// panic; splitting the reads never changes what is counted.
func FuzzStatusReader(f *testing.F) {
	ts := `"2026-01-01T00:00:00Z"`
	f.Add([]byte(`{"v":1,"ts":`+ts+`,"type":"checkpoint","fraction":0.5,"resume":"x"}`+"\n"+`garbage`+"\n"), 10)
	f.Add([]byte(`{"v":1,"ts":`+ts+`,"type":"result","results":{"a":"b"}}`+"\n{\"v\":1"), 3)
	f.Add([]byte("\n\n\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		dir := t.TempDir()
		whole := filepath.Join(dir, "whole")
		os.WriteFile(whole, data, 0o644)
		a, err := ReadStatus(whole)
		if err != nil {
			t.Fatal(err)
		}
		parts := filepath.Join(dir, "parts")
		if split < 0 {
			split = -split
		}
		if len(data) > 0 {
			split %= len(data) + 1
		} else {
			split = 0
		}
		os.WriteFile(parts, data[:split], 0o644)
		r := StatusReader{Path: parts}
		r.Update()
		f, _ := os.OpenFile(parts, os.O_APPEND|os.O_WRONLY, 0)
		f.Write(data[split:])
		f.Close()
		r.Update()
		if a.Events != r.Summary.Events || a.Bad != r.Summary.Bad {
			t.Fatalf("split read differs: whole %d/%d, split %d/%d", a.Events, a.Bad, r.Summary.Events, r.Summary.Bad)
		}
		if a.Fraction != nil && (*a.Fraction < 0 || *a.Fraction > 1) {
			t.Fatalf("fraction out of range: %v", *a.Fraction)
		}
		if a.Checkpoint != nil {
			if _, err := json.Marshal(a.Checkpoint); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A key reused after a failed run starts a new generation in the same run
// directory: status.jsonl keeps the old generation's events, which must
// not count for the new one.
func TestStatusReaderIgnoresEarlierGenerations(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.jsonl")
	gen2 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return gen2.Add(d) }
	// generation 1 (attempt 1): checkpoint 0.9, heartbeats, a result, an
	// untagged progress line written by the Task itself
	for _, ev := range []schema.Event{
		{TS: at(-time.Hour), Type: schema.EventHeartbeat, Attempt: 1},
		{TS: at(-time.Hour), Type: schema.EventProgress, Fraction: ptr(0.5), Message: "old progress"},
		{TS: at(-time.Hour), Type: schema.EventCheckpoint, Attempt: 1, Fraction: ptr(0.9), Resume: "step=9", Paths: []string{"/old"}},
		{TS: at(-time.Hour), Type: schema.EventResult, Attempt: 1, Results: map[string]string{"rows": "9", "old": "x"}},
		// generation 2 (attempt 2)
		{TS: at(time.Second), Type: schema.EventHeartbeat, Attempt: 2},
		{TS: at(2 * time.Second), Type: schema.EventMessage, Message: "new, untagged"},
		{TS: at(3 * time.Second), Type: schema.EventResult, Attempt: 2, Results: map[string]string{"rows": "1"}},
	} {
		if err := AppendEvent(p, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Without a window everything counts (this is the stale evidence).
	all, err := ReadStatus(p)
	if err != nil {
		t.Fatal(err)
	}
	if all.Events != 7 || all.Checkpoint == nil {
		t.Fatalf("unfiltered: events=%d checkpoint=%v", all.Events, all.Checkpoint)
	}

	r := StatusReader{Path: p, FromAttempt: 2, Since: gen2}
	if _, err := r.Update(); err != nil {
		t.Fatal(err)
	}
	s := r.Summary
	if s.Checkpoint != nil || s.Resumable != nil || s.Fraction != nil {
		t.Errorf("generation 1's checkpoint counted: checkpoint=%+v resumable=%+v fraction=%v", s.Checkpoint, s.Resumable, s.Fraction)
	}
	if s.Events != 3 || s.Old != 4 || s.Bad != 0 {
		t.Errorf("events=%d old=%d bad=%d, want 3, 4 and 0", s.Events, s.Old, s.Bad)
	}
	if !s.LastHeartbeat.Equal(at(time.Second)) || !s.LastActivity.Equal(at(3*time.Second)) {
		t.Errorf("heartbeat %v, activity %v: want generation 2's", s.LastHeartbeat, s.LastActivity)
	}
	if s.Message != "new, untagged" || len(s.Results) != 1 || s.Results["rows"] != "1" {
		t.Errorf("message %q results %v: want generation 2's only", s.Message, s.Results)
	}

	// Appended later: a stray line of attempt 1 still does not count, an
	// untagged one older than Since neither; attempt 2's checkpoint does.
	AppendEvent(p, schema.Event{TS: at(4 * time.Second), Type: schema.EventCheckpoint, Attempt: 1, Fraction: ptr(0.95)})
	AppendEvent(p, schema.Event{TS: at(-time.Millisecond), Type: schema.EventCheckpoint, Fraction: ptr(0.96)})
	if changed, _ := r.Update(); changed || r.Summary.Checkpoint != nil || r.Summary.Old != 6 {
		t.Errorf("stray old lines: changed=%v checkpoint=%+v old=%d", changed, r.Summary.Checkpoint, r.Summary.Old)
	}
	AppendEvent(p, schema.Event{TS: at(5 * time.Second), Type: schema.EventCheckpoint, Attempt: 2, Fraction: ptr(0.2)})
	AppendEvent(p, schema.Event{TS: at(6 * time.Second), Type: schema.EventProgress, Fraction: ptr(0.3)})
	if changed, _ := r.Update(); !changed || r.Summary.Checkpoint == nil || *r.Summary.Checkpoint.Fraction != 0.2 || *r.Summary.Fraction != 0.3 {
		t.Errorf("generation 2's checkpoint: changed=%v %+v fraction=%v", changed, r.Summary.Checkpoint, r.Summary.Fraction)
	}
}

// A reader that was built before the window was known (or for the previous
// generation) reads the file again when the window changes.
func TestStatusReaderWindowChangeRereads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.jsonl")
	gen2 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	AppendEvent(p, schema.Event{TS: gen2.Add(-time.Minute), Type: schema.EventCheckpoint, Attempt: 1, Fraction: ptr(0.9)})
	AppendEvent(p, schema.Event{TS: gen2.Add(-time.Minute), Type: schema.EventHeartbeat})
	AppendEvent(p, schema.Event{TS: gen2.Add(time.Second), Type: schema.EventHeartbeat, Attempt: 2})
	r := StatusReader{Path: p}
	r.Update()
	if r.Summary.Checkpoint == nil || r.Summary.Events != 3 {
		t.Fatalf("no window: %+v", r.Summary)
	}
	r.FromAttempt, r.Since = 2, gen2
	changed, err := r.Update()
	if err != nil || !changed {
		t.Fatalf("window change: changed=%v err=%v", changed, err)
	}
	if r.Summary.Checkpoint != nil || r.Summary.Events != 1 || r.Summary.Old != 2 || !r.Summary.LastHeartbeat.Equal(gen2.Add(time.Second)) {
		t.Errorf("after the window change: %+v", r.Summary)
	}
	if changed, _ := r.Update(); changed {
		t.Errorf("same window, nothing appended: changed")
	}
}

func TestEvidenceWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ended := func(d time.Duration) *time.Time { e := t0.Add(d); return &e }
	none := time.Time{}
	cases := []struct {
		name  string
		rec   schema.RunRecord
		from  int
		since time.Time // EvidenceWindow's
		start time.Time // GenerationStart
	}{
		{"no attempts", schema.RunRecord{}, 0, none, none},
		{"one generation with a retry: no event filter", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0, EndedAt: ended(time.Hour)},
			{N: 2, Generation: 1, SubmittedAt: t0.Add(time.Hour)},
		}}, 1, none, t0.Add(-ClockSlack)},
		{"second generation long after the first", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0.Add(-2 * time.Hour), EndedAt: ended(-time.Hour)},
			{N: 2, Generation: 2, SubmittedAt: t0, EndedAt: ended(time.Minute)},
			{N: 3, Generation: 2, SubmittedAt: t0.Add(time.Minute)},
		}}, 2, t0.Add(-ClockSlack), t0.Add(-ClockSlack)},
		{"second generation right after the first was decided", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0.Add(-time.Minute), EndedAt: ended(-500 * time.Millisecond)},
			{N: 2, Generation: 2, SubmittedAt: t0},
		}}, 2, t0.Add(-500 * time.Millisecond), t0.Add(-500 * time.Millisecond)},
		{"previous end after the start (clock step): capped at the start", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0.Add(-time.Minute), EndedAt: ended(time.Second)},
			{N: 2, Generation: 2, SubmittedAt: t0},
		}}, 2, t0, t0},
		{"previous generation never recorded its end", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0.Add(-time.Minute)},
			{N: 2, Generation: 2, SubmittedAt: t0},
		}}, 2, t0.Add(-ClockSlack), t0.Add(-ClockSlack)},
		{"third generation", schema.RunRecord{Attempts: []schema.Attempt{
			{N: 1, Generation: 1, SubmittedAt: t0.Add(-time.Hour), EndedAt: ended(-50 * time.Minute)},
			{N: 2, Generation: 2, SubmittedAt: t0.Add(-time.Minute), EndedAt: ended(-1500 * time.Millisecond)},
			{N: 3, Generation: 3, SubmittedAt: t0},
		}}, 3, t0.Add(-1500 * time.Millisecond), t0.Add(-1500 * time.Millisecond)},
	}
	for _, c := range cases {
		from, since := EvidenceWindow(&c.rec)
		if from != c.from || !since.Equal(c.since) {
			t.Errorf("%s: EvidenceWindow (%d, %v), want (%d, %v)", c.name, from, since, c.from, c.since)
		}
		if start := GenerationStart(&c.rec); !start.Equal(c.start) {
			t.Errorf("%s: GenerationStart %v, want %v", c.name, start, c.start)
		}
	}
}
