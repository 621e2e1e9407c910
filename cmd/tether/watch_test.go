package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tether watch --stdin: one process waits for many runs, decides those
// nobody else decides, sees the outcome of a run decided by another
// process, cancels on request, and holds one inotify instance for all.
func TestWatchManyRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+dir, "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.toml", "name = \"ok\"\nscript = 'until [ -e \"$HOME/go-$TETHER_RUN_ID\" ] || [ -e \"$HOME/go-all\" ]; do sleep 0.1; done; tether report --result r=$TETHER_RUN_ID'\n")
	write("bad.toml", "name = \"bad\"\nscript = 'until [ -e \"$HOME/go-all\" ]; do sleep 0.1; done; exit 1'\n")
	write("slow.toml", "name = \"slow\"\nscript = 'sleep 300'\n")
	submit := func(task string) string {
		cmd := exec.Command(tetherBin, "submit", task)
		cmd.Env, cmd.Dir = env, dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("submit %s: %v", task, err)
		}
		var o struct {
			RunID string `json:"run_id"`
		}
		json.Unmarshal(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:], &o)
		if o.RunID == "" {
			t.Fatalf("no run id in %q", out)
		}
		return o.RunID
	}
	var oks []string
	for range 20 {
		oks = append(oks, submit("ok.toml"))
	}
	bad := submit("bad.toml")
	slow := submit("slow.toml")
	other := submit("slow.toml")

	cmd := exec.Command(tetherBin, "watch", "--stdin")
	cmd.Env, cmd.Dir = env, dir
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	logf, _ := os.Create(filepath.Join(dir, "watch.stderr"))
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("watch stderr:\n%s", tail(string(b), 3000))
		}
	}()
	events := make(chan watchEvent, 256)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		for sc.Scan() {
			var ev watchEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
	}()
	for _, id := range append(append([]string{}, oks...), bad, slow, other, "no-such-run-9") {
		fmt.Fprintln(stdin, id)
	}
	outcomes := map[string]watchEvent{}
	running := map[string]bool{}
	next := func(what string, done func() bool) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for !done() {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("watch ended while waiting for %s", what)
				}
				switch ev.Event {
				case "outcome", "error":
					if _, dup := outcomes[ev.Run]; dup {
						t.Errorf("a second final event for %s", ev.Run)
					}
					outcomes[ev.Run] = ev
				case "status":
					if ev.Outcome != nil && ev.Outcome.Outcome == "running" {
						running[ev.Run] = true
					}
				}
			case <-deadline:
				t.Fatalf("no %s within 60 s (outcomes so far: %d)", what, len(outcomes))
			}
		}
	}
	// the unknown run is an error at once; the others run
	next("the error for the unknown run", func() bool { _, ok := outcomes["no-such-run-9"]; return ok })
	if ev := outcomes["no-such-run-9"]; ev.Event != "error" || *ev.ExitCode != 2 || !strings.Contains(ev.Error, "no such run") {
		t.Errorf("unknown run: %+v", ev)
	}
	next("every run running", func() bool { return len(running) >= 23 })
	// one inotify instance for all of them
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	inotify := 0
	for _, fd := range fds {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, fd.Name())); l == "anon_inode:inotify" {
			inotify++
		}
	}
	if inotify != 1 {
		t.Errorf("watch holds %d inotify instances for 23 runs, want 1", inotify)
	}
	// the Tasks end: watch decides them (nobody else waits)
	os.WriteFile(filepath.Join(dir, "go-all"), nil, 0o644)
	next("the 21 outcomes", func() bool { return len(outcomes) >= 22 })
	for _, id := range oks {
		ev := outcomes[id]
		if ev.Event != "outcome" || *ev.ExitCode != 0 || ev.Outcome.Outcome != "succeeded" || ev.Outcome.Results["r"] != id {
			t.Errorf("%s: %+v", id, ev)
		}
	}
	if ev := outcomes[bad]; ev.Event != "outcome" || *ev.ExitCode != 1 || ev.Outcome.Outcome != "failed" {
		t.Errorf("bad: %+v", ev)
	}
	// a cancel through watch; another process cancels and decides "other"
	fmt.Fprintln(stdin, "cancel "+slow)
	c := exec.Command(tetherBin, "cancel", other)
	c.Env, c.Dir = env, dir
	c.Run()
	w := exec.Command(tetherBin, "wait", other)
	w.Env, w.Dir = env, dir
	w.Run()
	next("the cancelled runs", func() bool { return len(outcomes) >= 24 })
	for _, id := range []string{slow, other} {
		if ev := outcomes[id]; ev.Event != "outcome" || *ev.ExitCode != 1 || ev.Outcome.Outcome != "cancelled" {
			t.Errorf("%s: %+v", id, ev)
		}
	}
	// whoever decided it (watch or the other tether wait), watch reports
	// the outcome on disk
	var disk struct {
		DecidedBy string `json:"decided_by"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "state", "tether", "runs", other, "outcome.json")); err != nil || json.Unmarshal(b, &disk) != nil {
		t.Fatalf("outcome of %s: %v", other, err)
	}
	if by := outcomes[other].Outcome.DecidedBy; by != disk.DecidedBy {
		t.Errorf("watch reported %s decided by %q, the run says %q", other, by, disk.DecidedBy)
	}
	// a run forgotten, then decided by another process, then watched again
	third := submit("slow.toml")
	fmt.Fprintln(stdin, third)
	next("the third run running", func() bool { return running[third] })
	fmt.Fprintln(stdin, "forget "+third)
	c = exec.Command(tetherBin, "cancel", third)
	c.Env, c.Dir = env, dir
	c.Run()
	w = exec.Command(tetherBin, "wait", third)
	w.Env, w.Dir = env, dir
	w.Run()
	fmt.Fprintln(stdin, third)
	next("the third run's outcome", func() bool { _, ok := outcomes[third]; return ok })
	if ev := outcomes[third]; ev.Outcome.Outcome != "cancelled" || strings.Contains(ev.Outcome.DecidedBy, fmt.Sprintf("pid %d ", cmd.Process.Pid)) {
		t.Errorf("third: %+v, decided by %q", ev, ev.Outcome.DecidedBy)
	}
	// watching a decided run again gives its outcome again
	fmt.Fprintln(stdin, oks[0])
	delete(outcomes, oks[0])
	next("the outcome again", func() bool { _, ok := outcomes[oks[0]]; return ok })
	if ev := outcomes[oks[0]]; *ev.ExitCode != 0 {
		t.Errorf("again: %+v", ev)
	}
}

// tether watch with tether monitor running on the same site: whichever
// of them decides a run (both may try; one decision is written), watch
// reports the outcome the run holds, once, with tether run's exit code.
// TestWatchManyRuns is the other way: no monitor, watch decides.
func TestWatchWithMonitorRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+dir, "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	task := func(name, script string) string {
		p := filepath.Join(dir, name+".toml")
		if err := os.WriteFile(p, []byte("name = \""+name+"\"\nscript = '"+script+"'\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := task("ok", `until [ -e "$HOME/go" ]; do sleep 0.1; done; tether report --result r=$TETHER_RUN_ID`)
	bad := task("bad", `until [ -e "$HOME/go" ]; do sleep 0.1; done; exit 1`)
	mon := exec.Command(tetherBin, "monitor", "--listen", "127.0.0.1:0")
	mon.Env, mon.Dir = env, dir
	monLog, _ := os.Create(filepath.Join(dir, "monitor.stderr"))
	mon.Stdout, mon.Stderr = monLog, monLog
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		mon.Process.Signal(os.Interrupt)
		mon.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(monLog.Name())
			t.Logf("monitor log:\n%s", tail(string(b), 3000))
		}
	}()
	var runs []string
	for i := range 12 {
		f := ok
		if i%4 == 3 {
			f = bad
		}
		cmd := exec.Command(tetherBin, "submit", f)
		cmd.Env, cmd.Dir = env, dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		var o struct {
			RunID string `json:"run_id"`
		}
		json.Unmarshal(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:], &o)
		runs = append(runs, o.RunID)
	}
	w := exec.Command(tetherBin, "watch", "--stdin")
	w.Env, w.Dir = env, dir
	stdin, _ := w.StdinPipe()
	stdout, _ := w.StdoutPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); w.Wait() }()
	for _, id := range runs {
		fmt.Fprintln(stdin, id)
	}
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
	finals := map[string]watchEvent{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	done := make(chan struct{})
	timer := time.AfterFunc(90*time.Second, func() { w.Process.Kill() }) // ends the scan
	go func() {
		defer close(done)
		for sc.Scan() {
			var ev watchEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && (ev.Event == "outcome" || ev.Event == "error") {
				if _, dup := finals[ev.Run]; dup {
					ev.Event = "duplicate"
				}
				finals[ev.Run] = ev
				if len(finals) == len(runs) {
					return
				}
			}
		}
	}()
	<-done
	timer.Stop()
	if len(finals) != len(runs) {
		t.Fatalf("%d final events for %d runs within 90 s", len(finals), len(runs))
	}
	byMonitor := 0
	for i, id := range runs {
		ev := finals[id]
		var disk struct {
			Outcome   string `json:"outcome"`
			DecidedBy string `json:"decided_by"`
		}
		if b, err := os.ReadFile(filepath.Join(dir, "state", "tether", "runs", id, "outcome.json")); err != nil || json.Unmarshal(b, &disk) != nil {
			t.Fatalf("outcome of %s: %v", id, err)
		}
		want, code := "succeeded", 0
		if i%4 == 3 {
			want, code = "failed", 1
		}
		if ev.Event != "outcome" || ev.ExitCode == nil || *ev.ExitCode != code || ev.Outcome.Outcome != want || disk.Outcome != want || ev.Outcome.DecidedBy != disk.DecidedBy {
			t.Errorf("%s: event %+v, the run holds %+v", id, ev, disk)
		}
		if strings.HasPrefix(disk.DecidedBy, "tether monitor") {
			byMonitor++
		}
	}
	t.Logf("%d of %d runs decided by the monitor, the rest by watch", byMonitor, len(runs))
}
