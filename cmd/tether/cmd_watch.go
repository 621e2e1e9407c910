package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// WatchVersion is the version of tether watch's output lines.
const WatchVersion = 1

// watchEvent is one line of tether watch's output.
type watchEvent struct {
	V int `json:"v"`
	// Run is the run as it was asked for (an id, a run directory).
	Run string `json:"run"`
	// Event: "outcome" (final: the run is decided), "status" (it changed:
	// pending, running, a new attempt), "error" (it cannot be watched).
	Event string `json:"event"`
	// ExitCode is what tether run would exit with for this outcome (or
	// error); only on outcome and error events.
	ExitCode *int            `json:"exit_code,omitempty"`
	Outcome  *schema.Outcome `json:"outcome,omitempty"`
	Error    string          `json:"error,omitempty"`
}

func (a *app) watchCmd() *cobra.Command {
	var fromStdin bool
	c := &cobra.Command{
		Use:   "watch [flags] [RUN...]",
		Short: "Wait for many runs in one process and stream their outcomes as JSON lines",
		Long: `watch waits for many runs at once, as tether wait does for one: it decides
and acts (a retry, a re-sent cancel) for runs nobody else decides, and
sees the outcome whoever decides a run (tether run, the monitor, step).
One process shares one inotify watcher and, per site, one poll cache (one
batched scheduler query per interval for all the runs), so a workflow
engine's triggerer can wait for a thousand runs with one process.

Output: one JSON line per event, {"v":1,"run":RUN,"event":...}: "status"
when a run changes (pending, running, a new attempt), "outcome" once it is
decided, with "exit_code" the code tether run would exit with (0 proceed, 1
failed or cancelled, 99 skip) and "outcome" its outcome line; "error" when
it cannot be watched (exit_code 2 bad input, 3 infrastructure).

With --stdin, commands come one per line on stdin: "RUN" (or "watch RUN")
adds a run, "cancel RUN" cancels it (its outcome follows), "forget RUN"
stops watching it; watch runs until stdin closes. Without --stdin it exits
once every RUN given is decided.`,
		Args: usageArgs(cobra.ArbitraryArgs),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			if len(args) == 0 && !fromStdin {
				return usageError{fmt.Errorf("give runs, or --stdin")}
			}
			w := &watcher{a: a, out: json.NewEncoder(a.stdout), shared: monitor.NewSharedWatch(),
				sessions: map[string]*session{}, runs: map[string]*watchedRun{}}
			defer w.shared.Close()
			for _, r := range args {
				w.add(ctx, r)
			}
			if fromStdin {
				w.commands(ctx, os.Stdin)
				w.stopAll()
			}
			w.wg.Wait()
			return nil
		},
	}
	c.Flags().BoolVar(&fromStdin, "stdin", false, "read commands (RUN, cancel RUN, forget RUN) from stdin until it closes")
	return c
}

type watcher struct {
	a      *app
	shared *monitor.SharedWatch

	outMu sync.Mutex
	out   *json.Encoder

	mu       sync.Mutex
	sessions map[string]*session // site name and state directory -> session
	runs     map[string]*watchedRun
	wg       sync.WaitGroup
}

func (w *watcher) emit(ev watchEvent) {
	ev.V = WatchVersion
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.out.Encode(ev)
}

func (w *watcher) fail(run string, err error) {
	code := exitCode(err)
	w.emit(watchEvent{Run: run, Event: "error", ExitCode: &code, Error: err.Error()})
}

// open finds a run and the session of its site, one session per site.
func (w *watcher) open(arg string) (*session, rundir.Run, error) {
	s, run, err := w.a.openRun(arg)
	if err != nil {
		return nil, run, err
	}
	if s, run, err = w.a.pickElement(s, run); err != nil {
		return nil, run, err
	}
	key := s.site.Name + "\x00" + s.store.Dir
	w.mu.Lock()
	defer w.mu.Unlock()
	if have, ok := w.sessions[key]; ok {
		return have, have.store.Run(run.ID), nil
	}
	s.engine.Watch = w.shared
	w.sessions[key] = s
	return s, run, nil
}

func (w *watcher) add(parent context.Context, arg string) {
	w.mu.Lock()
	if _, ok := w.runs[arg]; ok {
		w.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(parent)
	me := &watchedRun{cancel: cancel}
	w.runs[arg] = me
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.wg.Done()
		defer w.drop(arg, me)
		s, run, err := w.open(arg)
		if err != nil {
			w.fail(arg, err)
			return
		}
		last := ""
		o, err := s.engine.Wait(ctx, run, func(st monitor.Status) {
			o := st.Outcome
			sig := fmt.Sprintf("%s/%s/%d/%s", o.Outcome, o.SchedulerState, o.Attempts, o.JobID)
			if sig != last {
				last = sig
				w.emit(watchEvent{Run: arg, Event: "status", Outcome: &o})
			}
		})
		switch {
		case ctx.Err() != nil:
			// forgotten, or watch is stopping
		case err != nil:
			w.fail(arg, err)
		default:
			code := outcomeExit(o)
			w.emit(watchEvent{Run: arg, Event: "outcome", ExitCode: &code, Outcome: o})
		}
	}()
}

// watchedRun is one add of a run: a "forget" then the same run again
// make a second one while the first one's waiter is still returning.
type watchedRun struct{ cancel context.CancelFunc }

func (w *watcher) forget(arg string) {
	w.mu.Lock()
	r := w.runs[arg]
	w.mu.Unlock()
	if r != nil {
		w.drop(arg, r)
	}
}

// drop ends one add's waiter: it removes the run only while the entry is
// still that add's (a forgotten waiter that returns after the run was
// added again leaves the new waiter be).
func (w *watcher) drop(arg string, me *watchedRun) {
	w.mu.Lock()
	defer w.mu.Unlock()
	me.cancel()
	if w.runs[arg] == me {
		delete(w.runs, arg)
	}
}

func (w *watcher) stopAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runs {
		r.cancel()
	}
}

// commands reads stdin's commands until it closes (or ctx ends).
func (w *watcher) commands(ctx context.Context, r io.Reader) {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok {
				return
			}
			verb, arg, found := strings.Cut(strings.TrimSpace(line), " ")
			if !found {
				verb, arg = "watch", verb
			}
			arg = strings.TrimSpace(arg)
			switch {
			case arg == "":
			case verb == "watch":
				w.add(ctx, arg)
			case verb == "forget":
				w.forget(arg)
			case verb == "cancel":
				go w.cancel(ctx, arg)
			default:
				w.fail(line, usageError{fmt.Errorf("unknown command %q: want RUN, cancel RUN or forget RUN", verb)})
			}
		}
	}
}

func (w *watcher) cancel(ctx context.Context, arg string) {
	s, run, err := w.open(arg)
	if err != nil {
		w.fail(arg, err)
		return
	}
	if _, done, _ := run.Outcome(); done {
		return
	}
	if _, err := s.engine.Cancel(ctx, run); err != nil {
		w.a.logf("cancel of %s: %v (sent again by the next look)", arg, err)
	}
}
