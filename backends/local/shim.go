package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/schema"
)

// RunShim supervises one job: the hidden "tether local-shim JOBFILE"
// command calls it in a new session. It runs the wrapper, sends the warn
// signal and SIGTERM at their times, SIGKILLs what is left kill_wait later
// (or after a cancel), kills stray processes of the session when the
// wrapper ends, and records the final state.
func RunShim(ctx context.Context, jobPath string) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)

	self := os.Getpid()
	j, err := update(ctx, jobPath, func(j *Job) {
		j.ShimPID, j.ShimStart = self, startTime(self)
	})
	if err != nil {
		return fmt.Errorf("local-shim: %w", err)
	}
	if j.State.Terminal() {
		return nil
	}
	req := j.Request
	var cg *memCgroup
	var rusageRSS int64 // the wrapper's and its reaped descendants' largest RSS
	finish := func(state backends.State, reason string, code *int, sig int) error {
		killSession(self, syscall.SIGKILL) // like a batch system's process tracking
		oom, peak := 0, int64(0)
		if cg != nil {
			oom, peak = cg.oomKills(), cg.peakBytes()
			cg.remove()
			if oom > 0 && state == backends.Failed {
				// the kernel ended a process of the job at its memory limit
				state = backends.OutOfMemory
				reason = fmt.Sprintf("the job went past its memory limit of %s (the kernel's OOM killer ended %d process(es))", units.HumanMemory(req.MemoryMiB), oom)
			}
		}
		_, err := update(context.WithoutCancel(ctx), jobPath, func(j *Job) {
			j.State, j.Reason, j.ExitCode, j.Signal, j.End = state, reason, code, sig, time.Now().UTC()
			j.OOMKills, j.MaxRSSBytes = oom, max(peak, rusageRSS)
		})
		return err
	}
	if !j.CancelAt.IsZero() { // cancelled while the supervisor was starting
		return finish(backends.Cancelled, "cancelled before start", nil, 0)
	}
	select {
	case <-sigs:
		return finish(backends.Cancelled, "cancelled before start", nil, 0)
	default:
	}

	stdout, err := os.OpenFile(req.Stdout, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return finish(backends.Failed, "cannot open stdout: "+err.Error(), nil, 0)
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(req.Stderr, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return finish(backends.Failed, "cannot open stderr: "+err.Error(), nil, 0)
	}
	defer stderr.Close()
	cmd := exec.Command("/bin/bash", req.Script)
	if j.LimitMemory && req.MemoryMiB > 0 {
		// the request is a limit, as on a cluster: the wrapper joins a
		// memory cgroup of that size before it starts (its children follow)
		var err error
		limit := "enforced by a memory cgroup"
		if cg, err = newMemCgroup(j.ID, req.MemoryMiB); err != nil {
			limit = "not enforced: " + err.Error()
		} else {
			cmd = exec.Command("/bin/sh", "-c", `echo $$ > "$1" && exec /bin/bash "$2"`, "tether-job", cg.procsFile(), req.Script)
		}
		if _, err := update(ctx, jobPath, func(j *Job) { j.MemoryLimit = limit }); err != nil {
			fmt.Fprintln(os.Stderr, "local-shim: record the memory limit:", err)
		}
	}
	cmd.Dir = req.Dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// exactly the submitter's variables the site's policy let through,
	// nothing of the supervisor's own environment
	cmd.Env = append(backends.EnvList(j.Env), "TETHER_LOCAL_JOB_ID="+j.ID)
	if j.Array != "" {
		cmd.Env = append(cmd.Env, "TETHER_LOCAL_ARRAY_ID="+j.Array)
	}
	// a cancel recorded since the first look (under the job's lock, as
	// Cancel records it) or a TERM that came meanwhile: never start
	cancelledMeanwhile := false
	if _, err := update(ctx, jobPath, func(j *Job) { cancelledMeanwhile = !j.CancelAt.IsZero() }); err == nil && cancelledMeanwhile {
		return finish(backends.Cancelled, "cancelled before start", nil, 0)
	}
	select {
	case <-sigs:
		return finish(backends.Cancelled, "cancelled before start", nil, 0)
	default:
	}
	if err := cmd.Start(); err != nil {
		return finish(backends.Failed, "cannot start the wrapper: "+err.Error(), nil, 0)
	}
	start := time.Now().UTC()
	if _, err := update(ctx, jobPath, func(j *Job) {
		j.State, j.Start, j.WrapperPID = backends.Running, start, cmd.Process.Pid
	}); err != nil {
		fmt.Fprintln(os.Stderr, "local-shim: record start:", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var warnC, termC, killC <-chan time.Time
	if req.Walltime > 0 {
		termC = time.After(time.Until(start.Add(req.Walltime)))
		if req.WarnSignal != "" && req.WarnBefore > 0 && req.WarnBefore < req.Walltime {
			warnC = time.After(time.Until(start.Add(req.Walltime - req.WarnBefore)))
		}
	}
	timedOut, cancelled := false, false
	kill := func() {
		if killC == nil {
			killC = time.After(j.KillWait)
		}
	}
	for {
		select {
		case werr := <-done:
			code, sig := exitStatus(werr)
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				rusageRSS = ru.Maxrss * 1024 // kilobytes on Linux
			}
			switch {
			case timedOut:
				return finish(backends.Timeout, fmt.Sprintf("walltime %s reached", req.Walltime), code, sig)
			case cancelled:
				return finish(backends.Cancelled, "cancelled", code, sig)
			case code != nil && *code == 0:
				return finish(backends.Completed, "", code, 0)
			default:
				return finish(backends.Failed, "", code, sig)
			}
		case <-warnC:
			warnC = nil
			if s, ok := schema.SignalNumber(req.WarnSignal); ok {
				cmd.Process.Signal(s)
			}
		case <-termC:
			termC, timedOut = nil, true
			cmd.Process.Signal(syscall.SIGTERM)
			kill()
		case <-sigs:
			if !timedOut {
				cancelled = true
			}
			cmd.Process.Signal(syscall.SIGTERM)
			kill()
		case <-killC:
			killSession(self, syscall.SIGKILL)
		}
	}
}

// exitStatus splits a wait error into an exit code and a signal.
func exitStatus(err error) (*int, int) {
	if err == nil {
		c := 0
		return &c, 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil, int(ws.Signal())
		}
		c := ee.ExitCode()
		return &c, 0
	}
	return nil, 0
}
