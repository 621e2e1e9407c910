package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// command writes a shell script named name into dir.
func command(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// The command comes from BinDir and sees tether's environment without the
// hidden variables, then the site's and the job's; every start counts.
func TestRunEnvironment(t *testing.T) {
	dir := t.TempDir()
	command(t, dir, "show", `echo "$0 $*"; env`)
	t.Setenv("CLI_TEST_HIDDEN", "x")
	t.Setenv("CLI_TEST_KEPT", "y")
	r := &Runner{BinDir: dir, Env: map[string]string{"SITE_B": "2", "SITE_A": "1"}, Hide: []string{"CLI_TEST_HIDDEN"}}
	res, err := r.Run(context.Background(), map[string]string{"JOB_V": "a,b 'c'"}, "show", "one", "two")
	if err != nil || res.Code != 0 || res.Name != "show" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	lines := strings.Split(string(res.Stdout), "\n")
	if lines[0] != filepath.Join(dir, "show")+" one two" {
		t.Errorf("ran %q", lines[0])
	}
	for _, want := range []string{"CLI_TEST_KEPT=y", "SITE_A=1", "SITE_B=2", "JOB_V=a,b 'c'"} {
		if !slices.Contains(lines, want) {
			t.Errorf("environment lacks %s", want)
		}
	}
	if slices.Contains(lines, "CLI_TEST_HIDDEN=x") {
		t.Error("a hidden variable reached the command")
	}
	env := r.Environ()
	if i, j := slices.Index(env, "SITE_A=1"), slices.Index(env, "SITE_B=2"); i < 0 || j != i+1 || j != len(env)-1 {
		t.Errorf("site variables not last in name order: %v", env[max(0, len(env)-3):])
	}
	if _, err := r.Run(context.Background(), nil, "missing"); !errors.Is(err, backends.ErrNotSent) || !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("missing command: %v, want ErrNotSent and ErrUnavailable", err)
	}
	if n := r.Calls(); n != 2 {
		t.Errorf("Calls = %d, want 2", n)
	}
	if (&Runner{}).Bin("qsub") != "qsub" {
		t.Error("no BinDir: want the bare name for $PATH")
	}
}

// A command that does not end in time, or prints more than the bound, is
// ErrUnavailable; a long stderr keeps its head and its tail.
func TestRunBounds(t *testing.T) {
	dir := t.TempDir()
	command(t, dir, "hang", "exec sleep 60")
	command(t, dir, "chatty", `i=0; while [ $i -lt 5000 ]; do echo "line $i of stdout"; echo "line $i of stderr" >&2; i=$((i+1)); done; echo verdict >&2; exit 1`)
	r := &Runner{BinDir: dir, Timeout: 50 * time.Millisecond}
	if _, err := r.Run(context.Background(), nil, "hang"); !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrNotSent) || !strings.Contains(err.Error(), "hang timed out") {
		t.Errorf("hang: %v, want a timeout (ErrUnavailable)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Runner{BinDir: dir}).Run(ctx, nil, "hang"); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("cancelled context: %v", err)
	}

	r = &Runner{BinDir: dir, MaxStdout: 1000}
	if _, err := r.Run(context.Background(), nil, "chatty"); !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "more than 1000 bytes") {
		t.Errorf("too much stdout: %v", err)
	}
	r.MaxStdout = 0
	res, err := r.Run(context.Background(), nil, "chatty")
	if err != nil || res.Code != 1 || !strings.HasSuffix(string(res.Stdout), "line 4999 of stdout\n") {
		t.Fatalf("chatty: code %d, %v", res.Code, err)
	}
	if len(res.Stderr) > maxStderr+100 || !strings.HasPrefix(string(res.Stderr), "line 0 of stderr\n") ||
		!strings.HasSuffix(string(res.Stderr), "line 4999 of stderr\nverdict\n") || !strings.Contains(string(res.Stderr), "bytes left out ...]") {
		t.Errorf("stderr of %d bytes: %.40q ... %q", len(res.Stderr), res.Stderr, res.Stderr[max(0, len(res.Stderr)-40):])
	}
}

// Only what the backend's table names a refusal is ErrRejected; a failure
// nobody knows is ErrUnavailable.
func TestErr(t *testing.T) {
	refusals := func(r Result) Class {
		switch {
		case strings.Contains(string(r.Stderr), "Invalid partition"):
			return Refused
		case strings.Contains(string(r.Stderr), "Unable to contact"):
			return NotSent
		case r.Code == 162:
			return Unavailable
		}
		return Unknown
	}
	for _, c := range []struct {
		res                       Result
		table                     Table
		rejected, unavail, unsent bool
		text                      string
	}{
		{Result{Name: "sbatch", Code: 1, Stderr: []byte("sbatch: error: Batch job submission failed: Invalid partition name specified\n")}, refusals, true, false, false,
			"rejected by the scheduler: sbatch: error: Batch job submission failed: Invalid partition name specified (exit 1)"},
		{Result{Name: "sbatch", Code: 1, Stderr: []byte("sbatch: error: Invalid partition\n")}, nil, false, true, false,
			"scheduler unavailable: sbatch: error: Invalid partition (exit 1)"},
		{Result{Name: "sbatch", Code: 1, Stderr: []byte("sbatch: error: Unable to contact slurm controller (connect failure)\n")}, refusals, false, true, true,
			"request not sent: scheduler unavailable: sbatch: error: Unable to contact slurm controller (connect failure) (exit 1)"},
		{Result{Name: "qstat", Code: 162, Stderr: []byte("Connection refused\nqstat: cannot connect to server pbs (errno=15010)\n")}, refusals, false, true, false,
			"scheduler unavailable: qstat: Connection refused qstat: cannot connect to server pbs (errno=15010) (exit 162)"},
		{Result{Name: "qsub", Code: 2, Stderr: []byte("qsub: illegal -N value\nusage: qsub [-a date_time]\n")}, refusals, false, true, false,
			"scheduler unavailable: qsub: illegal -N value (exit 2)"},
		{Result{Name: "scancel", Code: 3}, refusals, false, true, false, "scheduler unavailable: scancel: exit status 3"},
	} {
		err := c.res.Err(c.table)
		if errors.Is(err, backends.ErrRejected) != c.rejected || errors.Is(err, backends.ErrUnavailable) != c.unavail || errors.Is(err, backends.ErrNotSent) != c.unsent {
			t.Errorf("%s: %v: rejected %v, unavailable %v, not sent %v wanted", c.res.Stderr, err, c.rejected, c.unavail, c.unsent)
		}
		if err.Error() != c.text {
			t.Errorf("message %q, want %q", err, c.text)
		}
		if Stderr(err) != string(c.res.Stderr) {
			t.Errorf("Stderr(%v) = %q", err, Stderr(err))
		}
	}
	if err := (Result{Name: "x", Stderr: []byte("a warning")}).Err(nil); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if Stderr(nil) != "" || Stderr(errors.New("x")) != "" {
		t.Error("Stderr of no command failure")
	}
}
