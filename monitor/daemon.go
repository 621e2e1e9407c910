package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
	"golang.org/x/sys/unix"
)

// SiteRuntime is one site the monitor watches.
type SiteRuntime struct {
	Site   *schema.Site
	Store  *rundir.Store
	Engine *Engine
}

// Monitor watches every active run of its sites: it polls each site's
// scheduler in one batched query per cycle (shared with every other tether
// process through the poll cache), reads the run directories, decides and
// acts for runs nobody else decides, and keeps the metrics.
type Monitor struct {
	Sites   []*SiteRuntime
	Metrics *Metrics
	Now     func() time.Time
	Log     *slog.Logger
	// StatOnly turns inotify off: run files are statted every StatEvery
	// instead (also chosen by itself on NFS, Lustre and other shared
	// filesystems, where inotify does not see other hosts' writes).
	StatOnly  bool
	StatEvery time.Duration
	// FileClock is the clock that run directories' timestamps are
	// compared with (quiet.go; nil: time.Now).
	FileClock func() time.Time

	mu       sync.Mutex
	trackers map[runKey]*Tracker // the site's own runs only
	others   map[runKey]otherRun // an active run the site does not track
	listed   map[string]int      // site -> entries of the active index at its last cycle
	seen     map[runKey]bool     // runs active in the last cycle
	counted  map[runKey]bool     // decided runs whose outcome is counted but whose active mark remains
	kick     map[string]chan struct{}
	urgent   map[string]bool // site -> a run waits for the scheduler's word (its last cycle)
	decided  decidedCache    // the runs page's recently decided runs
}

// otherRun is an entry of the (shared) active index that a site's cycle
// does not track: a run of another site sharing the state directory, or
// one whose run.json cannot be read (err). Only run.json's mark is kept,
// so the run is looked at again only when run.json changes.
type otherRun struct {
	mark recMark
	err  error
}

// recMark tells whether run.json changed between two looks.
type recMark struct {
	exists bool
	size   int64
	mod    int64 // mtime, ns
}

func markOf(path string) recMark {
	fi, err := os.Stat(path)
	if err != nil {
		return recMark{}
	}
	return recMark{true, fi.Size(), fi.ModTime().UnixNano()}
}

// NewMonitor prepares a monitor over sites; the metrics carry version.
func NewMonitor(sites []*SiteRuntime, version string, now func() time.Time, log *slog.Logger) *Monitor {
	m := &Monitor{Sites: sites, Metrics: NewMetrics(version), Now: now, Log: log,
		trackers: map[runKey]*Tracker{}, others: map[runKey]otherRun{}, listed: map[string]int{},
		seen: map[runKey]bool{}, counted: map[runKey]bool{}, kick: map[string]chan struct{}{}, urgent: map[string]bool{}}
	for _, s := range sites {
		m.kick[s.Site.Name] = make(chan struct{}, 1)
		s.Engine.Poller.Backend = &instrumented{Backend: s.Engine.Poller.Backend, site: s.Site.Name, m: m.Metrics}
		site := s.Site.Name
		s.Engine.Called = func(kind string) { m.Metrics.queries.WithLabelValues(site, kind).Inc() }
		if s.Engine.Submitter != nil {
			s.Engine.Submitter = countedSubmitter{Submitter: s.Engine.Submitter, count: s.Engine.Called}
		}
		s.Engine.Poller.Complete = true // the monitor asks for every active job itself
		m.Metrics.SetSite(SiteView{Name: s.Site.Name, Backend: s.Site.Backend, PendingAlertAfter: s.Site.Poll.PendingAlertAfter.D().Seconds()})
		m.Metrics.initSite(s.Site.Name)
	}
	return m
}

// instrumented counts and times the monitor's scheduler queries.
type instrumented struct {
	backends.Backend
	site string
	m    *Metrics
}

func (b *instrumented) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	t0 := time.Now()
	out, err := b.Backend.Query(ctx, ids)
	b.m.queries.WithLabelValues(b.site, "status").Inc()
	b.m.queryDur.WithLabelValues(b.site).Observe(time.Since(t0).Seconds())
	if err != nil {
		b.m.queryErrs.WithLabelValues(b.site).Inc()
	}
	return out, err
}

// countedSubmitter counts the monitor's submits and find-by-tag lookups.
type countedSubmitter struct {
	Submitter
	count func(kind string)
}

func (c countedSubmitter) Submit(ctx context.Context, run rundir.Run, rec *schema.RunRecord, next schema.Attempt) (*schema.Attempt, error) {
	c.count("submit")
	return c.Submitter.Submit(ctx, run, rec, next)
}

func (c countedSubmitter) Recover(ctx context.Context, run rundir.Run, rec *schema.RunRecord, send bool) (*schema.Attempt, error) {
	c.count("find")
	return c.Submitter.Recover(ctx, run, rec, send)
}

func (c countedSubmitter) Find(ctx context.Context, run rundir.Run, rec *schema.RunRecord) (backends.JobID, bool, error) {
	c.count("find")
	return c.Submitter.Find(ctx, run, rec)
}

func (c countedSubmitter) SubmitArray(ctx context.Context, run rundir.Run, rec *schema.RunRecord) error {
	c.count("submit")
	return c.Submitter.SubmitArray(ctx, run, rec)
}

// runKey names a run of a site in the monitor's maps (a struct, not a
// joined string: a lookup allocates nothing).
type runKey struct{ site, run string }

func key(site, run string) runKey { return runKey{site, run} }

// Cycle looks at every active run of a site once. It returns whether
// anything changed (a run appeared, ended or changed state). Its steps:
// track the site's active runs, one batched scheduler query, a step of
// each run, forget what left, publish the metrics.
func (m *Monitor) Cycle(ctx context.Context, s *SiteRuntime, maxAge time.Duration) (changed bool, err error) {
	t0 := time.Now()
	names, err := s.Store.ActiveNames()
	if err != nil {
		return false, err
	}
	at := OpenRuns(filepath.Join(s.Store.Dir, "runs")) // this cycle's stats are relative to it
	if at >= 0 {
		defer unix.Close(at)
	}
	c := m.track(s, names, at)
	snap, perr := s.Engine.Poller.Status(ctx, c.ids, maxAge)
	if perr != nil && !errors.Is(perr, ErrQuery) {
		return false, perr
	}
	now := m.Now()
	views, stepped, err := m.stepRuns(ctx, s, c.active, &snap, perr, now, at)
	if err != nil {
		return c.changed || stepped, err
	}
	forgot, tracked := m.forget(s, names, c.active, views)
	m.publish(s, cycleFacts{views: views, snap: snap, perr: perr, now: now, tracked: tracked, unreadable: c.unreadable, t0: t0})
	return c.changed || stepped || forgot, nil
}

// tracked is what track found in the active index.
type tracked struct {
	active     map[string]bool // the site's own readable runs
	ids        []backends.JobID
	unreadable int
	changed    bool // a run got a tracker
}

// track gives each of the site's active runs a tracker. The active index
// names the runs; their job ids come from run.json, which the trackers
// read again only when it changes. The index is shared by the sites of a
// state directory: only the site's own runs get a tracker, and another
// site's (or an unreadable) run.json is read again only when it changes.
func (m *Monitor) track(s *SiteRuntime, names []string, at int) tracked {
	name := s.Site.Name
	c := tracked{active: make(map[string]bool, len(names)), ids: make([]backends.JobID, 0, len(names))}
	for _, runID := range names {
		k := key(name, runID)
		m.mu.Lock()
		tr := m.trackers[k]
		other, isOther := m.others[k]
		m.mu.Unlock()
		fresh := tr == nil
		run := s.Store.Run(runID)
		if !fresh {
			run = tr.run
		}
		var mk recMark
		if fresh {
			mk = markOf(run.RunJSON()) // before reading it: a change meanwhile is seen next time
			if isOther && mk == other.mark {
				if other.err != nil {
					c.unreadable++
				}
				continue // another site's, or still unreadable: run.json did not change
			}
			tr = NewTracker(run)
			tr.UseMarks(runID, m.FileClock)
		}
		rec, err := tr.trackLook(run, at)
		if err != nil || (rec.Site != "" && rec.Site != name) {
			if !fresh {
				mk = markOf(run.RunJSON())
			}
			if err != nil { // logged once per state of run.json
				c.unreadable++
				m.Log.Warn("cannot read the run's run.json; the run is not watched until it can be read",
					"site", name, "run", runID, "err", err)
			}
			m.mu.Lock()
			delete(m.trackers, k) // another site's run in a shared state dir, or unreadable
			m.others[k] = otherRun{mark: mk, err: err}
			m.mu.Unlock()
			continue
		}
		m.mu.Lock()
		if m.trackers[k] == nil {
			m.trackers[k] = tr
			c.changed = true
		}
		delete(m.others, k)
		m.mu.Unlock()
		c.active[runID] = true
		if cur := rec.Current(); cur != nil && cur.JobID != "" {
			c.ids = append(c.ids, backends.JobID(cur.JobID))
		}
	}
	return c
}

// stepRuns takes one acting step of every active run against the shared
// snapshot, and returns the views of the runs still going and whether one
// ended or changed state.
func (m *Monitor) stepRuns(ctx context.Context, s *SiteRuntime, active map[string]bool, snap *Snapshot, perr error, now time.Time, at int) (map[string]RunView, bool, error) {
	name := s.Site.Name
	changed, urgent := false, false
	defer func() {
		m.mu.Lock()
		m.urgent[name] = urgent
		m.mu.Unlock()
	}()
	views := make(map[string]RunView, len(active))
	for runID := range active {
		if ctx.Err() != nil {
			return views, changed, ctx.Err()
		}
		m.mu.Lock()
		tr := m.trackers[key(name, runID)]
		m.mu.Unlock()
		run := tr.run
		st, needs, err := tr.stepLook(ctx, s.Engine, snap, perr, at)
		if err != nil {
			if errors.Is(err, rundir.ErrNoRun) {
				s.Store.ClearActive(runID) // a run directory someone removed
			}
			m.Log.Warn("cannot look at run", "site", name, "run", runID, "err", err)
			continue
		}
		if st.Outcome.Final {
			m.ended(name, runID, &st.Outcome)
			// A decider that died between writing the outcome and
			// clearing the active mark leaves the run listed: clear it.
			if err := s.Engine.ClearDecided(ctx, run); err != nil {
				m.Log.Warn("cannot clear the active mark of a decided run", "site", name, "run", runID, "err", err)
			}
			changed = true
			continue
		}
		if needs {
			urgent = true
		}
		v := viewOf(name, now, st, s.Site)
		if old, ok := m.lastView(name, runID); !ok || old.State != v.State || old.Stuck != v.Stuck {
			changed = true
		}
		views[runID] = v
	}
	return views, changed, nil
}

// trackLook is track's look at a run's record, under the tracker's lock
// (released by defer: a crashed look must not leave it held).
func (tr *Tracker) trackLook(run rundir.Run, at int) (*schema.RunRecord, error) {
	tr.mu.Lock() // the watch goroutine's refresh reads the tracker too
	defer tr.mu.Unlock()
	tr.at(at)
	defer tr.at(-1)
	tr.checkRun(run, false)
	return tr.record(run)
}

// stepLook is stepRuns' step of a run, under the tracker's lock.
func (tr *Tracker) stepLook(ctx context.Context, e *Engine, snap *Snapshot, perr error, at int) (Status, bool, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.at(at)
	defer tr.at(-1)
	st, err := e.StepWith(ctx, tr.run, snap, perr, tr)
	return st, err == nil && needsScheduler(st, tr), err
}

// needsScheduler: a run that waits although its wrapper has written an
// exit file (a signalled end or a non-zero exit: the scheduler must say
// which), or whose cancel the scheduler has still to confirm, wants the
// next scheduler answer soon. Running and pending runs do not: a clean
// exit decides without the scheduler.
func needsScheduler(st Status, tr *Tracker) bool {
	return st.Decision.Action == Wait && (tr != nil && tr.exit != nil || st.Record != nil && st.Record.CancelRequested != nil)
}

func (m *Monitor) isUrgent(site string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.urgent[site]
}

// forget counts the outcomes of runs another process decided since the
// last cycle and drops what left the index: trackers of runs no longer
// active, other sites' runs and unreadable ones that are gone. It returns
// whether a run left, and how many runs are tracked.
func (m *Monitor) forget(s *SiteRuntime, names []string, active map[string]bool, views map[string]RunView) (changed bool, tracked int) {
	name := s.Site.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.counted {
		if k.site == name && !active[k.run] {
			delete(m.counted, k)
		}
	}
	for k := range m.seen {
		site, runID := k.site, k.run
		if site != name {
			continue
		}
		if _, still := active[runID]; !still {
			delete(m.seen, k)
			delete(m.trackers, k)
			if o, done, _ := s.Store.Run(runID).Outcome(); done {
				m.count(name, o)
			}
			changed = true
		}
	}
	for runID := range views {
		m.seen[key(name, runID)] = true
	}
	listed := make(map[string]bool, len(names))
	for _, runID := range names {
		listed[runID] = true
	}
	for k := range m.trackers {
		if site, runID := k.site, k.run; site == name {
			if !active[runID] {
				delete(m.trackers, k)
			} else {
				tracked++
			}
		}
	}
	for k := range m.others {
		if k.site == name && !listed[k.run] {
			delete(m.others, k)
		}
	}
	m.listed[name] = len(names)
	return changed, tracked
}

// cycleFacts is what a cycle publishes.
type cycleFacts struct {
	views               map[string]RunView
	snap                Snapshot
	perr                error
	now, t0             time.Time
	tracked, unreadable int
}

// publish sets the site's metrics after a cycle.
func (m *Monitor) publish(s *SiteRuntime, f cycleFacts) {
	name := s.Site.Name
	m.Metrics.tracked.WithLabelValues(name).Set(float64(f.tracked))
	m.Metrics.unreadable.WithLabelValues(name).Set(float64(f.unreadable))
	m.Metrics.SetRuns(name, f.views)
	sv := SiteView{Name: name, Backend: s.Site.Backend, PendingAlertAfter: s.Site.Poll.PendingAlertAfter.D().Seconds(), LastCycle: float64(f.now.UnixNano()) / 1e9}
	if !f.snap.At.IsZero() {
		sv.LastPollSuccess = float64(f.snap.At.UnixNano()) / 1e9
	}
	sv.QueriesAll, sv.Throttled = float64(f.snap.QueriesTotal), !f.snap.RateLimitedSince.IsZero()
	if f.perr != nil {
		sv.PollError = f.perr.Error()
	}
	if s.Engine != nil && s.Engine.BadNodes != nil {
		sv.BadNodes, _ = s.Engine.BadNodes.Nodes()
	}
	m.Metrics.SetSite(sv)
	m.Metrics.cycleDur.WithLabelValues(name).Observe(time.Since(f.t0).Seconds())
}

// nearDeadline reports whether a running run of the site reaches its
// walltime within d (or passed it less than DeadlineGrace ago).
func (m *Monitor) nearDeadline(site string, d time.Duration) bool {
	now := float64(m.Now().UnixNano()) / 1e9
	m.Metrics.mu.Lock()
	defer m.Metrics.mu.Unlock()
	for _, v := range m.Metrics.views[site] {
		if v.State == "running" && v.Deadline > 0 && v.Deadline-now < d.Seconds() && now-v.Deadline < DeadlineGrace.Seconds() {
			return true
		}
	}
	return false
}

func (m *Monitor) lastView(site, runID string) (RunView, bool) {
	m.Metrics.mu.Lock()
	defer m.Metrics.mu.Unlock()
	v, ok := m.Metrics.views[site][runID]
	return v, ok
}

// ended counts a run that this cycle saw end.
func (m *Monitor) ended(site, runID string, o *schema.Outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := key(site, runID)
	delete(m.trackers, k)
	delete(m.seen, k)
	if m.counted[k] {
		return // still listed as active: counted on an earlier cycle
	}
	m.counted[k] = true
	m.count(site, o)
}

func (m *Monitor) count(site string, o *schema.Outcome) {
	m.Metrics.outcomes.WithLabelValues(site, o.Outcome).Inc()
	m.Metrics.countUsage(site, o)
	if o.Cause == schema.CauseLost {
		m.Metrics.lost.WithLabelValues(site).Inc()
	}
}

func ts(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// viewOf turns a live status into a run's metrics.
func viewOf(site string, now time.Time, st Status, s *schema.Site) RunView {
	o := st.Outcome
	v := RunView{Site: site, RunID: o.RunID, JobID: o.JobID, Fraction: o.Fraction, Attempts: o.Attempts, RunDir: o.RunDir}
	if st.Record != nil {
		v.Name = st.Record.Task.Name
		v.HeartbeatTimeout = st.Record.Task.HeartbeatTimeout.D().Seconds()
		if cur := st.Record.Current(); cur != nil {
			v.Submit = ts(cur.SubmittedAt)
		}
	}
	if st.Job != nil {
		v.SchedulerState = string(st.Job.State)
	}
	v.State = Phase(st)
	if st.Job != nil && v.State == "pending" {
		v.ExpectedStart = ts(st.Job.ExpectedStart)
		v.PendingReason = st.Job.Reason
	}
	v.Start = ts(StartOf(st))
	v.Deadline = ts(DeadlineOf(st))
	v.LastProgress = ts(LastSignOfLife(st))
	v.Stuck, v.StuckDetail = Stuck(now, st, s)
	return v
}

// refreshStatus re-reads the status file under the tracker's lock.
func (tr *Tracker) refreshStatus() (bool, rundir.Summary) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	changed, _ := tr.status.Update()
	return changed, tr.status.Summary
}

// refresh re-reads one run's status file after fsnotify saw it change, so
// its progress metrics move without waiting for the next cycle.
func (m *Monitor) refresh(site, runID string) {
	m.mu.Lock()
	tr := m.trackers[key(site, runID)]
	m.mu.Unlock()
	if tr == nil {
		return
	}
	changed, sum := tr.refreshStatus()
	if !changed {
		return
	}
	v, ok := m.lastView(site, runID)
	if !ok {
		return
	}
	v.Fraction = sum.Fraction
	if t := ts(sum.LastActivity); t > v.LastProgress {
		v.LastProgress = t
	}
	if v.Stuck == StuckHung {
		v.Stuck, v.StuckDetail = "", "" // it has just shown a sign of life
	}
	m.Metrics.UpdateRun(v)
}

// Run cycles every site until ctx ends. Cycles follow the site's poll
// bounds: min_interval after a change, growing to max_interval while
// nothing changes; new runs and run-dir changes wake a site at once.
func (m *Monitor) Run(ctx context.Context) error {
	var w *fsnotify.Watcher
	if !m.StatOnly {
		var err error
		if w, err = fsnotify.NewWatcher(); err != nil {
			m.Log.Warn("fsnotify unavailable; statting run files instead", "err", err)
			w = nil
		} else {
			defer w.Close()
			for _, s := range m.Sites {
				w.Add(s.Store.ActiveDir())
			}
			go m.watch(ctx, w)
		}
	}
	every := m.StatEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	var wg sync.WaitGroup
	for _, s := range m.Sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.loop(ctx, s, w)
		}()
		fs := rundir.NetworkFS(s.Store.Dir)
		if w == nil || fs != "" {
			why := "inotify is off"
			if fs != "" {
				why = "the state directory is on " + fs + ", where inotify does not see other hosts' writes"
			}
			m.Log.Info("statting active run files", "site", s.Site.Name, "every", every, "because", why)
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.statLoop(ctx, s, every)
			}()
		}
	}
	wg.Wait()
	return nil
}

// fileMark is what the stat fallback compares between looks.
type fileMark struct {
	size int64
	mod  time.Time
	exit bool
}

// statLoop is the fallback for filesystems without inotify: it stats the
// status file and the exit file of every active run each tick.
func (m *Monitor) statLoop(ctx context.Context, s *SiteRuntime, every time.Duration) {
	marks := map[string]fileMark{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.statOnce(s, marks)
	}
}

// statOnce looks at each active run's status and exit files once:
// a changed status file refreshes the run's metrics, a new exit file or a
// new run wakes the site's cycle.
func (m *Monitor) statOnce(s *SiteRuntime, marks map[string]fileMark) {
	name := s.Site.Name
	runs := m.activeAttempts(name)
	poke := false
	for runID, n := range runs {
		run := s.Store.Run(runID)
		var mk fileMark
		if fi, err := os.Stat(run.Status()); err == nil {
			mk.size, mk.mod = fi.Size(), fi.ModTime()
		}
		if _, err := os.Stat(run.ExitCode(n)); err == nil {
			mk.exit = true
		}
		old, known := marks[runID]
		marks[runID] = mk
		if !known {
			continue
		}
		if mk.size != old.size || !mk.mod.Equal(old.mod) {
			m.refresh(name, runID)
		}
		if mk.exit && !old.exit {
			poke = true
		}
	}
	for runID := range marks {
		if _, ok := runs[runID]; !ok {
			delete(marks, runID)
		}
	}
	if names, err := s.Store.ActiveNames(); err == nil && len(names) != m.listedAt(name) {
		poke = true // runs appeared or ended since the last cycle
	}
	if poke {
		m.poke(name)
	}
}

// listedAt is the size of the active index (every site's runs) at the
// site's last cycle.
func (m *Monitor) listedAt(site string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listed[site]
}

// attemptN is the current attempt's number as last read (0: none).
func (tr *Tracker) attemptN() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.rec != nil {
		if cur := tr.rec.Current(); cur != nil {
			return cur.N
		}
	}
	return 0
}

// activeAttempts maps the site's active runs (as of the last cycle) to
// their current attempt numbers.
func (m *Monitor) activeAttempts(site string) map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k := range m.seen {
		s, runID := k.site, k.run
		if s != site {
			continue
		}
		n := 0
		if tr := m.trackers[k]; tr != nil {
			n = tr.attemptN()
		}
		out[runID] = n
	}
	return out
}

// loop runs the site's cycles. Two cadences: a cycle (a stat of each
// run's files, a step of each run) comes soon after a change or a file
// event, but the scheduler is asked only when its answer is older than
// queryAge, which drops to min_interval only when a run needs the
// scheduler's word (an exit file to explain, a cancel to confirm, a
// walltime near) and otherwise grows to max_interval. New jobs are asked
// about at once (subject to the site's spacing and per-minute cap).
func (m *Monitor) loop(ctx context.Context, s *SiteRuntime, w *fsnotify.Watcher) {
	minI, maxI := s.Site.Poll.MinInterval.D(), s.Site.Poll.MaxInterval.D()
	queryAge := minI
	watched := map[string]bool{}
	for {
		changed, err := m.Cycle(ctx, s, queryAge)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.Log.Warn("monitor cycle failed", "site", s.Site.Name, "err", err)
		}
		if w != nil {
			m.watchRuns(s, w, watched)
		}
		if m.isUrgent(s.Site.Name) || m.nearDeadline(s.Site.Name, 2*queryAge) {
			queryAge = minI
		} else {
			queryAge = min(time.Duration(float64(queryAge)*1.5), maxI)
		}
		next := queryAge
		if changed {
			next = minI // look at the files again soon; the scheduler only as queryAge says
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-m.kick[s.Site.Name]:
			t.Stop()
		}
	}
}

// watchRuns keeps an inotify watch on each active run directory (and its
// current attempt), dropping those of ended runs. Where watches run out
// (NFS, inotify limits) the cycles' reads are the fallback.
func (m *Monitor) watchRuns(s *SiteRuntime, w *fsnotify.Watcher, watched map[string]bool) {
	want := map[string]bool{}
	for runID, n := range m.activeAttempts(s.Site.Name) {
		run := s.Store.Run(runID)
		want[run.Dir] = true
		if n > 0 {
			want[run.AttemptDir(n)] = true
		}
	}
	for dir := range watched {
		if !want[dir] {
			w.Remove(dir)
			delete(watched, dir)
		}
	}
	for dir := range want {
		if !watched[dir] && w.Add(dir) == nil {
			watched[dir] = true
		}
	}
}

func (m *Monitor) watch(ctx context.Context, w *fsnotify.Watcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			m.event(ev)
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
		}
	}
}

func (m *Monitor) event(ev fsnotify.Event) {
	dir, base := filepath.Split(ev.Name)
	dir = filepath.Clean(dir)
	for _, s := range m.Sites {
		switch {
		case dir == s.Store.ActiveDir():
			m.poke(s.Site.Name) // a run appeared or ended
		case filepath.Dir(dir) == filepath.Join(s.Store.Dir, "runs"):
			runID := filepath.Base(dir)
			switch base {
			case "status.jsonl":
				m.refresh(s.Site.Name, runID)
			case "outcome.json", "run.json":
				m.poke(s.Site.Name)
			}
		case filepath.Base(filepath.Dir(dir)) == "attempts" && filepath.Dir(filepath.Dir(filepath.Dir(dir))) == filepath.Join(s.Store.Dir, "runs"):
			// runs/<id>/attempts/<n>: the wrapper started or ended
			if base == "exitcode" || base == "started" {
				m.poke(s.Site.Name)
			}
		}
	}
}

func (m *Monitor) poke(site string) {
	select {
	case m.kick[site] <- struct{}{}:
	default:
	}
}

// Handler serves /metrics, /healthz, /runs (JSON) and the runs page (/,
// /run/{id}, /run/{id}/log/{stream}).
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		sites := m.Metrics.Sites()
		code := http.StatusOK
		for _, s := range m.Sites {
			for _, v := range sites {
				if v.Name == s.Site.Name && m.Now().Sub(time.Unix(0, int64(v.LastCycle*1e9))) > 3*s.Site.Poll.MaxInterval.D()+time.Minute {
					code = http.StatusServiceUnavailable
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"ok": code == http.StatusOK, "sites": sites})
	})
	mux.HandleFunc("/runs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		runs := m.Metrics.Runs()
		if runs == nil {
			runs = []RunView{}
		}
		json.NewEncoder(w).Encode(runs)
	})
	mux.HandleFunc("GET /{$}", m.servePage)
	mux.HandleFunc("GET /run/{id}", m.serveDetail)
	mux.HandleFunc("GET /run/{id}/log/{stream}", m.serveLog)
	mux.HandleFunc("GET /static/refresh.js", serveScript)
	return mux
}
