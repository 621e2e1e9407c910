package pbs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/pbsemu"
	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
)

// emu is a backend on an emulator instance, with a directory for scripts.
type emu struct {
	t   *testing.T
	srv *pbsemutest.Server
	be  *Backend
	dir string
}

func newEmu(t *testing.T, opts pbsemutest.Options) *emu {
	t.Parallel()
	srv := pbsemutest.Start(t, opts)
	return &emu{t: t, srv: srv, be: New(srv.BinDir, "", map[string]string{"PBSEMU_HOME": srv.Home}), dir: t.TempDir()}
}

func (e *emu) request(name, body, tag string) backends.JobRequest {
	e.t.Helper()
	script := filepath.Join(e.dir, name+".sh")
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return backends.JobRequest{Name: name, Script: script, Stdout: filepath.Join(e.dir, name+".out"),
		Stderr: filepath.Join(e.dir, name+".err"), Walltime: time.Minute, Tag: tag}
}

// allJobs lists every job the server has, history included.
func (e *emu) allJobs() []string {
	e.t.Helper()
	r := e.srv.Run(e.dir, "qstat", "-x", "-f", "-F", "json")
	var doc struct {
		Jobs map[string]json.RawMessage `json:"Jobs"`
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &doc) != nil {
		e.t.Fatalf("qstat -x -f -F json: %+v", r)
	}
	var ids []string
	for id := range doc.Jobs {
		ids = append(ids, id)
	}
	return ids
}

// waitFor polls the backend until the job's state satisfies ok.
func (e *emu) waitFor(id backends.JobID, what string, ok func(backends.JobStatus) bool) backends.JobStatus {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last backends.JobStatus
	for time.Now().Before(deadline) {
		got, err := e.be.Query(context.Background(), []backends.JobID{id})
		if err != nil {
			e.t.Fatal(err)
		}
		if st, found := got[id]; found {
			last = st
			if ok(st) {
				return st
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("job %s: not %s within 30s; last %+v", id, what, last)
	return last
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 30s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A qdel'd running job is Cancelled whatever Exit_status its server
// records: 271 (capture 06), 0 (capture 16), or the script's own 143 when
// it traps SIGTERM.
func TestCancelRunningIsCancelled(t *testing.T) {
	for _, c := range []struct {
		mode string
		code int // -1: none
		sig  int
	}{{pbsemu.QdelExitSignal, -1, 15}, {pbsemu.QdelExitZero, 0, 0}, {pbsemu.QdelExitJob, 143, 0}} {
		t.Run(c.mode, func(t *testing.T) {
			e := newEmu(t, pbsemutest.Options{Configure: func(cfg *pbsemu.Config) { cfg.QdelExitStatus = c.mode }})
			marker := filepath.Join(e.dir, "trapping")
			req := e.request("trapper", "#!/bin/bash\ntrap 'echo got TERM; exit 143' TERM\ntouch "+marker+"\nwhile :; do sleep 0.1; done\n", "tether:trap:1")
			ctx := context.Background()
			id, err := e.be.Submit(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			waitFile(t, marker)
			if err := e.be.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
			st := e.waitFor(id, "ended", func(st backends.JobStatus) bool { return st.State.Terminal() })
			if st.State != backends.Cancelled || st.Native != "F/91" {
				t.Errorf("state %s (%s), want CANCELLED (F/91)", st.State, st.Native)
			}
			if c.code == -1 && st.ExitCode != nil || c.code >= 0 && (st.ExitCode == nil || *st.ExitCode != c.code) || st.Signal != c.sig {
				t.Errorf("exit code %v signal %d, want %d %d", st.ExitCode, st.Signal, c.code, c.sig)
			}
		})
	}
}

// A qsub whose answer is lost after the server queued the job (it hangs
// past the backend's timeout, fails with an unknown error, or prints no id)
// is ErrUnavailable, never ErrRejected; FindByTag then finds exactly that
// job, the only one, with ONE qstat, and still finds it once it finished.
func TestLostSubmitFoundByTag(t *testing.T) {
	for _, fault := range []string{pbsemu.QsubFaultHang, pbsemu.QsubFaultFail, pbsemu.QsubFaultSilent} {
		t.Run(fault, func(t *testing.T) {
			e := newEmu(t, pbsemutest.Options{Configure: func(cfg *pbsemu.Config) { cfg.QsubFault = fault }})
			e.be.Timeout = 3 * time.Second
			ctx := context.Background()
			tag := "tether:lost-" + fault + ":1"
			_, err := e.be.Submit(ctx, e.request("lost", "#!/bin/bash\necho done\n", tag))
			if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrRejected) {
				t.Fatalf("lost answer: %v, want ErrUnavailable", err)
			}
			jobs := e.allJobs()
			if len(jobs) != 1 {
				t.Fatalf("jobs on the server: %v, want exactly one", jobs)
			}
			calls := e.be.Calls()
			id, found, err := e.be.FindByTag(ctx, tag)
			if err != nil || !found || string(id) != jobs[0] {
				t.Fatalf("FindByTag: %q %v %v, want %s", id, found, err, jobs[0])
			}
			if n := e.be.Calls() - calls; n != 1 {
				t.Errorf("FindByTag ran %d commands, want 1", n)
			}
			if _, found, err := e.be.FindByTag(ctx, "tether:lost-"+fault+":2"); found || err != nil {
				t.Errorf("another attempt's tag: %v %v", found, err)
			}
			e.waitFor(id, "completed", func(st backends.JobStatus) bool { return st.State == backends.Completed })
			if again, found, err := e.be.FindByTag(ctx, tag); err != nil || !found || again != id {
				t.Errorf("FindByTag of the finished job: %q %v %v", again, found, err)
			}
			if jobs := e.allJobs(); len(jobs) != 1 {
				t.Errorf("jobs on the server: %v, want exactly one", jobs)
			}
		})
	}
}

// Definite refusals are ErrRejected and create no job; a server that is
// down is ErrUnavailable, for qsub and for FindByTag.
func TestSubmitRefusals(t *testing.T) {
	e := newEmu(t, pbsemutest.Options{Queues: []pbsemu.QueueConfig{{Name: "workq", ResourcesMax: map[string]string{"walltime": "00:10:00"}}}})
	ctx := context.Background()
	for name, change := range map[string]func(*backends.JobRequest){
		"unknown queue":  func(r *backends.JobRequest) { r.Partition = "nosuchq" },
		"over the limit": func(r *backends.JobRequest) { r.Walltime = time.Hour },
		"bad resource":   func(r *backends.JobRequest) { r.Constraint = "foo=2" },
		"bad option":     func(r *backends.JobRequest) { r.ExtraArgs = []string{"-j", "xx"} },
	} {
		req := e.request("refused", "#!/bin/bash\ntrue\n", "tether:refused:1")
		change(&req)
		if _, err := e.be.Submit(ctx, req); !errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrRejected", name, err)
		}
	}
	if jobs := e.allJobs(); len(jobs) != 0 {
		t.Errorf("refused submissions created jobs: %v", jobs)
	}
	e.srv.Down() // the cleanup brings it up to kill its jobs
	if _, err := e.be.Submit(ctx, e.request("down", "#!/bin/bash\ntrue\n", "tether:down:1")); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("server down: %v, want ErrUnavailable", err)
	}
	if _, _, err := e.be.FindByTag(ctx, "tether:down:1"); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("FindByTag with the server down: %v, want ErrUnavailable", err)
	}
}

// Jobs the MoM kills for a limit: cput (JOB_EXEC_KILL_CPUT, -28) is a
// failure naming the CPU time limit, not out of memory; mem (-27) is out
// of memory; walltime (-29) a timeout.
func TestLimitKills(t *testing.T) {
	e := newEmu(t, pbsemutest.Options{WalltimeCheckInterval: 500 * time.Millisecond,
		Configure: func(c *pbsemu.Config) { c.EnforceMem = true }})
	ctx := context.Background()
	cpu := e.request("burner", "#!/bin/bash\nwhile :; do :; done\n", "tether:cpu:1")
	cpu.ExtraArgs = []string{"-l", "cput=00:00:01"}
	mem := e.request("hog", "#!/bin/bash\nx=$(head -c 64000000 /dev/zero | tr '\\0' a)\nsleep 60\n", "tether:mem:1")
	mem.MemoryMiB = 16
	wall := e.request("sleeper", "#!/bin/bash\nsleep 60\n", "tether:wall:1")
	wall.Walltime = time.Second
	cases := []struct {
		req    backends.JobRequest
		state  backends.State
		reason string
		id     backends.JobID
	}{
		{req: cpu, state: backends.Failed, reason: "CPU time limit (cput) (Exit_status -28, JOB_EXEC_KILL_CPUT)"},
		{req: mem, state: backends.OutOfMemory, reason: "memory limit (mem) (Exit_status -27, JOB_EXEC_KILL_MEM)"},
		{req: wall, state: backends.Timeout, reason: "walltime limit (Exit_status -29, JOB_EXEC_KILL_WALLTIME)"},
	}
	for i := range cases {
		id, err := e.be.Submit(ctx, cases[i].req)
		if err != nil {
			t.Fatal(err)
		}
		cases[i].id = id
	}
	for _, c := range cases {
		st := e.waitFor(c.id, "ended", func(st backends.JobStatus) bool { return st.State.Terminal() })
		if st.State != c.state || !strings.Contains(st.Reason, c.reason) || st.ExitCode != nil {
			t.Errorf("%s: %s %q exit %v, want %s with %q", c.req.Name, st.State, st.Reason, st.ExitCode, c.state, c.reason)
		}
	}
}

// A job whose mother superior is lost (the emulated MoM and the job die
// without an obit: JOB_EXEC_RERUN_MS_FAIL, -20) is a node failure, which
// tether may retry.
func TestMotherSuperiorLostIsNodeFail(t *testing.T) {
	e := newEmu(t, pbsemutest.Options{})
	ctx := context.Background()
	marker := filepath.Join(e.dir, "running")
	id, err := e.be.Submit(ctx, e.request("victim", "#!/bin/bash\ntouch "+marker+"\nsleep 300\n", "tether:victim:1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, marker)
	seq, _, _ := strings.Cut(string(id), ".")
	var job struct {
		MomPID int `json:"mom_pid"`
	}
	var mom struct {
		SessionID int `json:"session_id"`
	}
	for file, v := range map[string]any{"job.json": &job, "mom.json": &mom} {
		b, err := os.ReadFile(filepath.Join(e.srv.Home, "jobs", seq, file))
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	if job.MomPID <= 0 || mom.SessionID <= 0 {
		t.Fatalf("no MoM (%d) or session (%d)", job.MomPID, mom.SessionID)
	}
	// The node goes away: its MoM and the job's whole session (which this
	// test started) die at once.
	_ = syscall.Kill(job.MomPID, syscall.SIGKILL)
	_ = syscall.Kill(-mom.SessionID, syscall.SIGKILL)
	st := e.waitFor(id, "ended", func(st backends.JobStatus) bool { return st.State.Terminal() })
	if st.State != backends.NodeFail || !strings.Contains(st.Reason, "JOB_EXEC_RERUN_MS_FAIL") {
		t.Errorf("%s %q (%s), want NODE_FAIL from JOB_EXEC_RERUN_MS_FAIL", st.State, st.Reason, st.Native)
	}
}
