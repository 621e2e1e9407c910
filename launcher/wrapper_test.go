package launcher

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
	"pgregory.net/rapid"
)

// hostile are characters that would change what runs if any value were
// interpolated into the script unquoted.
var hostile = []rune("'\"$()`\\\n\t *?[]{}~;&|<>!#%=^,:-.@+/é中😀\u202e\r")

func hostileString() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.StringOf(rapid.RuneFrom(hostile)),
		rapid.String(),
		rapid.SampledFrom([]string{"$(touch /tmp/pwned)", "`id`", "'; exit 7; '", "${HOME}", "*", "\n", "-n", "--", "\\", "a'b\"c", "$'x'"}),
	).Filter(func(s string) bool { return !strings.ContainsRune(s, 0) })
}

func testSite(t testing.TB) *schema.Site {
	t.Helper()
	s, err := schema.ParseSite("site.toml", []byte("name='t'\nbackend='local'\n[defaults]\nwalltime='1m'\n"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runWrapper writes the wrapper of task into a fresh run dir and runs it
// with bash, like a batch system would.
func runWrapper(t testing.TB, task *schema.Task, start func(*exec.Cmd)) (rundir.Run, *exec.Cmd, error) {
	t.Helper()
	dir := t.TempDir()
	run := rundir.Run{Dir: filepath.Join(dir, "run with 'quotes' $x"), ID: "prop-1"}
	if err := os.MkdirAll(run.AttemptDir(1), 0o755); err != nil {
		t.Fatal(err)
	}
	plan, err := Build(run, task, testSite(t), AttemptSpec{N: 1, ResumeFrom: "resume $(x) 'y'"}, "/opt/tether/bin/tether")
	if err != nil {
		t.Fatal(err)
	}
	if plan.TaskScript != nil {
		os.WriteFile(run.TaskScript(1), plan.TaskScript, 0o755)
	}
	os.WriteFile(run.Script(1), plan.Script, 0o755)
	cmd := exec.Command("/bin/bash", run.Script(1))
	cmd.Dir = run.AttemptDir(1)
	out, _ := os.Create(run.Stdout(1))
	errf, _ := os.Create(run.Stderr(1))
	cmd.Stdout, cmd.Stderr = out, errf
	defer out.Close()
	defer errf.Close()
	if start != nil {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started := false
		defer func() {
			if !started { // start failed the test: end the wrapper, which ends the Task
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
			}
		}()
		start(cmd)
		started = true
		return run, cmd, cmd.Wait()
	}
	return run, cmd, cmd.Run()
}

// TestMain lets the test binary act as a Task that dumps its argv,
// environment and working directory as JSON.
func TestMain(m *testing.M) {
	if os.Getenv("LAUNCHER_TEST_DUMP") == "1" {
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(k, "H_") || strings.HasPrefix(k, "TETHER_") {
				env[k] = v
			}
		}
		cwd, _ := os.Getwd()
		json.NewEncoder(os.Stdout).Encode(map[string]any{"argv": os.Args[1:], "env": env, "cwd": cwd})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Property: hostile argv and env values reach the Task exactly as given.
func TestWrapperPassesHostileArgvAndEnv(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		args := rapid.SliceOfN(hostileString(), 0, 6).Draw(rt, "args")
		env := map[string]string{}
		for i, v := range rapid.SliceOfN(hostileString(), 0, 4).Draw(rt, "env") {
			env["H_"+string(rune('A'+i))] = v
		}
		wd := filepath.Join(t.TempDir(), rapid.StringOf(rapid.RuneFrom([]rune("ab $'\"`*()é"))).Draw(rt, "workdir")+"x")
		os.MkdirAll(wd, 0o755)
		task := schema.DefaultTask()
		task.Name = "prop"
		task.Command = append([]string{self}, args...)
		env["LAUNCHER_TEST_DUMP"] = "1"
		task.Env = env
		task.Workdir = wd
		task.Resources.Walltime = schema.Duration(time.Minute)
		run, _, err := runWrapper(t, &task, nil)
		if err != nil {
			stderr, _ := os.ReadFile(run.Stderr(1))
			rt.Fatalf("wrapper failed: %v\n%s", err, stderr)
		}
		var got struct {
			Argv []string          `json:"argv"`
			Env  map[string]string `json:"env"`
			Cwd  string            `json:"cwd"`
		}
		b, _ := os.ReadFile(run.Stdout(1))
		if err := json.Unmarshal(b, &got); err != nil {
			rt.Fatalf("task output %q: %v", b, err)
		}
		if len(got.Argv) != len(args) {
			rt.Fatalf("argv %q, want %q", got.Argv, args)
		}
		for i := range args {
			if got.Argv[i] != args[i] {
				rt.Fatalf("argv[%d] = %q, want %q", i, got.Argv[i], args[i])
			}
		}
		for k, v := range env {
			if strings.HasPrefix(k, "H_") && got.Env[k] != v {
				rt.Fatalf("env %s = %q, want %q", k, got.Env[k], v)
			}
		}
		if got.Cwd != wd {
			rt.Fatalf("cwd %q, want %q", got.Cwd, wd)
		}
		if got.Env["TETHER_RUN_DIR"] != run.Dir || got.Env["TETHER_RESUME_FROM"] != "resume $(x) 'y'" || got.Env["TETHER_STATUS_FILE"] != run.Status() || got.Env["TETHER_ATTEMPT"] != "1" {
			rt.Fatalf("tether env wrong: %v", got.Env)
		}
	})
}

func readExit(t *testing.T, run rundir.Run) schema.ExitFile {
	t.Helper()
	var e schema.ExitFile
	if err := rundir.ReadJSON(run.ExitCode(1), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestWrapperExitCodeAndStarted(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "x"
	task.Script = "echo out; echo err >&2; exit 3"
	task.Workdir = t.TempDir()
	run, _, err := runWrapper(t, &task, nil)
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("wrapper exit %v, want 3", err)
	}
	if e := readExit(t, run); e.ExitCode != 3 || e.Signal != 0 || e.V != 1 {
		t.Errorf("exitcode file %+v", e)
	}
	var s schema.Started
	if err := rundir.ReadJSON(run.Started(1), &s); err != nil || s.Attempt != 1 || s.Host == "" || s.Nodes == "" {
		t.Errorf("started %+v %v", s, err)
	}
	if out, _ := os.ReadFile(run.Stdout(1)); string(out) != "out\n" {
		t.Errorf("stdout %q", out)
	}
}

func TestWrapperBadWorkdir(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "x"
	task.Command = []string{"true"}
	task.Workdir = "/nonexistent/dir"
	run, _, err := runWrapper(t, &task, nil)
	if err == nil {
		t.Fatal("wrapper succeeded without its workdir")
	}
	if e := readExit(t, run); e.ExitCode != 127 || !strings.Contains(e.Error, "cannot change to workdir /nonexistent/dir") {
		t.Errorf("exitcode file %+v", e)
	}
}

// The warn signal and SIGTERM reach the Task (warn_target = "group": its
// whole process group); the exit code after TERM is the Task's own.
func TestWrapperForwardsSignals(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "sig"
	task.Workdir = t.TempDir()
	task.Resources.Walltime = schema.Duration(time.Minute)
	task.Signals.WarnBefore = schema.Duration(10 * time.Second)
	task.Signals.WarnSignal = "USR2"
	task.Signals.WarnTarget = "group"
	// a child process of the script traps too: the group gets the signal.
	// Each marks when its traps are set; the loops outlast any wait below.
	// They count in bash, not over $(seq N): a signal that interrupts the
	// command substitution cuts the list short, and the Task exits 0.
	task.Script = `trap 'echo warned >> signals' USR2
trap 'echo term >> signals; exit 42' TERM
touch ready
bash -c 'trap "echo child-warned >> signals" USR2; touch child-ready; for ((i = 0; i < 1200; i++)); do sleep 0.05; done' &
for ((i = 0; i < 2400; i++)); do sleep 0.05; done`
	signals := filepath.Join(task.Workdir, "signals")
	run, _, err := runWrapper(t, &task, func(cmd *exec.Cmd) {
		for _, f := range []string{run0(cmd).Started(1), filepath.Join(task.Workdir, "ready"), filepath.Join(task.Workdir, "child-ready")} {
			waitFor(t, "file "+f, func() bool { _, err := os.Stat(f); return err == nil })
		}
		// USR2 until both traps have run: one sent before the wrapper
		// has noted the Task's pid is not forwarded
		waitForRepeating(t, "warned and child-warned in "+signals, time.Second, func() { cmd.Process.Signal(syscall.SIGUSR2) }, func() bool {
			got, _ := os.ReadFile(signals)
			lines := strings.Split(string(got), "\n")
			return slices.Contains(lines, "warned") && slices.Contains(lines, "child-warned")
		})
		cmd.Process.Signal(syscall.SIGTERM)
	})
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("wrapper exit %v, want the Task's 42", err)
	}
	e := readExit(t, run)
	if e.ExitCode != 42 || !e.Warned || e.Provisional {
		t.Errorf("exitcode file %+v", e)
	}
	got, _ := os.ReadFile(signals)
	for _, want := range []string{"warned", "child-warned", "term"} {
		if !strings.Contains(string(got), want+"\n") {
			t.Errorf("signals file %q lacks %q", got, want)
		}
	}
}

// By default the warning goes to the Task's main process only: a bash Task
// following the README's pattern (trap the warning, let the running child
// finish its checkpoint) keeps its child, which USR1's default action
// would otherwise kill.
func TestWrapperWarnsTheMainProcessOnly(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "sig"
	task.Workdir = t.TempDir()
	task.Resources.Walltime = schema.Duration(time.Minute)
	task.Signals.WarnBefore = schema.Duration(10 * time.Second)
	task.Script = `trap 'echo warned >> signals; touch stop' USR1
bash -c 'touch child-ready; while [ ! -e stop ]; do sleep 0.02; done; echo child-finished >> signals' &
touch ready
while [ ! -e stop ]; do sleep 0.02; done
wait
exit 5`
	signals := filepath.Join(task.Workdir, "signals")
	run, _, err := runWrapper(t, &task, func(cmd *exec.Cmd) {
		for _, f := range []string{filepath.Join(task.Workdir, "ready"), filepath.Join(task.Workdir, "child-ready"), filepath.Join(run0(cmd).AttemptDir(1), ".task-pid")} {
			waitFor(t, "file "+f, func() bool { _, err := os.Stat(f); return err == nil })
		}
		cmd.Process.Signal(syscall.SIGUSR1)
	})
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("wrapper exit %v, want the Task's 5", err)
	}
	if e := readExit(t, run); e.ExitCode != 5 || !e.Warned {
		t.Errorf("exitcode file %+v", e)
	}
	if got, _ := os.ReadFile(signals); string(got) != "warned\nchild-finished\n" {
		t.Errorf("signals file %q: the child must outlive the warning", got)
	}
}

// run0 recovers the run of a wrapper command from its working directory.
func run0(cmd *exec.Cmd) rundir.Run {
	return rundir.Run{Dir: filepath.Dir(filepath.Dir(cmd.Dir)), ID: "prop-1"}
}

// waitFor waits until cond holds; it fails the test, naming what it
// waited for, after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForRepeating(t, what, time.Hour, func() {}, cond)
}

// waitForRepeating is waitFor doing act first, and again every `again`
// until cond holds.
func waitForRepeating(t *testing.T, what string, again time.Duration, act func(), cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		act()
		for next := time.Now().Add(again); time.Now().Before(next); {
			if cond() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after 10s waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Without a scheduler that warns the batch script (PBS, slurmrestd
// v0.0.38), the wrapper's own timer sends the warn signal.
func TestWrapperWarnTimer(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "timer"
	task.Workdir = t.TempDir()
	task.Resources.Walltime = schema.Duration(3 * time.Second)
	task.Signals.WarnBefore = schema.Duration(2 * time.Second)
	task.Script = "trap 'echo warned > warned; exit 0' USR1\nfor i in $(seq 100); do sleep 0.05; done\nexit 9"
	dir := t.TempDir()
	run := rundir.Run{Dir: dir, ID: "timer-1"}
	os.MkdirAll(run.AttemptDir(1), 0o755)
	plan, err := Build(run, &task, testSite(t), AttemptSpec{N: 1, WarnTimer: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	if plan.Request.WarnSignal != "" {
		t.Errorf("the scheduler was asked to warn too: %q", plan.Request.WarnSignal)
	}
	os.WriteFile(run.TaskScript(1), plan.TaskScript, 0o755)
	os.WriteFile(run.Script(1), plan.Script, 0o755)
	start := time.Now()
	out, err := exec.Command("/bin/bash", run.Script(1)).CombinedOutput()
	if err != nil {
		t.Fatalf("wrapper: %v\n%s", err, out)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("warned after %s, want about 1s", d)
	}
	if e := readExit(t, run); !e.Warned || e.ExitCode != 0 {
		t.Errorf("exit file %+v", e)
	}
}

// The scheduler's warning and the wrapper's own timer both come: the Task
// gets the first only.
func TestWrapperWarnsOnce(t *testing.T) {
	task := schema.DefaultTask()
	task.Name = "once"
	task.Workdir = t.TempDir()
	task.Resources.Walltime = schema.Duration(3 * time.Second)
	task.Signals.WarnBefore = schema.Duration(2 * time.Second) // the timer fires after 1 s
	task.Script = "trap 'echo warned >> warns' USR1\ntouch ready\nfor ((i = 0; i < 40; i++)); do sleep 0.05; done\nexit 0"
	run, _, err := runWrapper(t, &task, func(cmd *exec.Cmd) {
		for _, f := range []string{filepath.Join(task.Workdir, "ready"), filepath.Join(run0(cmd).AttemptDir(1), ".task-pid")} {
			waitFor(t, "file "+f, func() bool { _, err := os.Stat(f); return err == nil })
		}
		cmd.Process.Signal(syscall.SIGUSR1) // "the scheduler's" warning, before the timer's
	})
	if err != nil {
		t.Fatalf("wrapper: %v", err)
	}
	if e := readExit(t, run); !e.Warned || e.ExitCode != 0 {
		t.Errorf("exit file %+v", e)
	}
	if got, _ := os.ReadFile(filepath.Join(task.Workdir, "warns")); string(got) != "warned\n" {
		t.Errorf("the Task was warned %q, want once", got)
	}
}
