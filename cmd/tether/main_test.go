package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
)

// tetherBin is the tether binary the tests run, built once by TestMain:
// the CLI contract is tested on the real binary, the way Airflow calls it.
var tetherBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tether-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tetherBin = filepath.Join(dir, "tether")
	build := exec.Command("go", "build", "-o", tetherBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // static: it also runs inside the test chroot
	out, err := build.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build tether: %v\n%s", err, out)
		return 1
	}
	// the OpenPBS emulator, once for every PBS test
	if os.Getenv(pbsemutest.EnvBinary) == "" {
		p, err := pbsemutest.Build(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Setenv(pbsemutest.EnvBinary, p)
	}
	return m.Run()
}

// tetherEnv is this process's environment without what tether reads from
// it (TETHER_*, AIRFLOW_CTX_*, XDG_STATE_HOME: a developer's site, state
// dir or Airflow context must not reach the tests' tether), plus extra.
func tetherEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TETHER_") || strings.HasPrefix(k, "AIRFLOW_CTX_") || k == "XDG_STATE_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// haveMPI reports whether OpenMPI's compiler and launcher are installed.
// Under CI=true their absence fails the tests that need them.
func haveMPI(t *testing.T) bool {
	_, e1 := exec.LookPath("mpicc")
	_, e2 := exec.LookPath("mpirun")
	if e1 == nil && e2 == nil {
		return true
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("OpenMPI is not installed (apt install openmpi-bin libopenmpi-dev); CI must run the MPI tests")
	}
	return false
}

func scriptParams(t *testing.T, dir string) testscript.Params {
	mpi := haveMPI(t)
	return testscript.Params{
		Dir: dir,
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", filepath.Dir(tetherBin)+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("XDG_STATE_HOME", filepath.Join(env.WorkDir, "state"))
			env.Setenv("HOME", env.WorkDir)
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "mpi":
				return mpi, nil
			case "root":
				if os.Geteuid() != 0 && os.Getenv("CI") == "true" {
					return false, fmt.Errorf("not root: CI must run the tests that need root (memory cgroups)")
				}
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"code":        cmdCode,
			"waitfile":    cmdWaitFile,
			"waitgrep":    cmdWaitGrep,
			"waitexec":    cmdWaitExec,
			"waitexpired": cmdWaitExpired,
			"jsonlast":    cmdJSONLast,
			"jsonvar":     cmdJSONVar,
			"readvar":     cmdReadVar,
			"arraycheck":  cmdArrayCheck,
		},
	}
}

// TestScripts runs the CLI contract scripts in testdata/script.
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, scriptParams(t, "testdata/script"))
}

// code N CMD ARGS...: run CMD and require exit code N.
func cmdCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: code N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("code: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("code: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		logAttempts(ts)
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// logAttempts logs the small files of every attempt of the run named by
// the last JSON line of stdout (the Task's output, its exit record): what
// a failure on a loaded CI machine needs to be understood afterwards.
func logAttempts(ts *testscript.TestScript) {
	lines := strings.Split(strings.TrimSpace(ts.ReadFile("stdout")), "\n")
	var last struct {
		RunDir string `json:"run_dir"`
	}
	if json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || last.RunDir == "" {
		return
	}
	files, _ := filepath.Glob(filepath.Join(last.RunDir, "attempts", "*", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() || fi.Size() > 8<<10 || filepath.Base(f) == "job.sh" {
			continue
		}
		b, _ := os.ReadFile(f)
		ts.Logf("%s:\n%s", strings.TrimPrefix(f, last.RunDir+"/"), b)
	}
}

// waitUntil polls cond until it holds or limit passes; then the script
// fails with what was awaited and, from cond, what was last seen. It is
// the one way scripts wait for something: every wait* command uses it.
// The pause between looks grows from 10 ms to maxPause.
func waitUntil(ts *testscript.TestScript, what string, limit, maxPause time.Duration, cond func() (ok bool, last string)) {
	deadline := time.Now().Add(limit)
	pause := 10 * time.Millisecond
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if last != "" {
				ts.Fatalf("%s: timed out after %s; last seen:\n%s", what, limit, last)
			}
			ts.Fatalf("%s: timed out after %s", what, limit)
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPause)
	}
}

// waitLimit reads an optional timeout in seconds (default 20 s).
func waitLimit(ts *testscript.TestScript, cmd string, args []string) time.Duration {
	if len(args) == 0 {
		return 20 * time.Second
	}
	s, err := strconv.Atoi(args[0])
	if err != nil || s <= 0 || len(args) > 1 {
		ts.Fatalf("%s: bad timeout %q (seconds)", cmd, strings.Join(args, " "))
	}
	return time.Duration(s) * time.Second
}

// waitfile GLOB [SECONDS]: wait until a file matching GLOB exists
// (! waitfile: until none does).
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: waitfile glob [seconds]")
	}
	what := "waitfile " + args[0]
	if neg {
		what = "! " + what
	}
	waitUntil(ts, what, waitLimit(ts, "waitfile", args[1:]), 250*time.Millisecond, func() (bool, string) {
		m, _ := filepath.Glob(ts.MkAbs(args[0]))
		return (len(m) > 0) != neg, strings.Join(m, "\n")
	})
}

// waitgrep PATTERN FILE [SECONDS]: wait until a line of FILE matches the
// regular expression PATTERN (FILE may not exist yet). For a background
// command's output, have it write to a file, e.g.
// exec sh -c 'exec tether wait "$1" 2> wait.stderr' sh $RUN &w&
func cmdWaitGrep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitgrep pattern file [seconds]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	if err != nil {
		ts.Fatalf("waitgrep: %v", err)
	}
	file := ts.MkAbs(args[1])
	waitUntil(ts, fmt.Sprintf("waitgrep %q %s", args[0], args[1]), waitLimit(ts, "waitgrep", args[2:]), 250*time.Millisecond, func() (bool, string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return false, err.Error()
		}
		return re.Match(b), tailLines(string(b), 20)
	})
}

// waitexec [-timeout=SECONDS] CMD ARGS...: run CMD again and again until
// it exits 0 (default timeout 20 s). Its stdout and stderr are then the
// successful run's, for stdout/stderr checks.
func cmdWaitExec(ts *testscript.TestScript, neg bool, args []string) {
	limit := 20 * time.Second
	if len(args) > 0 && strings.HasPrefix(args[0], "-timeout=") {
		limit = waitLimit(ts, "waitexec", []string{strings.TrimPrefix(args[0], "-timeout=")})
		args = args[1:]
	}
	if neg || len(args) < 1 {
		ts.Fatalf("usage: waitexec [-timeout=seconds] command [args...]")
	}
	// commands may be costly (a scheduler query): at most one a second
	waitUntil(ts, "waitexec "+strings.Join(args, " "), limit, time.Second, func() (bool, string) {
		err := ts.Exec(args[0], args[1:]...)
		if err == nil {
			return true, ""
		}
		return false, err.Error() + "\n" + tailLines(ts.ReadFile("stdout")+ts.ReadFile("stderr"), 20)
	})
}

// waitexpired JWTFILE [SECONDS]: wait until the JSON Web Token in JWTFILE
// (optionally as SLURM_JWT=...) has expired: the clock is past its exp
// claim, the point from which tether and Slurm refuse it.
func cmdWaitExpired(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: waitexpired jwtfile [seconds]")
	}
	tok := strings.TrimSpace(ts.ReadFile(args[0]))
	tok = strings.TrimPrefix(tok, "SLURM_JWT=")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		ts.Fatalf("waitexpired: %s does not hold a JWT", args[0])
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &claims)
	}
	if err != nil || claims.Exp == nil {
		ts.Fatalf("waitexpired: no exp claim in the token of %s (%v)", args[0], err)
	}
	exp := time.Unix(*claims.Exp, 0)
	waitUntil(ts, "waitexpired "+args[0], waitLimit(ts, "waitexpired", args[1:]), 100*time.Millisecond, func() (bool, string) {
		return time.Now().After(exp), "the token expires at " + exp.UTC().Format(time.RFC3339)
	})
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lastJSON decodes the last line of a file as a JSON object.
func lastJSON(ts *testscript.TestScript, file string) map[string]any {
	text := ts.ReadFile(file)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		ts.Fatalf("last line of %s is not a JSON object: %q", file, lines[len(lines)-1])
	}
	return m
}

// jsonvar FILE KEY VAR: set $VAR to a string field of FILE's last JSON line.
func cmdJSONVar(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: jsonvar file key var")
	}
	v, ok := lastJSON(ts, args[0])[args[1]].(string)
	if !ok {
		ts.Fatalf("%s has no string %s", args[0], args[1])
	}
	ts.Setenv(args[2], v)
}

// readvar VAR FILE: set $VAR to FILE's first line.
func cmdReadVar(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: readvar var file")
	}
	line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
	ts.Setenv(args[0], strings.TrimSpace(line))
}

// jsonlast FILE KEY VALUE: the last line of FILE (stdout for the last
// command's output) is a JSON object whose KEY renders as VALUE.
func cmdJSONLast(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: jsonlast file key value")
	}
	m := lastJSON(ts, args[0])
	got := "<missing>"
	if v, ok := m[args[1]]; ok {
		if s, isStr := v.(string); isStr {
			got = s
		} else {
			b, _ := json.Marshal(v)
			got = string(b)
		}
	}
	if (got == args[2]) == neg {
		ts.Fatalf("%s = %s, want %s%s", args[1], got, map[bool]string{true: "not ", false: ""}[neg], args[2])
	}
}

// cancelAndWait cancels a local run a test leaves behind and waits until
// it is decided: a cancel only asks, and the job's wrapper still writes
// its exit file after that, which would race the removal of the test's
// temporary directory. Call it from the test goroutine (a defer or a
// Cleanup).
func cancelAndWait(t *testing.T, env []string, dir, runID string) {
	t.Helper()
	tether := func(args ...string) *exec.Cmd {
		c := exec.Command(tetherBin, args...)
		c.Env, c.Dir = env, dir
		return c
	}
	tether("cancel", runID).Run()
	out, err := tether("wait", "--timeout", "60s", runID).CombinedOutput()
	// cancelled is exit 1; only a wait that gave up is worth a word
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Logf("tether wait %s after cancel: %v\n%s", runID, err, out)
	}
}
