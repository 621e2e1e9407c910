package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"code":     cmdCode,
			"waitfile": cmdWaitFile,
			"jsonlast": cmdJSONLast,
			"jsonvar":  cmdJSONVar,
			"readvar":  cmdReadVar,
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
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// waitfile GLOB [SECONDS]: wait until a file matching GLOB exists.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: waitfile glob [seconds]")
	}
	limit := 20 * time.Second
	if len(args) > 1 {
		s, _ := strconv.Atoi(args[1])
		limit = time.Duration(s) * time.Second
	}
	deadline := time.Now().Add(limit)
	for {
		m, _ := filepath.Glob(ts.MkAbs(args[0]))
		if (len(m) > 0) != neg {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile %s: timed out after %s", args[0], limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
