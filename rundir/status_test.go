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
