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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) // made with the run's mode at CreateRun
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
	Old           int // valid events of an earlier generation, ignored (see StatusReader.FromAttempt)
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
//
// status.jsonl is shared by every attempt of a run, also across
// generations (a key reused after a failed run starts a new generation in
// the same run directory). FromAttempt and Since keep the events of
// earlier generations out of the Summary, all event types alike (so
// heartbeats, progress, checkpoints and results agree on the generation):
// an event that carries an attempt number counts when it is at least
// FromAttempt; an event without one counts when its ts is not before
// Since. Zero values turn the filters off. EvidenceWindow computes both
// from run.json. Changing either field makes the next Update read the
// file again from the start with the new window.
type StatusReader struct {
	Path        string
	FromAttempt int
	Since       time.Time
	off         int64
	win         window // the window Summary was built with
	Summary     Summary
}

// window is which events count.
type window struct {
	from  int
	since time.Time
}

func (w window) counts(ev *schema.Event) bool {
	if ev.Attempt > 0 {
		return ev.Attempt >= w.from
	}
	return w.since.IsZero() || !ev.TS.Before(w.since)
}

// Update reads new lines; changed reports whether the Summary changed
// (events were added, or a new window dropped some).
func (r *StatusReader) Update() (changed bool, err error) {
	reset := false
	if w := (window{r.FromAttempt, r.Since}); w.from != r.win.from || !w.since.Equal(r.win.since) {
		reset = r.off > 0 || r.Summary.Events > 0 || r.Summary.Bad > 0 || r.Summary.Old > 0
		r.off, r.Summary, r.win = 0, Summary{}, w
	}
	if fi, err := os.Stat(r.Path); err == nil && fi.Size() == r.off && r.off > 0 {
		return reset, nil // nothing appended (one stat, no open)
	} else if errors.Is(err, os.ErrNotExist) {
		return reset, nil
	}
	f, err := os.Open(r.Path)
	if errors.Is(err, os.ErrNotExist) {
		return reset, nil
	}
	if err != nil {
		return reset, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return reset, err
	}
	if fi.Size() < r.off { // truncated or replaced: start again
		r.off = 0
		r.Summary = Summary{}
		reset = true
	}
	if fi.Size() == r.off {
		return reset, nil
	}
	buf := make([]byte, fi.Size()-r.off)
	n, err := f.ReadAt(buf, r.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return reset, err
	}
	buf = buf[:n]
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		if len(buf) > maxLine { // an endless garbage line: skip it
			r.off += int64(len(buf))
			r.Summary.Bad++
		}
		return reset, nil
	}
	r.off += int64(end + 1)
	before := r.Summary.Events
	for _, line := range bytes.Split(buf[:end], []byte{'\n'}) {
		r.Summary.add(line, r.win)
	}
	return reset || r.Summary.Events != before, nil
}

// EvidenceWindow returns the StatusReader window of the run's current
// generation: the number of its first attempt, and the earliest ts an
// event without an attempt number may carry (GenerationStart). In the
// first generation status.jsonl holds nothing older, so since is zero there:
// a compute node whose clock lags the login node's loses no events. A
// record without attempts gives (0, zero time): no filter.
func EvidenceWindow(rec *schema.RunRecord) (fromAttempt int, since time.Time) {
	first, since, earlier := generation(rec)
	if first == nil {
		return 0, time.Time{}
	}
	if !earlier {
		since = time.Time{}
	}
	return first.N, since
}

// GenerationStart is the earliest time evidence of the run's current
// generation may date from: output files' mtimes (monitor.Weigh) and, after
// the first generation, untagged status events (EvidenceWindow).
//
// It is the generation's first attempt's SubmittedAt (recorded before the
// job is submitted, so nothing the job writes is older) less ClockSlack,
// for coarse filesystem mtimes (1-2 s on some filesystems, NFS times set by
// the server's clock) and clock skew between the login and compute nodes.
// When the previous generation ended (its last attempt's EndedAt) later
// than that, the end is used instead, up to SubmittedAt: everything of the
// earlier generation was written before it was decided, so a generation
// started within ClockSlack of the old one's decision does not count the
// old evidence. Zero when unknown (no attempts, no SubmittedAt).
func GenerationStart(rec *schema.RunRecord) time.Time {
	_, since, _ := generation(rec)
	return since
}

// generation finds the current generation's first attempt, its start less
// the allowances, and whether an earlier generation exists.
func generation(rec *schema.RunRecord) (first *schema.Attempt, since time.Time, earlier bool) {
	cur := rec.Current()
	if cur == nil {
		return nil, time.Time{}, false
	}
	var prevEnd time.Time
	for i := range rec.Attempts {
		a := &rec.Attempts[i]
		switch {
		case a.Generation == cur.Generation:
			if first == nil {
				first = a
			}
		case a.Generation < cur.Generation:
			earlier = true
			if a.EndedAt != nil && a.EndedAt.After(prevEnd) {
				prevEnd = *a.EndedAt
			}
		}
	}
	start := first.SubmittedAt
	if start.IsZero() {
		return first, time.Time{}, earlier
	}
	since = start.Add(-ClockSlack)
	if prevEnd.After(since) {
		since = prevEnd
	}
	if since.After(start) {
		since = start
	}
	return first, since, earlier
}

// ClockSlack is how much older than its generation's start evidence may
// look and still count (see GenerationStart).
const ClockSlack = 2 * time.Second

// ReadStatus reads a whole status file.
func ReadStatus(path string) (Summary, error) {
	r := StatusReader{Path: path}
	_, err := r.Update()
	return r.Summary, err
}

func (s *Summary) add(line []byte, w window) {
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
	if !w.counts(&ev) {
		s.Old++
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
