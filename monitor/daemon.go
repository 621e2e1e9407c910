package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
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

	mu       sync.Mutex
	trackers map[string]*Tracker // site/run -> tracker, for the site's own runs only
	others   map[string]otherRun // site/run -> an active run the site does not track
	listed   map[string]int      // site -> entries of the active index at its last cycle
	seen     map[string]bool     // site/run ids active in the last cycle
	counted  map[string]bool     // decided runs whose outcome is counted but whose active mark remains
	kick     map[string]chan struct{}
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
		trackers: map[string]*Tracker{}, others: map[string]otherRun{}, listed: map[string]int{},
		seen: map[string]bool{}, counted: map[string]bool{}, kick: map[string]chan struct{}{}}
	for _, s := range sites {
		m.kick[s.Site.Name] = make(chan struct{}, 1)
		s.Engine.Poller.Backend = &instrumented{Backend: s.Engine.Poller.Backend, site: s.Site.Name, m: m.Metrics}
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
	b.m.queries.WithLabelValues(b.site).Inc()
	b.m.queryDur.WithLabelValues(b.site).Observe(time.Since(t0).Seconds())
	if err != nil {
		b.m.queryErrs.WithLabelValues(b.site).Inc()
	}
	return out, err
}

func key(site, run string) string { return site + "/" + run }

// Cycle looks at every active run of a site once. It returns whether
// anything changed (a run appeared, ended or changed state).
func (m *Monitor) Cycle(ctx context.Context, s *SiteRuntime, maxAge time.Duration) (changed bool, err error) {
	t0 := time.Now()
	name := s.Site.Name
	// The active index names the runs; their job ids come from run.json,
	// which the trackers read again only when it changes. The index is
	// shared by the sites of a state directory: only the site's own runs
	// get a tracker.
	names, err := s.Store.ActiveNames()
	if err != nil {
		return false, err
	}
	active := make(map[string]bool, len(names))
	ids := make([]backends.JobID, 0, len(names))
	unreadable := 0
	for _, runID := range names {
		k := key(name, runID)
		run := s.Store.Run(runID)
		m.mu.Lock()
		tr := m.trackers[k]
		other, isOther := m.others[k]
		m.mu.Unlock()
		fresh := tr == nil
		var mk recMark
		if fresh {
			mk = markOf(run.RunJSON()) // before reading it: a change meanwhile is seen next time
			if isOther && mk == other.mark {
				if other.err != nil {
					unreadable++
				}
				continue // another site's, or still unreadable: run.json did not change
			}
			tr = NewTracker(run)
		}
		rec, err := tr.record(run)
		if err != nil || (rec.Site != "" && rec.Site != name) {
			if !fresh {
				mk = markOf(run.RunJSON())
			}
			if err != nil { // logged once per state of run.json
				unreadable++
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
			changed = true
		}
		delete(m.others, k)
		m.mu.Unlock()
		active[runID] = true
		if cur := rec.Current(); cur != nil && cur.JobID != "" {
			ids = append(ids, backends.JobID(cur.JobID))
		}
	}
	snap, perr := s.Engine.Poller.Status(ctx, ids, maxAge)
	if perr != nil && !errors.Is(perr, ErrQuery) {
		return false, perr
	}
	now := m.Now()
	views := make(map[string]RunView, len(active))
	for runID := range active {
		if ctx.Err() != nil {
			return changed, ctx.Err()
		}
		m.mu.Lock()
		tr := m.trackers[key(name, runID)]
		m.mu.Unlock()
		run := s.Store.Run(runID)
		st, err := s.Engine.StepWith(ctx, run, &snap, perr, tr)
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
		v := viewOf(name, now, st, s.Site)
		if old, ok := m.lastView(name, runID); !ok || old.State != v.State || old.Stuck != v.Stuck {
			changed = true
		}
		views[runID] = v
	}
	// Runs that left the active set since the last cycle were decided by
	// another process: count their outcomes too.
	m.mu.Lock()
	for k := range m.counted {
		if site, runID, _ := strings.Cut(k, "/"); site == name && !active[runID] {
			delete(m.counted, k)
		}
	}
	for k := range m.seen {
		site, runID, _ := strings.Cut(k, "/")
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
	// Forget what left the index: trackers of runs no longer active,
	// other sites' runs and unreadable ones that are gone.
	listed := make(map[string]bool, len(names))
	for _, runID := range names {
		listed[runID] = true
	}
	tracked := 0
	for k := range m.trackers {
		if site, runID, _ := strings.Cut(k, "/"); site == name {
			if !active[runID] {
				delete(m.trackers, k)
			} else {
				tracked++
			}
		}
	}
	for k := range m.others {
		if site, runID, _ := strings.Cut(k, "/"); site == name && !listed[runID] {
			delete(m.others, k)
		}
	}
	m.listed[name] = len(names)
	m.mu.Unlock()
	m.Metrics.tracked.WithLabelValues(name).Set(float64(tracked))
	m.Metrics.unreadable.WithLabelValues(name).Set(float64(unreadable))
	m.Metrics.SetRuns(name, views)
	sv := SiteView{Name: name, Backend: s.Site.Backend, PendingAlertAfter: s.Site.Poll.PendingAlertAfter.D().Seconds(), LastCycle: float64(now.UnixNano()) / 1e9}
	if !snap.At.IsZero() {
		sv.LastPollSuccess = float64(snap.At.UnixNano()) / 1e9
	}
	if perr != nil {
		sv.PollError = perr.Error()
	}
	m.Metrics.SetSite(sv)
	m.Metrics.cycleDur.WithLabelValues(name).Observe(time.Since(t0).Seconds())
	return changed, nil
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
	v.Start = ts(StartOf(st))
	v.Deadline = ts(DeadlineOf(st))
	v.LastProgress = ts(LastSignOfLife(st))
	v.Stuck, v.StuckDetail = Stuck(now, st, s)
	return v
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
	if changed, _ := tr.status.Update(); !changed {
		return
	}
	v, ok := m.lastView(site, runID)
	if !ok {
		return
	}
	sum := tr.status.Summary
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

// activeAttempts maps the site's active runs (as of the last cycle) to
// their current attempt numbers.
func (m *Monitor) activeAttempts(site string) map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k := range m.seen {
		s, runID, _ := strings.Cut(k, "/")
		if s != site {
			continue
		}
		n := 0
		if tr := m.trackers[k]; tr != nil && tr.rec != nil {
			if cur := tr.rec.Current(); cur != nil {
				n = cur.N
			}
		}
		out[runID] = n
	}
	return out
}

func (m *Monitor) loop(ctx context.Context, s *SiteRuntime, w *fsnotify.Watcher) {
	minI, maxI := s.Site.Poll.MinInterval.D(), s.Site.Poll.MaxInterval.D()
	interval := minI
	watched := map[string]bool{}
	for {
		changed, err := m.Cycle(ctx, s, interval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.Log.Warn("monitor cycle failed", "site", s.Site.Name, "err", err)
		}
		if w != nil {
			m.watchRuns(s, w, watched)
		}
		if changed || m.nearDeadline(s.Site.Name, 2*interval) {
			interval = minI // after a change, and near a run's walltime: look more often
		} else {
			interval = min(time.Duration(float64(interval)*1.5), maxI)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-m.kick[s.Site.Name]:
			t.Stop()
			interval = minI
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

// Handler serves /metrics, /healthz and /runs.
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
	return mux
}
