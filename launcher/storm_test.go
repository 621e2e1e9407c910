package launcher

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// sessionPIDs lists the processes of session sid (/proc/PID/stat field 6).
func sessionPIDs(sid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp session ...
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stormOnce runs one wrapper in a session of its own, waits for its Task,
// and sends SIGTERM to every process of the session at once, the way
// Slurm's proctrack/cgroup and PBS end a job. It returns the exit file.
func stormOnce(dir string, site *schema.Site, task *schema.Task) (schema.ExitFile, int, error) {
	run := rundir.Run{Dir: dir, ID: "storm-1"}
	if err := os.MkdirAll(run.AttemptDir(1), 0o755); err != nil {
		return schema.ExitFile{}, 0, err
	}
	plan, err := Build(run, task, site, AttemptSpec{N: 1}, "")
	if err != nil {
		return schema.ExitFile{}, 0, err
	}
	os.WriteFile(run.TaskScript(1), plan.TaskScript, 0o755)
	os.WriteFile(run.Script(1), plan.Script, 0o755)
	cmd := exec.Command("/bin/bash", run.Script(1))
	cmd.Dir = run.AttemptDir(1)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return schema.ExitFile{}, 0, err
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // nothing outlives a failed round
	ready := filepath.Join(dir, "ready")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return schema.ExitFile{}, 0, fmt.Errorf("the Task did not start within 10s")
		}
	}
	for _, pid := range sessionPIDs(cmd.Process.Pid) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return schema.ExitFile{}, 0, err
	}
	var e schema.ExitFile
	if err := rundir.ReadJSON(run.ExitCode(1), &e); err != nil {
		return e, code, err
	}
	return e, code, nil
}

// A walltime kill signals every process of the job at the same instant;
// the exit file must say 143/15 every time (bash 5.2 loses the reaped
// status when the wrapper's wait is interrupted by its trap, which the
// intermediate shell's status file makes up for). 100 rounds, 4 at a time.
func TestWrapperExitStatusUnderSignalStorm(t *testing.T) {
	site := testSite(t)
	task := schema.DefaultTask()
	task.Name = "storm"
	task.Resources.Walltime = schema.Duration(time.Minute)
	task.Script = "touch ../../../ready\nwhile :; do sleep 0.05; done"
	const rounds, parallel = 100, 4
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				dir := filepath.Join(t.TempDir(), strconv.Itoa(i))
				tk := task
				tk.Workdir = filepath.Join(dir, "runs", "x", "y") // ../../../ready is dir/ready
				os.MkdirAll(tk.Workdir, 0o755)
				e, code, err := stormOnce(dir, site, &tk)
				if err != nil || e.ExitCode != 143 || e.Signal != 15 || e.Provisional || code != 143 {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("round %d: wrapper exit %d, exit file %+v, %v", i, code, e, err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range rounds {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d rounds lost the exit status:\n%s", len(bad), rounds, strings.Join(bad, "\n"))
	}
}
