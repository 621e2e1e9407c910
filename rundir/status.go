package rundir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tether-hpc/tether/schema"
	"golang.org/x/sys/unix"
)

// maxLine bounds one status line; longer lines are skipped as garbage.
const maxLine = 1 << 20

// AppendEvent appends one event as a JSON line. Writers hold an flock while
// they append, so lines from concurrent writers (MPI ranks, several
// processes, NFS clients) never interleave; a torn last line left by a
// killed writer is closed with a newline first, so it costs only itself.
func AppendEvent(path string, ev schema.Event) error {
	if ev.V == 0 {
		ev.V = schema.EventVersion
	}
	if ev.TS.IsZero() {
		ev.TS = time.Now().UTC()
	}
	line, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open status file: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock status file: %w", err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(path); err == nil {
			if _, err := r.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
				line = append([]byte{'\n'}, line...)
			}
			r.Close()
		}
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("append to status file: %w", err)
	}
	return nil
}

// Summary is what the events of a status file say so far.
type Summary struct {
	Events        int
	Bad           int // lines that were not valid events
	LastActivity  time.Time
	LastHeartbeat time.Time
	Fraction      *float64 // latest progress or checkpoint fraction
	Message       string
	// Checkpoint is the latest checkpoint; Resumable the latest one that
	// can be resumed from.
	Checkpoint *schema.Event
	Resumable  *schema.Event
	Results    map[string]string
}

// StatusReader reads a status file incrementally: each Update reads only
// what was appended since the last one. A trailing line without a newline
// is left for the next Update (it may still be being written).
type StatusReader struct {
	Path    string
	off     int64
	Summary Summary
}

// Update reads new lines; changed reports whether any event was added.
func (r *StatusReader) Update() (changed bool, err error) {
	if fi, err := os.Stat(r.Path); err == nil && fi.Size() == r.off && r.off > 0 {
		return false, nil // nothing appended (one stat, no open)
	} else if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	f, err := os.Open(r.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() < r.off { // truncated or replaced: start again
		r.off = 0
		r.Summary = Summary{}
	}
	if fi.Size() == r.off {
		return false, nil
	}
	buf := make([]byte, fi.Size()-r.off)
	n, err := f.ReadAt(buf, r.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	buf = buf[:n]
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		if len(buf) > maxLine { // an endless garbage line: skip it
			r.off += int64(len(buf))
			r.Summary.Bad++
		}
		return false, nil
	}
	r.off += int64(end + 1)
	before := r.Summary.Events
	for _, line := range bytes.Split(buf[:end], []byte{'\n'}) {
		r.Summary.add(line)
	}
	return r.Summary.Events != before, nil
}

// ReadStatus reads a whole status file.
func ReadStatus(path string) (Summary, error) {
	r := StatusReader{Path: path}
	_, err := r.Update()
	return r.Summary, err
}

func (s *Summary) add(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	var ev schema.Event
	if len(line) > maxLine || json.Unmarshal(line, &ev) != nil || ev.V < 1 || ev.TS.IsZero() {
		s.Bad++
		return
	}
	if ev.Fraction != nil && (*ev.Fraction < 0 || *ev.Fraction > 1 || *ev.Fraction != *ev.Fraction) {
		s.Bad++
		return
	}
	switch ev.Type {
	case schema.EventHeartbeat, schema.EventProgress, schema.EventCheckpoint, schema.EventResult, schema.EventMessage:
	default:
		s.Bad++ // an event type from a newer tether, or garbage
		return
	}
	s.Events++
	if ev.TS.After(s.LastActivity) {
		s.LastActivity = ev.TS
	}
	if ev.Fraction != nil {
		f := *ev.Fraction
		s.Fraction = &f
	}
	if ev.Message != "" {
		s.Message = ev.Message
	}
	switch ev.Type {
	case schema.EventHeartbeat:
		if ev.TS.After(s.LastHeartbeat) {
			s.LastHeartbeat = ev.TS
		}
	case schema.EventCheckpoint:
		e := ev
		s.Checkpoint = &e
		if ev.Resume != "" {
			s.Resumable = &e
		}
	case schema.EventResult:
		if s.Results == nil {
			s.Results = map[string]string{}
		}
		for k, v := range ev.Results {
			s.Results[k] = v
		}
	}
}
