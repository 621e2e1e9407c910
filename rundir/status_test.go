package rundir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

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
		if a.Message != r.Summary.Message || !maps.Equal(a.Results, r.Summary.Results) || !slices.Equal(a.Truncated, r.Summary.Truncated) {
			t.Fatalf("split read differs: message %q/%q results %v/%v truncated %v/%v", a.Message, r.Summary.Message, a.Results, r.Summary.Results, a.Truncated, r.Summary.Truncated)
		}
		if len(a.Message) > MaxMessage || len(a.Results) > MaxResults {
			t.Fatalf("over the limits: message %d bytes, %d results", len(a.Message), len(a.Results))
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

// A line longer than MaxLine is skipped and counted once, whether it
// arrives whole or in pieces across Updates, and is never held whole: a
// 64 MB line (a sparse file: no disk) costs the reader about one MaxLine
// of buffer, not the line.
func TestStatusReaderOverlongLine(t *testing.T) {
	dir := t.TempDir()
	ts := `"2026-01-01T00:00:00Z"`
	hb := `{"v":1,"ts":` + ts + `,"type":"heartbeat"}` + "\n"
	p := filepath.Join(dir, "status.jsonl")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(hb)
	const long = 64 << 20
	if err := f.Truncate(int64(len(hb)) + long); err != nil { // 64 MB of NULs, no newline
		t.Fatal(err)
	}
	f.Seek(0, io.SeekEnd)
	f.WriteString("\n" + hb + `{"v":1,"ts":` + ts + `,"type":"progress","fraction":0.5,"message":"` + strings.Repeat("x", MaxLine) + `"}` + "\n" + hb)
	f.Close()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := ReadStatus(p)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if s.Events != 3 || s.Bad != 2 || s.Fraction != nil {
		t.Errorf("events=%d bad=%d fraction=%v, want 3, 2 (the NULs and the line over MaxLine) and none", s.Events, s.Bad, s.Fraction)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*MaxLine {
		t.Errorf("reading a file with a %d MB line allocated %d MB", long>>20, alloc>>20)
	}

	// The same bytes appended in pieces, an Update after each.
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "pieces.jsonl")
	w, err := os.Create(q)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := StatusReader{Path: q}
	steps := []int{1, 100, 70_000, MaxLine - 3, MaxLine + 5, 3 * MaxLine, 12_345}
	for off, i := 0, 0; off < len(data); i++ {
		end := min(off+steps[i%len(steps)], len(data))
		w.Write(data[off:end])
		off = end
		if _, err := r.Update(); err != nil {
			t.Fatal(err)
		}
	}
	if r.Summary.Events != s.Events || r.Summary.Bad != s.Bad {
		t.Errorf("read in pieces: events=%d bad=%d, whole: %d and %d", r.Summary.Events, r.Summary.Bad, s.Events, s.Bad)
	}
}

// Messages and results are kept within their limits, and the Summary
// says what was cut.
func TestStatusReaderCaps(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status.jsonl")
	// a message over MaxMessage whose cut falls inside a 3-byte character
	long := strings.Repeat("a", MaxMessage-len("…")-1) + strings.Repeat("€", 100)
	many := map[string]string{}
	for i := 0; i < MaxResults+6; i++ {
		many[fmt.Sprintf("k%03d", i)] = "v"
	}
	for _, ev := range []schema.Event{
		{Type: schema.EventResult, Results: map[string]string{"path": "/data/out", "big": "x"}},
		{Type: schema.EventProgress, Fraction: ptr(0.5), Message: long},
		{Type: schema.EventCheckpoint, Fraction: ptr(0.6), Resume: "step=6", Message: long, Results: map[string]string{"c": "d"}},
	} {
		if err := AppendEvent(p, ev); err != nil {
			t.Fatal(err)
		}
	}
	r := StatusReader{Path: p}
	if _, err := r.Update(); err != nil {
		t.Fatal(err)
	}
	s := r.Summary
	if len(s.Message) > MaxMessage || !strings.HasSuffix(s.Message, "…") || !utf8.ValidString(s.Message) || !strings.HasPrefix(long, strings.TrimSuffix(s.Message, "…")) {
		t.Errorf("message of %d bytes, valid UTF-8 %v: want at most %d, a prefix of the Task's, ending in …", len(s.Message), utf8.ValidString(s.Message), MaxMessage)
	}
	if s.Checkpoint == nil || s.Checkpoint.Message != s.Message || s.Checkpoint.Results != nil || s.Resumable.Resume != "step=6" {
		t.Errorf("checkpoint kept as %+v", s.Checkpoint)
	}
	if !slices.Equal(s.Truncated, []string{TruncatedMessage}) || len(s.Results) != 2 {
		t.Errorf("truncated %v results %v, want [message] and both results", s.Truncated, s.Results)
	}

	// A short message replaces the cut one; results over their limits are
	// left out, a value that grew over its limit takes the old one along.
	for _, ev := range []schema.Event{
		{Type: schema.EventMessage, Message: "short"},
		{Type: schema.EventResult, Results: map[string]string{"big": strings.Repeat("x", MaxResultValue+1), strings.Repeat("k", MaxResultKey+1): "v", "ok": strings.Repeat("y", MaxResultValue)}},
	} {
		AppendEvent(p, ev)
	}
	r.Update()
	s = r.Summary
	if s.Message != "short" || !slices.Equal(s.Truncated, []string{TruncatedResults}) {
		t.Errorf("message %q truncated %v, want short and [results]", s.Message, s.Truncated)
	}
	if _, ok := s.Results["big"]; ok || len(s.Results) != 2 || s.Results["path"] != "/data/out" || len(s.Results["ok"]) != MaxResultValue {
		t.Errorf("results %d keys, big kept %v", len(s.Results), ok)
	}
	// At most MaxResults keys: the new ones are taken in key order, so
	// every read keeps the same; known keys are still updated.
	AppendEvent(p, schema.Event{Type: schema.EventResult, Results: many})
	AppendEvent(p, schema.Event{Type: schema.EventResult, Results: map[string]string{"path": "/data/new"}})
	r.Update()
	if len(r.Summary.Results) != MaxResults || r.Summary.Results["k000"] != "v" || r.Summary.Results["k061"] != "v" || r.Summary.Results["k062"] != "" || r.Summary.Results["path"] != "/data/new" {
		t.Errorf("%d results kept, want %d: %v", len(r.Summary.Results), MaxResults, r.Summary.Results)
	}
	again, _ := ReadStatus(p)
	if !maps.Equal(again.Results, r.Summary.Results) || !slices.Equal(again.Truncated, r.Summary.Truncated) {
		t.Errorf("a second read keeps other results: %v, %v", again.Results, again.Truncated)
	}
}
