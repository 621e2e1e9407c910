package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// fate is how a simulated job will end.
type fate int

const (
	fateOK          fate = iota // exit 0
	fateExit3                   // exit 3
	fateTimeout                 // killed at the walltime (TERM: the wrapper writes 143/15)
	fateNodeFail                // the node dies: no exit file
	fatePreempted               // preempted: TERM, then PREEMPTED
	fateRequeue                 // an administrator requeues it: back to PENDING
	fateOOM                     // out of memory: KILL, exit file 137/9
	fateSpecialExit             // SPECIAL_EXIT: the Task exits 3, the job is held in the queue
	fateVanish                  // purged at once, without an exit file (a lost job)
	fateCount
)

var fateNames = [...]string{"ok", "exit3", "timeout", "node_fail", "preempted", "requeue", "oom", "special_exit", "vanish"}

func (f fate) String() string { return fateNames[f] }

// job is one simulated scheduler job and the truth about it.
type job struct {
	id      backends.JobID
	tag     string
	runID   string
	attempt int
	dir     string // the attempt directory (JobRequest.Dir)
	runDir  string
	fate    fate
	state   backends.State
	exit    *int
	sig     int
	nodes   []string
	// ran: the wrapper started; endedAt: when it reached a terminal
	// state; purged: the controller forgot it.
	ran     bool
	endedAt time.Time
	purged  bool
	// cancelled: the scheduler accepted a cancel for this job.
	cancelled bool
	// selfExit: the Task ended by itself with this code (its exit file
	// is conclusive); completing: the scheduler still lists the job
	// running after that; rerun: the scheduler restarted the job after
	// the Task had ended (a late requeue), and the wrapper runs nothing.
	selfExit   *int
	completing bool
	rerun      bool
}

// live reports whether the job may still run (or run again): not ended,
// or held in the queue (SPECIAL_EXIT) until someone cancels it.
func (j *job) live() bool {
	if j.state == backends.SpecialExit {
		return !j.cancelled
	}
	return !j.state.Terminal()
}

// pendingWrite is a file the wrapper wrote that the deciding host does
// not see yet (a shared filesystem's attribute cache).
type pendingWrite struct {
	due  int // scheduler tick at which it becomes visible
	path string
	v    any
}

// Sched is a simulated batch system. Every answer is drawn from the
// world's seeded generator, so a schedule replays exactly.
type Sched struct {
	w       *World
	jobs    map[backends.JobID]*job
	order   []backends.JobID
	next    int
	tick    int
	outage  int // scheduler ticks left in the current outage
	pending []pendingWrite
	// accounting: purged jobs are still found by tag (sacct).
	accounting bool
	// blindFind breaks find-by-tag (it never finds anything): the
	// simulation's self-test shows the invariants catch what follows.
	blindFind bool
	minJobAge time.Duration

	queries, okQueries int
	lastOK             time.Time
}

func (s *Sched) rng() *rand.Rand { return s.w.rng }

func (s *Sched) down() bool { return s.outage > 0 }

var errDown = fmt.Errorf("%w: simulated outage", backends.ErrUnavailable)

// Submit implements backends.Backend. It may accept the job and lose the
// answer, refuse, fail before sending, or time out before the scheduler
// took it; it also checks invariants 1 and 2 at the moment a job starts.
func (s *Sched) Submit(_ context.Context, req backends.JobRequest) (backends.JobID, error) {
	w := s.w
	if s.down() {
		w.note("submit %s: outage (not sent)", req.Tag)
		return "", fmt.Errorf("%w: %w", backends.ErrNotSent, errDown)
	}
	r := s.rng().IntN(100)
	if w.calm {
		r = 99
	}
	switch {
	case r < 5:
		w.note("submit %s: refused", req.Tag)
		w.refused[req.RunID] = true
		return "", fmt.Errorf("%w: simulated refusal (invalid partition)", backends.ErrRejected)
	case r < 10:
		w.note("submit %s: not sent", req.Tag)
		return "", fmt.Errorf("%w: %w: connection refused", backends.ErrNotSent, backends.ErrUnavailable)
	case r < 15:
		w.note("submit %s: timed out before the scheduler took it", req.Tag)
		return "", fmt.Errorf("%w: simulated timeout", backends.ErrUnavailable)
	}
	w.checkSubmit(req)
	s.next++
	id := backends.JobID(strconv.Itoa(s.next))
	j := &job{id: id, tag: req.Tag, runID: req.RunID, attempt: req.Attempt, dir: req.Dir,
		runDir: filepath.Dir(filepath.Dir(req.Dir)), state: backends.Pending, fate: fate(s.rng().IntN(int(fateCount)))}
	if w.calm {
		j.fate = fateOK
	}
	s.jobs[id] = j
	s.order = append(s.order, id)
	w.refused[req.RunID] = false
	if r < 27 {
		w.note("submit %s: job %s taken, answer lost (fate %s)", req.Tag, id, j.fate)
		return "", fmt.Errorf("%w: simulated lost answer (502 from a proxy)", backends.ErrUnavailable)
	}
	w.note("submit %s: job %s (fate %s)", req.Tag, id, j.fate)
	return id, nil
}

// Query implements backends.Backend: one call for all ids; purged jobs
// are absent.
func (s *Sched) Query(_ context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	s.queries++
	if s.down() {
		return nil, errDown
	}
	s.okQueries++
	s.lastOK = s.w.now
	out := map[backends.JobID]backends.JobStatus{}
	for _, id := range ids {
		j, ok := s.jobs[id]
		if !ok || j.purged {
			continue
		}
		st := backends.JobStatus{ID: id, State: j.state, Native: string(j.state), ExitCode: j.exit, Signal: j.sig, Nodes: j.nodes}
		if j.state == backends.Requeued {
			st.Native = "PENDING+REQUEUED"
		}
		out[id] = st
	}
	return out, nil
}

// Cancel implements backends.Backend; it fails now and then (the cancel
// is then not applied) and is idempotent for ended or purged jobs.
func (s *Sched) Cancel(_ context.Context, id backends.JobID) error {
	if s.down() || (!s.w.calm && s.rng().IntN(100) < 15) {
		s.w.note("cancel %s: failed", id)
		return errDown
	}
	j, ok := s.jobs[id]
	if !ok {
		return nil
	}
	s.w.note("cancel %s: taken (state %s)", id, j.state)
	if j.live() {
		j.cancelled = true
		if j.state == backends.SpecialExit {
			return nil // the held job is gone; its end stays SPECIAL_EXIT
		}
		if j.ran && j.state != backends.Requeued {
			// PBS F/91 variants: the scheduler records 271 (signal 15), 0
			// (seen on a real OpenPBS) or the wrapper's 143; the wrapper
			// traps TERM and records 143/15, or the Task exits 0 on TERM
			c := [...]int{271, 0, 143}[s.rng().IntN(3)]
			j.exit = &c
			// (the wrapper notes when SIGTERM came, whatever the Task did)
			term := 1
			ef := schema.ExitFile{V: 1, Time: s.w.now, ExitCode: 143, Signal: 15, TermAfter: &term}
			if s.rng().IntN(3) == 0 {
				ef = schema.ExitFile{V: 1, Time: s.w.now, ExitCode: 0, TermAfter: &term}
			}
			s.writeLater(filepath.Join(j.dir, "exitcode"), ef)
		}
		s.end(j, backends.Cancelled)
	}
	return nil
}

// FindByTag implements backends.Finder: live and remembered jobs, and
// purged ones only with accounting.
func (s *Sched) FindByTag(_ context.Context, tag string) (backends.JobID, bool, error) {
	if s.down() {
		return "", false, errDown
	}
	s.lastOK = s.w.now
	if s.blindFind {
		return "", false, nil
	}
	for _, id := range s.order {
		j := s.jobs[id]
		if j.tag == tag && (!j.purged || s.accounting) {
			return id, true, nil
		}
	}
	return "", false, nil
}

// DownNodes implements backends.NodeChecker.
func (s *Sched) DownNodes(_ context.Context, nodes []string) (map[string]string, error) {
	out := map[string]string{}
	for _, id := range s.order {
		j := s.jobs[id]
		if j.fate == fateNodeFail && j.state == backends.NodeFail {
			for _, n := range j.nodes {
				if slicesContains(nodes, n) {
					out[n] = "Not responding"
				}
			}
		}
	}
	return out, nil
}

func slicesContains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (s *Sched) end(j *job, st backends.State) {
	j.state = st
	j.endedAt = s.w.now
}

func (s *Sched) writeLater(path string, v any) {
	delay := 0
	if !s.w.calm {
		delay = s.rng().IntN(3) // 0: visible at once
	}
	s.pending = append(s.pending, pendingWrite{due: s.tick + delay, path: path, v: v})
	s.flush()
}

// flush makes due wrapper writes visible.
func (s *Sched) flush() {
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.due > s.tick {
			keep = append(keep, p)
			continue
		}
		if err := rundir.WriteJSON(p.path, p.v); err != nil {
			s.w.t.Errorf("write %s: %v", p.path, err)
		}
	}
	s.pending = keep
}

// Tick advances the scheduler: one job moves on, finished jobs are
// purged after MinJobAge, outages start and end, delayed files appear.
func (s *Sched) Tick() {
	s.tick++
	w := s.w
	if s.outage > 0 {
		s.outage--
		if s.outage == 0 {
			w.note("outage ends")
		}
	} else if !w.calm && s.rng().IntN(100) < 4 {
		s.outage = 1 + s.rng().IntN(6)
		w.note("outage starts (%d ticks)", s.outage)
	}
	s.flush()
	for _, id := range s.order {
		j := s.jobs[id]
		if j.state.Terminal() && !j.live() && !j.purged && w.now.Sub(j.endedAt) >= s.minJobAge {
			j.purged = true
			w.note("job %s purged", id)
		}
	}
	var live []*job
	for _, id := range s.order {
		if j := s.jobs[id]; !j.state.Terminal() {
			live = append(live, j)
		}
	}
	if len(live) == 0 {
		return
	}
	j := live[s.rng().IntN(len(live))]
	s.advance(j)
}

// advance moves one job a step along its fate.
func (s *Sched) advance(j *job) {
	w := s.w
	switch {
	case j.completing:
		j.completing = false
		if s.rng().IntN(4) == 0 {
			// the node fails after the Task ended: the scheduler
			// requeues the job, which runs again
			j.state, j.fate, j.rerun = backends.Requeued, fateOK, true
			w.note("job %s requeued after its Task ended (a late requeue)", j.id)
			return
		}
		st := backends.Completed
		if *j.selfExit != 0 {
			st = backends.Failed
		}
		s.end(j, st)
		w.note("job %s ends %s", j.id, j.state)
		return
	case j.state == backends.Pending || j.state == backends.Requeued:
		j.state, j.ran = backends.Running, true
		j.nodes = []string{fmt.Sprintf("n%d", 1+s.rng().IntN(3))}
		s.writeLater(filepath.Join(j.dir, "started"), schema.Started{V: 1, Time: w.now, Host: j.nodes[0], JobID: string(j.id), Attempt: j.attempt, Nodes: j.nodes[0]})
		w.note("job %s runs on %s", j.id, j.nodes[0])
		return
	case j.state == backends.Running && s.rng().IntN(3) == 0:
		// the Task checkpoints
		f := float64(s.rng().IntN(11)) / 10
		ev := schema.Event{V: 1, TS: w.now, Type: schema.EventCheckpoint, Attempt: j.attempt, Fraction: &f, Resume: fmt.Sprintf("step=%d", int(f*10))}
		if err := rundir.AppendEvent(filepath.Join(j.runDir, "status.jsonl"), ev); err != nil {
			w.t.Errorf("append event: %v", err)
		}
		w.checkpoint(j, f)
		w.note("job %s checkpoints %.1f", j.id, f)
		return
	}
	code := func(c, sig int) {
		j.exit, j.sig = &c, sig
		s.writeLater(filepath.Join(j.dir, "exitcode"), schema.ExitFile{V: 1, Time: w.now, ExitCode: c, Signal: sig})
	}
	// selfEnd: the Task exits c by itself; now and then the scheduler
	// lists the job running a while longer (completing)
	selfEnd := func(c int, st backends.State) {
		code(c, 0)
		j.selfExit = &c
		if s.rng().IntN(3) == 0 {
			j.completing = true
			w.note("job %s: its Task exited %d; the job is still listed running", j.id, c)
			return
		}
		s.end(j, st)
	}
	if j.rerun {
		// the wrapper of a job the scheduler restarted runs nothing
		c := 0
		j.exit, j.sig = &c, 0
		s.writeLater(filepath.Join(j.dir, "exitcode"), schema.ExitFile{V: 1, Time: w.now, ExitCode: 0, Requeued: true})
		s.end(j, backends.Completed)
		w.note("job %s (restarted) ends %s; its wrapper ran nothing", j.id, j.state)
		return
	}
	switch j.fate {
	case fateOK:
		selfEnd(0, backends.Completed)
	case fateExit3:
		selfEnd(3, backends.Failed)
	case fateTimeout:
		c, term := 143, int(w.walltime.Seconds())
		j.exit, j.sig = &c, 15
		s.writeLater(filepath.Join(j.dir, "exitcode"), schema.ExitFile{V: 1, Time: w.now, ExitCode: 143, Signal: 15, TermAfter: &term})
		s.end(j, backends.Timeout)
	case fateNodeFail:
		s.end(j, backends.NodeFail)
	case fatePreempted:
		code(143, 15)
		s.end(j, backends.Preempted)
	case fateRequeue:
		j.state, j.fate = backends.Requeued, fateOK // runs again if nobody stops it
		w.note("job %s requeued by an administrator", j.id)
		return
	case fateOOM:
		code(137, 9)
		s.end(j, backends.OutOfMemory)
	case fateSpecialExit:
		code(3, 0)
		j.selfExit = j.exit
		s.end(j, backends.SpecialExit)
	case fateVanish:
		s.end(j, backends.Failed)
		j.purged = true
	}
	w.note("job %s ends %s", j.id, j.state)
}

// liveJobs lists the live jobs of a run.
func (s *Sched) liveJobs(runID string) []*job {
	var out []*job
	for _, id := range s.order {
		if j := s.jobs[id]; j.runID == runID && j.live() {
			out = append(out, j)
		}
	}
	return out
}

func (s *Sched) describe() string {
	var b strings.Builder
	ids := append([]backends.JobID(nil), s.order...)
	sort.Slice(ids, func(a, c int) bool { return ids[a] < ids[c] })
	for _, id := range ids {
		j := s.jobs[id]
		fmt.Fprintf(&b, "  job %s %s attempt %d fate %s state %s purged=%v cancelled=%v\n", id, j.runID, j.attempt, j.fate, j.state, j.purged, j.cancelled)
	}
	return b.String()
}
