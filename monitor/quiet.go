package monitor

import (
	"hash/crc32"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// A monitor cycle looks at every active run; most of them have not
// changed since the last cycle. Every file of the run-directory protocol
// that a look reads for its presence or content — run.json and
// outcome.json in the run directory, started and exitcode in the attempt
// directory — is renamed into its directory by its writer (tether's
// atomic writes, the wrapper's mv), and a rename (or a create or a
// remove) changes the directory's mtime and ctime. So one stat of each
// directory stands in for the opens and stats of the files in it: a
// directory whose mark is the one seen before the last full read holds
// the same files. The mark is the inode and the ctime: every change of
// the mtime (utimes included) sets the ctime too, and no caller can set
// a ctime.
//
// Three guards keep a mark from hiding a change:
//   - settled: a mark younger than markSettle (by the real clock, since
//     it is the filesystem's clock that stamps it) is not trusted, so a
//     filesystem with coarse timestamps (1 s on Lustre and older ones)
//     cannot hide a second change within the same tick;
//   - every fullEvery looks the files are read in full anyway (staggered
//     per run, so a cycle never reads them all at once): a writer that
//     overwrote a file in place, or a skewed server clock, costs at most
//     that many cycles;
//   - a change of the scheduler's state for the job reads the attempt's
//     files in full, so evidence is never older than the state it
//     explains.
//
// The status file is appended, not renamed, so no directory mark shows
// its changes. A look reads it only when the decision can depend on it:
// the decision table weighs the Task's evidence only once the job has
// ended or left the scheduler, and an exit file or a changed state is a
// changed mark. On a quiet look (both marks unchanged, the scheduler
// still reporting the job pending or running, no cancel request) the
// status file is left to the monitor's watcher, which re-reads it on
// every inotify event, or every StatEvery where inotify cannot see other
// hosts' writes (daemon.go: refresh, statLoop), and to the full read
// every fullEvery looks. What the look shows (fraction, last sign of
// life) is then the watcher's latest read.

const (
	markSettle = 2 * time.Second
	fullEvery  = 8
)

// dirMark is a directory's identity and status-change time.
type dirMark struct {
	ino uint64
	chg int64 // ns
}

// stat stats a run's file or directory: by its name relative to the
// store's runs directory while a cycle holds that open (q.at; a shorter
// path walk than from /) and the name is known, else by its absolute
// path.
func (q *quiet) stat(abs, rel string, st *unix.Stat_t) error {
	if q.at >= 0 && rel != "" {
		return unix.Fstatat(int(q.at), rel, st, 0)
	}
	return unix.Stat(abs, st)
}

// markOfDir stats a directory; ok is false when it cannot (absent).
func (q *quiet) markOfDir(abs, rel string) (dirMark, bool) {
	var st unix.Stat_t
	if err := q.stat(abs, rel, &st); err != nil {
		return dirMark{}, false
	}
	return dirMark{ino: st.Ino, chg: st.Ctim.Nano()}, true
}

// OpenRuns opens a store's runs directory for the stats of one cycle
// (-1 when it cannot: stats use absolute paths then).
func OpenRuns(runsDir string) int {
	fd, err := unix.Open(runsDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// at sets the runs-directory descriptor of a cycle's look (-1: none).
func (t *Tracker) at(fd int) {
	if t.marks != nil {
		t.marks.at = int32(fd)
	}
}

// updateStatus reads what was appended to the status file: with marks,
// one stat (relative to the runs directory) tells that nothing was, and
// a quiet look (see above) reads nothing.
func (t *Tracker) updateStatus(quiet bool) (bool, error) {
	if q := t.marks; q != nil {
		if quiet && q.runOK {
			return false, nil
		}
		var st unix.Stat_t
		p := t.status.Path
		if err := q.stat(p, relName(t.run, p), &st); err == nil && t.status.UpToDate(st.Size) {
			return false, nil
		}
	}
	return t.status.Update()
}

func (d dirMark) settled(now time.Time) bool {
	return now.UnixNano()-d.chg >= int64(markSettle)
}

// quiet is a tracker's directory marks (nil: marks are off, every look
// reads the files).
type quiet struct {
	now func() time.Time // the filesystem's clock
	// at: the cycle's descriptor of the runs directory (-1 outside a
	// cycle's look); the run's names relative to it
	at    int32
	looks int32 // since the last full read of everything
	relN  int32
	attN  int32
	relAt string // the attempt directory's

	// the run directory: runOK is this look's verdict, runNext the mark
	// taken before this look's reads (committed once they succeeded)
	run, runNext dirMark
	// the attempt directory, with the scheduler state seen with it
	att      dirMark
	attState backends.State
	runValid bool
	runOK    bool
	// runChecked: by track, for the step that follows
	runChecked bool
	attValid   bool
	attKnown   bool
}

// UseMarks turns directory marks on for a tracker (the monitor's); now
// is the clock the filesystem's timestamps are compared with (nil:
// time.Now).
func (t *Tracker) UseMarks(runID string, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	t.marks = &quiet{now: now, looks: int32(crc32.ChecksumIEEE([]byte(runID)) % fullEvery), at: -1}
}

// relOf is a run's directory name relative to the store's runs directory
// (a part of run.Dir, no copy): "" when run.Dir does not end in its id.
func relOf(run rundir.Run) string {
	n := len(run.Dir) - len(run.ID)
	if run.ID == "" || n < 1 || run.Dir[n-1] != '/' || run.Dir[n:] != run.ID {
		return ""
	}
	return run.Dir[n:]
}

// relName is a path inside a run's directory relative to the store's
// runs directory (a part of abs, no copy): "" when it is not inside.
func relName(run rundir.Run, abs string) string {
	rel := relOf(run)
	if rel == "" || len(abs) <= len(run.Dir) || abs[len(run.Dir)] != '/' || abs[:len(run.Dir)] != run.Dir {
		return ""
	}
	return abs[len(run.Dir)-len(rel):]
}

func (q *quiet) reset() {
	if q != nil {
		q.runValid, q.attValid, q.runOK, q.runChecked = false, false, false, false
	}
}

// runUnchanged: this look found the run directory as it was at the last
// full read (run.json the same, still no outcome).
func (q *quiet) runUnchanged() bool { return q != nil && q.runOK }

// checkRun takes the run directory's mark for this look. The monitor's
// track calls it before the batched query; the step that follows uses
// that verdict instead of statting again (a run.json or outcome written
// in between is seen by act, which re-reads both under the lock).
func (t *Tracker) checkRun(run rundir.Run, forStep bool) {
	q := t.marks
	if q == nil {
		return
	}
	if forStep && q.runChecked {
		q.runChecked = false
		return
	}
	q.runChecked = !forStep
	if q.looks++; q.looks >= fullEvery {
		q.looks = 0
		q.runValid, q.attValid = false, false
	}
	m, ok := q.markOfDir(run.Dir, relOf(run))
	q.runNext = m
	q.runOK = ok && q.runValid && m == q.run && m.settled(q.now())
	if !q.runOK {
		q.runValid = false
	}
	if !ok {
		q.runNext = dirMark{}
	}
}

// commitRun: this look read run.json and found no outcome after taking
// the run directory's mark.
func (t *Tracker) commitRun() {
	if q := t.marks; q != nil && !q.runOK && q.runNext != (dirMark{}) {
		q.run, q.runValid = q.runNext, true
	}
}

// attemptFiles reads attempt n's exit and started files, or keeps what
// the last read found when the attempt directory's mark and the
// scheduler's state are unchanged (kept is true then). Without the
// attempt directory there is neither file.
func (t *Tracker) attemptFiles(run rundir.Run, n int, state backends.State, known bool) (exit *schema.ExitFile, started *schema.Started, kept bool, err error) {
	q := t.marks
	if q == nil {
		exit, err := t.exitFile(run, n)
		return exit, t.startedFile(run, n), false, err
	}
	if int(q.relN) != n || q.relAt == "" {
		q.relAt, q.relN = "", int32(n)
		if rel := relOf(run); rel != "" {
			q.relAt = rel + "/attempts/" + strconv.Itoa(n)
		}
	}
	abs := ""
	if q.at < 0 || q.relAt == "" {
		abs = run.AttemptDir(n)
	}
	m, ok := q.markOfDir(abs, q.relAt)
	if !ok {
		// no attempt directory (yet): nothing in it
		q.attValid = false
		t.exit, t.exitFi = nil, nil
		return nil, nil, false, nil
	}
	if q.attValid && int(q.attN) == n && m == q.att && q.attState == state && q.attKnown == known && m.settled(q.now()) {
		if t.started != nil && t.started.Attempt == n {
			started = t.started
		}
		return t.exit, started, true, nil
	}
	q.attValid = false
	exit, err = t.exitFile(run, n)
	started = t.startedFile(run, n)
	if err == nil && (started == nil || started.Attempt == n) {
		q.att, q.attN, q.attState, q.attKnown, q.attValid = m, int32(n), state, known, true
	}
	return exit, started, false, err
}

// quietLook: nothing this look can decide depends on the status file —
// the attempt's files and the run directory are as last read, and the
// scheduler reports the job pending or running with no cancel requested
// and no exit file (see the top of this file).
func quietLook(kept bool, in *Input) bool {
	return kept && (in.State == backends.Pending || in.State == backends.Running) &&
		in.Exit == nil && !in.CancelRequested && !in.Missing
}
