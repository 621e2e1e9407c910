package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchEnv is an environment with its own state directory.
func benchEnv(b *testing.B) []string {
	dir := b.TempDir()
	return tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
}

func runTether(b *testing.B, env []string, dir string, args ...string) []byte {
	cmd := exec.Command(tetherBin, args...)
	cmd.Env, cmd.Dir = env, dir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || (ee.ExitCode() != 75 && ee.ExitCode() != 0) {
			b.Fatalf("tether %v: %v\n%s", args, err, out)
		}
	}
	return out
}

// BenchmarkStartupVersion: wall time of `tether version` (target < 20 ms).
func BenchmarkStartupVersion(b *testing.B) {
	env := benchEnv(b)
	for b.Loop() {
		runTether(b, env, "", "version")
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/run")
}

// BenchmarkStartupStatus: wall time of `tether status RUN` on a finished
// local run (target < 20 ms).
func BenchmarkStartupStatus(b *testing.B) {
	env := benchEnv(b)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "t.toml"), []byte("name='b'\ncommand=['true']\n[resources]\nwalltime='1m'\n"), 0o644)
	out := runTether(b, env, dir, "run", "t.toml")
	id := runIDOf(b, out)
	for b.Loop() {
		runTether(b, env, dir, "status", id)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/run")
}

func runIDOf(b *testing.B, out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var o struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil || o.RunID == "" {
		b.Fatalf("no run id in %q", out)
	}
	return o.RunID
}

// BenchmarkExitToWaitReturn: time from the Task's exit to `tether wait`
// returning on the local backend (target < 1 s). The Task writes its exit
// time just before it exits; wait is already waiting.
func BenchmarkExitToWaitReturn(b *testing.B) {
	env := benchEnv(b)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "t.toml"), []byte(`name='exit'
command=['bash','-c','sleep 0.5; date +%s%N > exited']
[resources]
walltime='1m'
`), 0o644)
	var total time.Duration
	worst := time.Duration(0)
	for b.Loop() {
		os.Remove(filepath.Join(dir, "exited"))
		id := runIDOf(b, runTether(b, env, dir, "submit", "t.toml"))
		runTether(b, env, dir, "wait", id)
		returned := time.Now()
		raw, err := os.ReadFile(filepath.Join(dir, "exited"))
		if err != nil {
			b.Fatal(err)
		}
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		d := returned.Sub(time.Unix(0, ns))
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-exit-to-return")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
}
