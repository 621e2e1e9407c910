package rundir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/tether-hpc/tether/schema"
	"golang.org/x/sys/unix"
)

// The status file's limits: whatever a Task writes, a reader holds at
// most one line and one chunk in memory, and a Summary at most one
// message, the capped results and the latest checkpoints (each at most a
// line). What a limit cuts is counted (Bad) or named (Summary.Truncated,
// the outcome's "truncated"). README, "Status file limits".
const (
	// MaxLine bounds one status line. A longer line is skipped (never
	// read into memory whole) and counted as Bad.
	MaxLine = 1 << 20
	// MaxMessage bounds the message a Summary keeps: a longer one is cut
	// to its first MaxMessage bytes (at a character boundary) and ends
	// with "…".
	MaxMessage = 4 << 10
	// MaxResults, MaxResultKey and MaxResultValue bound the results: a
	// key longer than MaxResultKey bytes or with a value longer than
	// MaxResultValue bytes is left out (an earlier value of it too), and
	// so are new keys once MaxResults are kept.
	MaxResults     = 64
	MaxResultKey   = 256
	MaxResultValue = 4 << 10

	// readChunk is how much a reader reads at a time.
	readChunk = 64 << 10
)

// What Summary.Truncated names.
const (
	TruncatedMessage = "message"
	TruncatedResults = "results"
)

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
	// Their Message is cut as Summary's, their Results are left out.
	Checkpoint *schema.Event
	Resumable  *schema.Event
	Results    map[string]string
	// Truncated names what the limits cut: TruncatedMessage when Message
	// is cut, TruncatedResults once a result was left out. Nil when
	// nothing was.
	Truncated []string

	messageCut, resultsCut bool
}

// StatusReader reads a status file incrementally: each Update reads only
// what was appended since the last one. A trailing line without a newline
// is left for the next Update (it may still be being written). The file
// is read in chunks of 64 KiB (more only to complete a line, up to
// MaxLine), so memory stays bounded whatever the file holds.
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
	skip        bool   // inside a line longer than MaxLine: drop up to its newline
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

// UpToDate reports whether Update would read nothing: the window is the
// one the Summary was built with and the file (size bytes, from the
// caller's own stat) has not grown.
func (r *StatusReader) UpToDate(size int64) bool {
	return r.FromAttempt == r.win.from && r.Since.Equal(r.win.since) && size == r.off && r.off > 0
}

// Update reads new lines; changed reports whether the Summary changed
// (events were added, or a new window dropped some).
func (r *StatusReader) Update() (changed bool, err error) {
	reset := false
	if w := (window{r.FromAttempt, r.Since}); w.from != r.win.from || !w.since.Equal(r.win.since) {
		reset = r.off > 0 || r.Summary.Events > 0 || r.Summary.Bad > 0 || r.Summary.Old > 0
		r.off, r.skip, r.Summary, r.win = 0, false, Summary{}, w
	}
	var st syscall.Stat_t // not os.Stat: a look at a quiet file allocates nothing
	if err := syscall.Stat(r.Path, &st); err == nil && st.Size == r.off && r.off > 0 {
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
		r.off, r.skip = 0, false
		r.Summary = Summary{}
		reset = true
	}
	if fi.Size() == r.off {
		return reset, nil
	}
	before := r.Summary.Events
	err = r.read(f, fi.Size())
	r.Summary.truncated()
	return reset || r.Summary.Events != before, err
}

// read reads the file from r.off up to size in bounded chunks, adding
// each complete line to the Summary. r.off ends at the start of the
// unfinished last line, if any, which the next Update reads again.
func (r *StatusReader) read(f *os.File, size int64) error {
	buf := make([]byte, min(int64(readChunk), size-r.off))
	n := 0 // buf[:n] is the unfinished line at r.off
	for r.off+int64(n) < size {
		if n == len(buf) { // the unfinished line fills buf: grow it, up to MaxLine+1
			buf = append(buf, make([]byte, min(len(buf), MaxLine+1-len(buf)))...)
		}
		m, err := f.ReadAt(buf[n:min(int64(len(buf)), size-r.off)], r.off+int64(n))
		if m == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			return nil // shrank meanwhile: the next Update starts again
		}
		start := 0 // of the first line not yet added
		i := bytes.IndexByte(buf[n:n+m], '\n')
		if i >= 0 {
			i += n // buf[:n] holds no newline
		}
		n += m
		for i >= 0 {
			switch {
			case r.skip:
				r.skip = false // the end of an overlong line
			case i-start > MaxLine:
				r.Summary.Bad++
			default:
				r.Summary.add(buf[start:i], r.win)
			}
			start = i + 1
			if i = bytes.IndexByte(buf[start:n], '\n'); i >= 0 {
				i += start
			}
		}
		switch {
		case r.skip:
			start = n // still inside an overlong line
		case n-start > MaxLine:
			r.Summary.Bad++ // an overlong line: skip it, without keeping it
			r.skip, start = true, n
		}
		r.off += int64(start)
		n = copy(buf, buf[start:n])
	}
	return nil
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
	if json.Unmarshal(line, &ev) != nil || ev.V < 1 || ev.TS.IsZero() {
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
	cut := false
	if ev.Message != "" {
		ev.Message, cut = cutMessage(ev.Message)
		s.Message, s.messageCut = ev.Message, cut
	}
	switch ev.Type {
	case schema.EventHeartbeat:
		if ev.TS.After(s.LastHeartbeat) {
			s.LastHeartbeat = ev.TS
		}
	case schema.EventCheckpoint:
		e := ev
		e.Results = nil // a checkpoint's results are not results
		s.Checkpoint = &e
		if ev.Resume != "" {
			s.Resumable = &e
		}
	case schema.EventResult:
		if s.Results == nil {
			s.Results = map[string]string{}
		}
		if len(s.Results)+len(ev.Results) <= MaxResults {
			for k, v := range ev.Results {
				s.addResult(k, v)
			}
			break
		}
		for _, k := range slices.Sorted(maps.Keys(ev.Results)) { // the same keys left out on every read
			s.addResult(k, ev.Results[k])
		}
	}
}

// addResult keeps one result within the limits.
func (s *Summary) addResult(k, v string) {
	_, have := s.Results[k]
	switch {
	case len(k) > MaxResultKey || len(v) > MaxResultValue:
		delete(s.Results, k) // no stale value stays behind
		s.resultsCut = true
	case !have && len(s.Results) >= MaxResults:
		s.resultsCut = true
	default:
		s.Results[k] = v
	}
}

// cutMessage cuts a message to MaxMessage bytes at a character boundary
// and marks the cut with "…".
func cutMessage(m string) (string, bool) {
	if len(m) <= MaxMessage {
		return m, false
	}
	n := MaxMessage - len("…")
	for n > 0 && !utf8.RuneStart(m[n]) {
		n--
	}
	return m[:n] + "…", true
}

// truncated sets Truncated from what the limits cut.
func (s *Summary) truncated() {
	var t []string
	if s.messageCut {
		t = append(t, TruncatedMessage)
	}
	if s.resultsCut {
		t = append(t, TruncatedResults)
	}
	if !slices.Equal(t, s.Truncated) {
		s.Truncated = t
	}
}
