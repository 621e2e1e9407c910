package monitor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// statTick is how often the waiter stats the run's few files, so a change
// made on another NFS client (where inotify sees nothing) is still noticed
// soon: a conclusive exit file decides the run without the scheduler.
const statTick = 200 * time.Millisecond

// Wait steps a run until it is final. It wakes on changes in the run
// directory (fsnotify, with a stat fallback for network filesystems) and
// on an adaptive timer: MinInterval after a submit or a change, growing to
// MaxInterval while nothing changes. Scheduler failures are reported to
// update (Status.PollErr) and never decide a run.
func (e *Engine) Wait(ctx context.Context, run rundir.Run, update func(Status)) (*schema.Outcome, error) {
	if rec, err := run.Load(); err == nil && rec.Task.Array.Enabled() {
		return e.waitArray(ctx, run, update)
	}
	tr := NewTracker(run)
	var w runWatch
	if e.Watch != nil {
		w = e.Watch.sub()
	} else {
		w = newDirWatch(e.Backend)
	}
	defer w.close()
	minI, maxI := e.Site.Poll.MinInterval.D(), e.Site.Poll.MaxInterval.D()
	interval := minI
	maxAge := minI
	lastSig := ""
	for {
		st, err := e.Step(ctx, run, maxAge, tr)
		if err != nil {
			return nil, err
		}
		if st.Outcome.Final {
			return &st.Outcome, nil
		}
		if update != nil {
			update(st)
		}
		rec := st.Record // what this step read (run.json again only when it changed)
		if rec == nil {
			rec, _ = run.Load()
		}
		n := 0
		if rec != nil && rec.Current() != nil {
			n = rec.Current().N
		}
		w.watch(run.Dir, run.AttemptDir(n))
		if !st.Deadline.IsZero() && time.Until(st.Deadline) < 2*interval {
			interval = minI // near the walltime: look more often
		}
		timer := time.NewTimer(interval)
		// the stat fallback, where it looks more often than the timer
		// (inotify on a local filesystem leaves it to the timer)
		var tick *time.Ticker
		var tickC <-chan time.Time
		statting := w.statEvery() < interval
		if statting {
			tick = time.NewTicker(w.statEvery())
			tickC = tick.C
			if lastSig == "" {
				lastSig = fileSig(run, n)
			}
		}
		force := false
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				if tick != nil {
					tick.Stop()
				}
				return nil, ctx.Err()
			case ev := <-w.events():
				if base := filepath.Base(ev); base == "status.jsonl" || base == "started" {
					// progress, or the job started: refresh from the cache
					maxAge = interval
					break wait
				}
				// an exit file, an outcome or run.json: a clean exit is
				// decided without the scheduler; other ends want its word
				force = true
				break wait
			case <-tickC:
				if sig := fileSig(run, n); sig != lastSig {
					lastSig = sig
					force = true
					break wait
				}
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
		if statting {
			tick.Stop()
			lastSig = fileSig(run, n)
		} else {
			lastSig = ""
		}
		if force {
			interval, maxAge = minI, 0
		} else {
			maxAge = interval
			interval = min(time.Duration(float64(interval)*1.5), maxI)
		}
	}
}

// fileSig summarises the size and mtime of the files that end an attempt.
func fileSig(run rundir.Run, n int) string {
	sig := ""
	for _, p := range []string{run.OutcomeFile(), run.ExitCode(n), run.Started(n), run.RunJSON()} {
		if fi, err := os.Stat(p); err == nil {
			sig += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		} else {
			sig += "-;"
		}
	}
	return sig
}

// dirWatch wraps fsnotify; without inotify it degrades to the stat ticker.
type dirWatch struct {
	w       *fsnotify.Watcher
	watched map[string]bool
	ch      chan string
}

func newDirWatch(be backends.Backend) *dirWatch {
	d := &dirWatch{watched: map[string]bool{}, ch: make(chan string, 64)}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return d
	}
	d.w = w
	go func() {
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename) == 0 || !meaningful(ev.Name) {
					continue
				}
				select {
				case d.ch <- ev.Name:
				default:
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	if wb, ok := be.(backends.Watcher); ok {
		for _, p := range wb.WatchPaths() {
			d.add(p)
		}
	}
	return d
}

// meaningful filters out temp files and locks: only finished writes of
// state files wake the waiter.
func meaningful(path string) bool {
	base := filepath.Base(path)
	return !strings.HasPrefix(base, ".") && !strings.HasSuffix(base, ".lock") && base != "lock" &&
		!strings.HasSuffix(base, ".log") && base != "stdout" && base != "stderr"
}

func (d *dirWatch) add(p string) {
	if d.w == nil || d.watched[p] {
		return
	}
	if err := d.w.Add(p); err == nil {
		d.watched[p] = true
	}
}

func (d *dirWatch) watch(paths ...string) {
	for _, p := range paths {
		d.add(p)
	}
}

func (d *dirWatch) events() <-chan string { return d.ch }

func (d *dirWatch) close() {
	if d.w != nil {
		d.w.Close()
	}
}
