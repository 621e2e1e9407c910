package monitor

import (
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tether-hpc/tether/rundir"
)

// runWatch is what a waiter watches a run directory with: its own
// fsnotify watcher (dirWatch), or its share of a SharedWatch.
type runWatch interface {
	watch(paths ...string)
	events() <-chan string
	close()
	// statEvery is how often the waiter stats the run's files besides
	// (for writes inotify does not see, on network filesystems).
	statEvery() time.Duration
}

func (d *dirWatch) statEvery() time.Duration { return statTick }

// SharedWatch is one inotify watcher shared by many waiters in one
// process (tether watch waits for hundreds of runs: one inotify instance,
// whose default limit is 128 per user, not one per run). An event wakes
// only the waiters of the directory it happened in; the backend's own
// watch paths are not watched (an ended job without an exit file is found
// by the waiter's scheduler look).
type SharedWatch struct {
	// StatEvery is each waiter's stat fallback period (default 1 s).
	StatEvery time.Duration

	mu   sync.Mutex
	w    *fsnotify.Watcher
	subs map[string]map[*sharedSub]struct{}
}

// NewSharedWatch starts a shared watcher; without inotify the waiters
// fall back to their stat ticker.
func NewSharedWatch() *SharedWatch {
	s := &SharedWatch{StatEvery: time.Second, subs: map[string]map[*sharedSub]struct{}{}}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return s
	}
	s.w = w
	go s.loop()
	return s
}

func (s *SharedWatch) loop() {
	for {
		select {
		case ev, ok := <-s.w.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename) == 0 || !meaningful(ev.Name) {
				continue
			}
			s.mu.Lock()
			for u := range s.subs[filepath.Dir(ev.Name)] {
				select {
				case u.ch <- ev.Name:
				default:
				}
			}
			s.mu.Unlock()
		case _, ok := <-s.w.Errors:
			if !ok {
				return
			}
		}
	}
}

// Close stops the watcher.
func (s *SharedWatch) Close() {
	if s.w != nil {
		s.w.Close()
	}
}

// Watching is how many directories the watcher holds.
func (s *SharedWatch) Watching() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *SharedWatch) sub() *sharedSub {
	return &sharedSub{s: s, dirs: map[string]bool{}, ch: make(chan string, 16)}
}

type sharedSub struct {
	s    *SharedWatch
	dirs map[string]bool
	ch   chan string
	// covered: every directory asked for is watched, on a local filesystem
	covered, remote bool
}

func (u *sharedSub) watch(paths ...string) {
	u.s.mu.Lock()
	defer u.s.mu.Unlock()
	covered := u.s.w != nil
	for _, p := range paths {
		if u.dirs[p] {
			continue
		}
		if u.s.w == nil {
			covered = false
			continue
		}
		if len(u.s.subs[p]) == 0 {
			if err := u.s.w.Add(p); err != nil {
				covered = false
				continue
			}
			u.s.subs[p] = map[*sharedSub]struct{}{}
		}
		u.s.subs[p][u] = struct{}{}
		u.dirs[p] = true
		if rundir.NetworkFS(p) != "" {
			u.remote = true
		}
	}
	u.covered = covered && !u.remote
}

func (u *sharedSub) events() <-chan string { return u.ch }

// statEvery: the stat fallback's period — StatEvery while a directory of
// the waiter is not watched or is on a network filesystem (where inotify
// does not see other hosts' writes), else a slow safety net (inotify on a
// local filesystem sees every write; the waiter's timer looks anyway).
func (u *sharedSub) statEvery() time.Duration {
	every := u.s.StatEvery
	if every <= 0 {
		every = time.Second
	}
	if u.covered && len(u.dirs) > 0 {
		return max(every, coveredStatEvery)
	}
	return every
}

// coveredStatEvery is the stat fallback's period where inotify sees every
// write.
const coveredStatEvery = time.Minute

func (u *sharedSub) close() {
	u.s.mu.Lock()
	defer u.s.mu.Unlock()
	for p := range u.dirs {
		delete(u.s.subs[p], u)
		if len(u.s.subs[p]) == 0 {
			delete(u.s.subs, p)
			u.s.w.Remove(p)
		}
	}
	u.dirs = nil
}
