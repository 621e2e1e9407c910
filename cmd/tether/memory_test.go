package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/local"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// procStatusKB reads a field (VmHWM, VmRSS) of /proc/PID/status, in KiB.
func procStatusKB(pid int, field string) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// lineLog collects a process's stderr lines and hands each one to the
// waiters registered with expect.
type lineLog struct {
	mu    sync.Mutex
	lines []string
	waits []lineWait
	done  chan struct{}
}

type lineWait struct {
	re *regexp.Regexp
	ch chan string
}

func newLineLog(r io.Reader) *lineLog {
	l := &lineLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			l.mu.Lock()
			l.lines = append(l.lines, line)
			kept := l.waits[:0]
			for _, w := range l.waits {
				if m := w.re.FindStringSubmatch(line); m != nil {
					w.ch <- m[len(m)-1]
				} else {
					kept = append(kept, w)
				}
			}
			l.waits = kept
			l.mu.Unlock()
		}
	}()
	return l
}

// expect returns a channel that receives the last submatch of the first
// line (already seen or still to come) that matches re.
func (l *lineLog) expect(re string) <-chan string {
	w := lineWait{regexp.MustCompile(re), make(chan string, 1)}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if m := w.re.FindStringSubmatch(line); m != nil {
			w.ch <- m[len(m)-1]
			return w.ch
		}
	}
	l.waits = append(l.waits, w)
	return w.ch
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.lines, "\n")
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

// within waits for a value from ch, failing the test after d.
func within[T any](t testing.TB, what string, d time.Duration, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: not within %v", what, d)
	}
	var zero T
	return zero
}

// startMonitorProc starts `tether monitor` on a free port and returns it with
// its address once it serves.
func startMonitorProc(t testing.TB, env []string, dir string, args ...string) (*exec.Cmd, string, *lineLog) {
	t.Helper()
	cmd := exec.Command(tetherBin, append([]string{"monitor", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env, cmd.Dir = env, dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := newLineLog(stderr)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-log.done
		cmd.Wait()
	})
	addr := within(t, "tether monitor serving", 30*time.Second, log.expect(`monitor serving http://([^/]+)/metrics`))
	return cmd, addr, log
}

// poll calls ok every 20 ms (a ticker: the condition is what the test
// waits for, not the time) until it holds, failing after d.
func poll(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !ok() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

func httpGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// floodRSSBound is the peak RSS `tether wait` and `tether monitor` stay
// under while they read a 500 MB status file (README, "Status file").
const floodRSSBound = 32 << 10 // KiB

// A Task appends 500 MB of status lines in a loop: heartbeats, 2 MiB
// lines (over the 1 MiB line cap), 64 KiB messages (over the 4 KiB
// message cap), then its last progress and a result over the value cap.
// `tether monitor` (started after the writes, as after a restart) and
// `tether wait` each read the whole file at once; their peak RSS, read
// from /proc/PID/status while the Task is still running, stays under
// floodRSSBound, and the run is decided right, with the caps visible in
// the outcome. The 500 MB live in the test's temp dir for a few seconds.
func TestStatusFloodBoundedRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 500 MB")
	}
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"), "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	event := func(typ, extra string) string {
		return `{"v":1,"ts":"` + ts + `","type":"` + typ + `"` + extra + "}\n"
	}
	// One block of the loop: 50 heartbeats, one 2 MiB line, one 64 KiB message.
	var block bytes.Buffer
	for i := 0; i < 50; i++ {
		block.WriteString(event("heartbeat", `,"host":"node001","rank":0`))
	}
	block.WriteString(event("heartbeat", `,"message":"`+strings.Repeat("x", 2<<20)+`"`))
	block.WriteString(event("progress", `,"fraction":0.5,"message":"`+strings.Repeat("y", 64<<10)+`"`))
	const total = 500_000_000
	blocks := total/block.Len() + 1
	longMsg := "done writing " + strings.Repeat("z", 10<<10)
	final := event("progress", `,"fraction":0.9,"message":"`+longMsg+`"`) +
		event("result", `,"results":{"rows":"42","blob":"`+strings.Repeat("b", 5000)+`"}`)
	for name, data := range map[string][]byte{"block": block.Bytes(), "final": []byte(final)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"written", "release"} {
		if err := syscall.Mkfifo(filepath.Join(dir, f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`for i in $(seq %d); do cat block; done >> "$TETHER_STATUS_FILE"; cat final >> "$TETHER_STATUS_FILE"; echo > written; read -r _ < release`, blocks)
	task := fmt.Sprintf("name = 'flood'\ncommand = ['bash', '-c', %q]\n[resources]\nwalltime = '3m'\n", script)
	if err := os.WriteFile(filepath.Join(dir, "flood.toml"), []byte(task), 0o644); err != nil {
		t.Fatal(err)
	}
	tether := func(args ...string) *exec.Cmd {
		cmd := exec.Command(tetherBin, args...)
		cmd.Env, cmd.Dir = env, dir
		return cmd
	}
	out, err := tether("submit", "flood.toml").Output()
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	var sub struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &sub); err != nil || sub.RunID == "" {
		t.Fatalf("no run id in %q", out)
	}
	t.Cleanup(func() { cancelAndWait(t, env, dir, sub.RunID) }) // a Task left blocked on a failure

	// The Task has written everything when it opens the written FIFO.
	written := make(chan error, 1)
	go func() { _, err := os.ReadFile(filepath.Join(dir, "written")); written <- err }()
	t.Cleanup(func() { // unblock the reader if the Task never got there
		if f, err := os.OpenFile(filepath.Join(dir, "written"), os.O_RDWR, 0); err == nil {
			f.Close()
		}
	})
	if err := within(t, "the Task writing 500 MB", 60*time.Second, written); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "state", "tether", "runs", sub.RunID, "status.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status.jsonl: %d MB", fi.Size()/1e6)

	// A monitor started now reads the whole file in its first cycle.
	mon, addr, _ := startMonitorProc(t, env, dir)
	poll(t, "the monitor's first look at the run", 60*time.Second, func() bool {
		b, err := httpGet("http://" + addr + "/runs")
		return err == nil && bytes.Contains(b, []byte(`"run_id":"`+sub.RunID+`"`)) && bytes.Contains(b, []byte(`"fraction":0.9`))
	})
	monHWM, err := procStatusKB(mon.Process.Pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}

	// So does tether wait; it shows the Task's last progress when it has.
	wait := tether("wait", "--timeout", "2m", sub.RunID)
	var stdout bytes.Buffer
	wait.Stdout = &stdout
	stderr, err := wait.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wait.Process.Kill() }) // on a failure before it returned
	waitLog := newLineLog(stderr)
	within(t, "tether wait reading the status file", 60*time.Second, waitLog.expect(`running 90% (done writing)`))
	waitHWM, err := procStatusKB(wait.Process.Pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}

	// Release the Task: it exits 0 and the run is decided.
	if err := os.WriteFile(filepath.Join(dir, "release"), []byte("go\n"), 0); err != nil {
		t.Fatal(err)
	}
	<-waitLog.done
	werr := wait.Wait()
	t.Logf("peak RSS while reading %d MB: tether monitor %d MiB, tether wait %d MiB (bound %d MiB)",
		fi.Size()/1e6, monHWM>>10, waitHWM>>10, floodRSSBound>>10)
	if werr != nil {
		t.Fatalf("tether wait: %v\nstdout: %s\nstderr: %s", werr, stdout.String(), waitLog)
	}
	if after, err := procStatusKB(mon.Process.Pid, "VmHWM"); err == nil && after > monHWM {
		monHWM = after
	}
	if monHWM > floodRSSBound {
		t.Errorf("tether monitor peak RSS %d MiB, bound %d MiB", monHWM>>10, floodRSSBound>>10)
	}
	if waitHWM > floodRSSBound {
		t.Errorf("tether wait peak RSS %d MiB, bound %d MiB", waitHWM>>10, floodRSSBound>>10)
	}
	var o schema.Outcome
	if err := json.Unmarshal([]byte(lastLine(stdout.Bytes())), &o); err != nil {
		t.Fatalf("outcome: %v: %s", err, stdout.String())
	}
	if o.Outcome != schema.OutcomeSucceeded || !o.Final || o.Fraction == nil || *o.Fraction != 0.9 {
		t.Errorf("outcome %s final %v fraction %v, want succeeded, final, 0.9", o.Outcome, o.Final, o.Fraction)
	}
	if o.Results["rows"] != "42" || o.Results["blob"] != "" {
		t.Errorf("results rows=%q blob of %d bytes: want rows=42 and the 5000-byte blob left out", o.Results["rows"], len(o.Results["blob"]))
	}
	if !strings.HasPrefix(o.Message, "done writing zzz") || len(o.Message) > 4200 || !strings.HasSuffix(o.Message, "…") {
		t.Errorf("message of %d bytes (%.40q…): want the first 4 KiB of the Task's, marked", len(o.Message), o.Message)
	}
	if strings.Join(o.Truncated, ",") != "message,results" {
		t.Errorf("truncated %v, want [message results]", o.Truncated)
	}
	// The monitor saw the run end (it or tether wait decided it).
	poll(t, "the monitor counting the outcome", 30*time.Second, func() bool {
		b, err := httpGet("http://" + addr + "/metrics")
		return err == nil && bytes.Contains(b, []byte(`tether_outcomes_total{outcome="succeeded",site="local"} 1`))
	})
}

// selfStart is this process's start time in clock ticks since boot
// (field 22 of /proc/self/stat), as the local backend checks it.
func selfStart(b testing.TB) uint64 {
	s, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	n, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// metricValue finds a sample of the Prometheus text exposition; -1 when absent.
func metricValue(text []byte, series string) float64 {
	for _, l := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// BenchmarkMonitorSharedStateDir: `tether monitor` of site a, whose state
// directory it shares with site b: 10,000 active runs of a and 1,000 of b
// (local backend, jobs "running"; every 100th run of either site has a
// status file with a 512 KiB message and 200 results). Reports the
// monitor's peak RSS (VmHWM), the runs it tracks, and its cycles and CPU
// time over a window after the first cycle, with --stat-only
// --stat-every 1s and poll bounds 2s..1m: a monitor that is poked
// although nothing changed cycles every second instead of backing off.
// ns/op is one /metrics scrape. Targets: peak RSS < 250 MB, tracked runs
// = 10,000, at most 4 cycles in 10 s. (Before the fix: 268 MB, other
// sites' runs tracked too, 12 cycles in 10 s.)
func BenchmarkMonitorSharedStateDir(b *testing.B) {
	nA, nB := 10_000, 1_000
	if v := os.Getenv("TETHER_BENCH_RUNS"); v != "" { // smaller, for a quick look
		nA, _ = strconv.Atoi(v)
		nB = nA / 10
	}
	window := 10 * time.Second
	if v := os.Getenv("TETHER_BENCH_WINDOW"); v != "" {
		window, _ = time.ParseDuration(v)
	}
	dir := b.TempDir()
	state := filepath.Join(dir, "state")
	store, err := rundir.Open(state)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []string{"a", "b"} {
		site := fmt.Sprintf("version = 1\nname = %q\nbackend = 'local'\nstate_dir = %q\n[poll]\nmin_interval = '2s'\nmax_interval = '1m'\n", s, state)
		if err := os.WriteFile(filepath.Join(dir, s+".toml"), []byte(site), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	jobs := filepath.Join(state, "local", "jobs")
	if err := os.MkdirAll(jobs, 0o755); err != nil {
		b.Fatal(err)
	}
	pid, start := os.Getpid(), selfStart(b)
	now := time.Now().UTC()
	task := schema.DefaultTask()
	task.Name, task.Command, task.Workdir = "t", []string{"true"}, dir
	task.Resources.Walltime = schema.Duration(time.Hour)
	bigMsg := strings.Repeat("m", 512<<10)
	many := map[string]string{}
	for i := 0; i < 200; i++ {
		many[fmt.Sprintf("key%03d", i)] = strings.Repeat("v", 100)
	}
	b.Logf("creating %d + %d active runs", nA, nB)
	for i := 0; i < nA+nB; i++ {
		site := "a"
		if i >= nA {
			site = "b"
		}
		id, jobID := fmt.Sprintf("%s-%05d", site, i), strconv.Itoa(i+1)
		rec := &schema.RunRecord{RunID: id, Site: site, Backend: "local", Task: task, CreatedAt: now,
			Attempts: []schema.Attempt{{N: 1, JobID: jobID, SubmittedAt: now, Generation: 1}}}
		run, err := store.CreateRun(rec)
		if err != nil {
			b.Fatal(err)
		}
		j := local.Job{V: 1, ID: jobID, State: backends.Running, ShimPID: pid, ShimStart: start, Submit: now, Start: now, Host: "localhost",
			Request: backends.JobRequest{Walltime: time.Hour}}
		data, _ := json.Marshal(j)
		if err := rundir.WriteFileReplace(filepath.Join(jobs, jobID+".json"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		f := 0.5
		for k := 0; k < 5; k++ {
			rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventHeartbeat, Attempt: 1})
		}
		rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Attempt: 1, Fraction: &f, Message: "step 5 of 10"})
		if i%100 == 0 {
			rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Attempt: 1, Fraction: &f, Message: bigMsg})
			rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventResult, Attempt: 1, Results: many})
		}
		if err := store.SetActive(id, jobID, site); err != nil {
			b.Fatal(err)
		}
	}
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "xdg"))
	mon, addr, _ := startMonitorProc(b, env, dir, "--stat-only", "--stat-every", "1s", filepath.Join(dir, "a.toml"))
	metrics := func() []byte {
		m, err := httpGet("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	count := func(m []byte) float64 { return metricValue(m, `tether_monitor_cycle_duration_seconds_count{site="a"}`) }
	sum := func(m []byte) float64 { return metricValue(m, `tether_monitor_cycle_duration_seconds_sum{site="a"}`) }
	poll(b, "the first cycle", 5*time.Minute, func() bool { return count(metrics()) >= 1 })
	// The window is what is measured: how often the monitor cycles, and
	// what it costs, when nothing changes. (A scrape of 10k runs costs
	// CPU too: none is made inside the window.)
	m0 := metrics()
	cpu0 := cpuTicks(mon.Process.Pid)
	time.Sleep(window)
	cpu1 := cpuTicks(mon.Process.Pid)
	m := metrics()
	c1, c0 := count(m), count(m0)
	if n := metricValue(m, `tether_active_runs{site="a",state="running"}`); n != float64(nA) {
		b.Errorf("%v running runs of site a in the metrics, want %d", n, nA)
	}
	hwm, err := procStatusKB(mon.Process.Pid, "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		metrics()
	}
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MB")
	b.ReportMetric(metricValue(m, `tether_monitor_tracked_runs{site="a"}`), "tracked-runs")
	b.ReportMetric(c1-c0, "cycles/window")
	b.ReportMetric(float64(cpu1-cpu0)*10, "cpu-ms/window")
	b.ReportMetric((sum(m)-sum(m0))*1000, "cycle-ms/window")
	b.Logf("window %v: %v cycles taking %.0f ms, %d ms CPU; peak RSS %d MiB", window, c1-c0, (sum(m)-sum(m0))*1000, (cpu1-cpu0)*10, hwm>>10)
}
