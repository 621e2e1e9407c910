package pbs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

func load(t testing.TB, name string) []byte {
	b, err := os.ReadFile("testdata/openpbs-23.06_" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The qstat -x -f -F json documents captured from OpenPBS 23.06 map onto
// the normalized states.
func TestParseQstatCaptured(t *testing.T) {
	cases := []struct {
		file, id string
		state    backends.State
		code     int // -1: none
		sig      int
	}{
		{"03_tiny_queued-1", "3.pbshost", backends.Pending, -1, 0},
		{"03_tiny_running-1", "3.pbshost", backends.Running, -1, 0},
		{"03_tiny_finished-2", "3.pbshost", backends.Completed, 0, 0},
		{"04_exit3-1", "4.pbshost", backends.Failed, 3, 0},
		{"05_walltime_running-1", "5.pbshost", backends.Running, -1, 0},
		{"05_walltime_exceeded-1", "5.pbshost", backends.Timeout, -1, 0},
		{"06_qdel_running-1", "6.pbshost", backends.Running, -1, 0}, // R for a while after qdel
		{"06_qdel_running-2", "6.pbshost", backends.Cancelled, -1, 15},
		// the same qdel on another 23.06.06 server: F/91 with Exit_status 0
		{"16_qdel_running_exit0-1", "27.pbshost", backends.Cancelled, 0, 0},
		{"06_qdel_queued_held-1", "7.pbshost", backends.Pending, -1, 0},
		{"06_qdel_queued_held-2", "7.pbshost", backends.Cancelled, -1, 0},
		{"08_depend_afterok_failed_parent-2", "11.pbshost", backends.Cancelled, -1, 0},
		{"09_mpi-1", "12.pbshost", backends.Completed, 0, 0},
		{"11_never_run_ncpus8-1", "15.pbshost", backends.Pending, -1, 0},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			got, err := ParseQstat(load(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			st, ok := got[backends.JobID(c.id)]
			if !ok {
				t.Fatalf("%s not parsed: %v", c.id, got)
			}
			if st.State != c.state {
				t.Errorf("state %s (%s), want %s", st.State, st.Native, c.state)
			}
			if c.code == -1 && st.ExitCode != nil || c.code >= 0 && (st.ExitCode == nil || *st.ExitCode != c.code) {
				t.Errorf("exit code %v, want %d", st.ExitCode, c.code)
			}
			if st.Signal != c.sig {
				t.Errorf("signal %d, want %d", st.Signal, c.sig)
			}
			if st.Submit.IsZero() {
				t.Error("no submit time")
			}
		})
	}
	all, err := ParseQstat(load(t, "14_qstat_x_f_json_all-1"))
	if err != nil || len(all) < 15 {
		t.Fatalf("all jobs: %d %v", len(all), err)
	}
	run := all["5.pbshost"]
	if run.Start.IsZero() || run.End.IsZero() || len(run.Nodes) != 1 || run.Nodes[0] != "pbshost" {
		t.Errorf("times and nodes: %+v", run)
	}
	if held, _ := ParseQstat(load(t, "06_qdel_queued_held-1")); held["7.pbshost"].Reason == "" {
		t.Error("a held job gives a reason")
	}
}

// finishedJob is a qstat -x -f -F json document with one finished job.
func finishedJob(substate int, exit string) []byte {
	e := ""
	if exit != "" {
		e = `,"Exit_status":` + exit
	}
	return []byte(`{"timestamp":1,"pbs_version":"23.06.06","pbs_server":"pbshost","Jobs":{"1.pbshost":{` +
		`"job_state":"F","comment":"Job run at Thu Nov 26 at 19:59 on (pbshost:ncpus=1) and x",` +
		`"ctime":"Thu Nov 26 19:59:42 2026","substate":` + strconv.Itoa(substate) + e + `}}}`)
}

// A deleted job (substate 91) is Cancelled whatever Exit_status says: 271
// as captured, 0 as another 23.06 server reported, 143 from a wrapper that
// traps SIGTERM, none when it never ran.
func TestParseDeletedIsCancelled(t *testing.T) {
	for _, c := range []struct {
		exit string
		code int // -1: none
		sig  int
	}{{"271", -1, 15}, {"0", 0, 0}, {"143", 143, 0}, {"", -1, 0}, {"265", -1, 9}} {
		got, err := ParseQstat(finishedJob(91, c.exit))
		if err != nil {
			t.Fatal(err)
		}
		st := got["1.pbshost"]
		if st.State != backends.Cancelled {
			t.Errorf("Exit_status %q, substate 91: %s, want CANCELLED", c.exit, st.State)
		}
		if c.code == -1 && st.ExitCode != nil || c.code >= 0 && (st.ExitCode == nil || *st.ExitCode != c.code) || st.Signal != c.sig {
			t.Errorf("Exit_status %q: exit code %v signal %d, want %d %d", c.exit, st.ExitCode, st.Signal, c.code, c.sig)
		}
	}
	// Exit_status 0 without the deletion substate is still a success.
	if got, _ := ParseQstat(finishedJob(92, "0")); got["1.pbshost"].State != backends.Completed {
		t.Errorf("F/92 exit 0: %s", got["1.pbshost"].State)
	}
}

// The JOB_EXEC_* values of OpenPBS job.h (v23.06.06) map onto states, with
// a reason naming the limit or failure.
func TestParseJobExecCodes(t *testing.T) {
	for _, c := range []struct {
		exit   int
		state  backends.State
		reason string
	}{
		{-1, backends.Failed, "JOB_EXEC_FAIL1"},
		{-2, backends.Failed, "JOB_EXEC_FAIL2"},
		// start failures PBS calls retryable: retried like a node that failed to boot
		{-3, backends.BootFail, "JOB_EXEC_RETRY"},
		{-4, backends.BootFail, "JOB_EXEC_INITABT"},
		{-10, backends.Failed, "JOB_EXEC_FAILUID"},
		{-14, backends.NodeFail, "sister node"},
		{-20, backends.NodeFail, "mother superior"},
		{-24, backends.Failed, "ncpus, burst"},
		{-25, backends.Failed, "ncpus, sum"},
		{-26, backends.OutOfMemory, "virtual memory limit (vmem)"},
		{-27, backends.OutOfMemory, "memory limit (mem)"},
		{-28, backends.Failed, "CPU time limit (cput)"},
		{-29, backends.Timeout, "walltime"},
		{-30, backends.Failed, "JOB_EXEC_JOINJOB"},
		{-31, backends.Failed, "special exit status -31"}, // not in job.h
		{-99, backends.Failed, "special exit status -99"},
	} {
		got, err := ParseQstat(finishedJob(93, strconv.Itoa(c.exit)))
		if err != nil {
			t.Fatal(err)
		}
		st := got["1.pbshost"]
		if st.State != c.state || !strings.Contains(st.Reason, c.reason) {
			t.Errorf("Exit_status %d: %s %q, want %s with %q", c.exit, st.State, st.Reason, c.state, c.reason)
		}
		if st.ExitCode != nil {
			t.Errorf("Exit_status %d: exit code %d; PBS's own codes are no task exit code", c.exit, *st.ExitCode)
		}
		wantLimit := map[int]string{-24: "ncpus", -25: "ncpus", -28: "cput"}[c.exit]
		if st.LimitKill != wantLimit {
			t.Errorf("Exit_status %d: limit %q, want %q", c.exit, st.LimitKill, wantLimit)
		}
		if x, ok := jobExecs[c.exit]; ok && !strings.Contains(st.Reason, fmt.Sprintf("Exit_status %d, %s", c.exit, x.name)) {
			t.Errorf("Exit_status %d: reason %q does not name %s", c.exit, st.Reason, x.name)
		}
	}
	// Every constant is in the table, under its job.h name.
	for code, name := range map[int]string{
		jobExecFail1: "JOB_EXEC_FAIL1", jobExecFail2: "JOB_EXEC_FAIL2", jobExecRetry: "JOB_EXEC_RETRY",
		jobExecInitAbt: "JOB_EXEC_INITABT", jobExecInitRst: "JOB_EXEC_INITRST", jobExecInitRmg: "JOB_EXEC_INITRMG",
		jobExecBadResrt: "JOB_EXEC_BADRESRT", jobExecFailUID: "JOB_EXEC_FAILUID", jobExecRerun: "JOB_EXEC_RERUN",
		jobExecChkp: "JOB_EXEC_CHKP", jobExecFailPassword: "JOB_EXEC_FAIL_PASSWORD", jobExecRerunSisFail: "JOB_EXEC_RERUN_SIS_FAIL",
		jobExecQueRst: "JOB_EXEC_QUERST", jobExecFailHookRerun: "JOB_EXEC_FAILHOOK_RERUN", jobExecFailHookDelete: "JOB_EXEC_FAILHOOK_DELETE",
		jobExecHookRerun: "JOB_EXEC_HOOK_RERUN", jobExecHookDelete: "JOB_EXEC_HOOK_DELETE", jobExecRerunMSFail: "JOB_EXEC_RERUN_MS_FAIL",
		jobExecFailSecurity: "JOB_EXEC_FAIL_SECURITY", jobExecHookError: "JOB_EXEC_HOOKERROR", jobExecFailKRB5: "JOB_EXEC_FAIL_KRB5",
		jobExecKillNCPUsBurst: "JOB_EXEC_KILL_NCPUS_BURST", jobExecKillNCPUsSum: "JOB_EXEC_KILL_NCPUS_SUM",
		jobExecKillVmem: "JOB_EXEC_KILL_VMEM", jobExecKillMem: "JOB_EXEC_KILL_MEM", jobExecKillCPUT: "JOB_EXEC_KILL_CPUT",
		jobExecKillWalltime: "JOB_EXEC_KILL_WALLTIME", jobExecJoinJob: "JOB_EXEC_JOINJOB",
	} {
		if jobExecs[code].name != name {
			t.Errorf("%d: %q, want %s", code, jobExecs[code].name, name)
		}
	}
	if len(jobExecs) != 28 {
		t.Errorf("%d JOB_EXEC_* values, job.h has 28 below zero", len(jobExecs))
	}
}

func TestParseQstatEmpty(t *testing.T) {
	// qstat for unknown ids prints the skeleton without Jobs
	got, err := ParseQstat([]byte(`{"timestamp":1,"pbs_version":"23.06.06","pbs_server":"pbshost"}`))
	if err != nil || len(got) != 0 {
		t.Errorf("%v %v", got, err)
	}
	if _, err := ParseQstat([]byte("qstat: garbage")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestArgs(t *testing.T) {
	req := backends.JobRequest{Name: "n", Stdout: "/r/out", Stderr: "/r/err", Script: "/r/job.sh",
		Nodes: 2, NTasksPerNode: 4, CPUsPerTask: 2, GPUsPerTask: 1, MemoryMiB: 4096, Walltime: 90*time.Minute + time.Second,
		Partition: "workq", Account: "proj", ExtraArgs: []string{"-W", "depend=afterok:1"}}
	got := strings.Join(Args(req, Options{}), " ")
	want := "-N n -o /r/out -e /r/err -k oed -r n -l select=2:ncpus=8:mpiprocs=4:ompthreads=2:ngpus=4:mem=4096mb -l walltime=01:30:01 -l place=scatter -q workq -A proj -W depend=afterok:1 /r/job.sh"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// the environment the site's policy passes: names only, never -V
	req.Env = map[string]string{"B_VAR": "x,y", "A_VAR": "it's"}
	if got := strings.Join(Args(req, Options{}), " "); !strings.Contains(got, " -v A_VAR,B_VAR ") || strings.Contains(got, "-V") || strings.Contains(got, "x,y") {
		t.Errorf("with env: %s", got)
	}
	req.Env = nil
	if got := strings.Join(Args(req, Options{Stageout: true}), " "); strings.Contains(got, " -k ") {
		t.Errorf("stage-out: %s", got)
	}
	if got := strings.Join(Args(req, Options{Place: "scatter:excl"}), " "); !strings.Contains(got, " -l place=scatter:excl ") {
		t.Errorf("site place: %s", got)
	}
	if got := strings.Join(Args(req, Options{Place: "none"}), " "); strings.Contains(got, "place") {
		t.Errorf("place none: %s", got)
	}
	req.Nodes = 1
	if got := strings.Join(Args(req, Options{Place: "scatter:excl"}), " "); strings.Contains(got, "place") {
		t.Errorf("one node: %s", got)
	}
	if s := Select(backends.JobRequest{NTasks: 4}); s != "1:ncpus=4:mpiprocs=4" {
		t.Errorf("select %s", s)
	}
}

// FuzzParseQstat: any qstat output parses or errors, never panics.
func FuzzParseQstat(f *testing.F) {
	for _, n := range []string{"04_exit3-1", "05_walltime_exceeded-1", "06_qdel_running-2", "14_qstat_x_f_json_all-1"} {
		if b, err := os.ReadFile("testdata/openpbs-23.06_" + n + ".json"); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"Jobs":{"1.x":{"job_state":"F","Exit_status":300,"substate":91}}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := ParseQstat(raw)
		if err != nil {
			return
		}
		for id, st := range got {
			if st.ID != id || st.State == "" {
				t.Fatalf("bad status %+v", st)
			}
		}
	})
}

// Job names are made acceptable to OpenPBS's check_job_name.
func TestPBSName(t *testing.T) {
	for in, want := range map[string]string{
		"sim-1.a_b": "sim-1.a_b", "9lives": "9lives", "a b/c@d:e": "a_b_c_d_e", "_x": "t_x", ".x": "t_x", "": "t",
		"été": "t__t__", strings.Repeat("a", 300): strings.Repeat("a", 236),
	} {
		if got := pbsName(in); got != want {
			t.Errorf("pbsName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The queue limits of a real OpenPBS 23.06 server (captured after qmgr's
// "set queue workq resources_max.walltime=01:00:00").
func TestParseQueuesCaptured(t *testing.T) {
	raw, err := os.ReadFile("testdata/openpbs-qstat-Qf-walltime.json")
	if err != nil {
		t.Fatal(err)
	}
	parts, err := ParseQueues(raw, "workq")
	if err != nil {
		t.Fatal(err)
	}
	want := backends.Partition{Name: "workq", Kind: "queue", Default: true, Up: true, MaxTime: time.Hour}
	if len(parts) != 1 || parts[0] != want {
		t.Errorf("queues %+v, want [%+v]", parts, want)
	}
	if d := ParseDefaultQueue([]byte(`{"timestamp":1,"Server":{"pbshost":{"server_state":"Active","default_queue":"workq"}}}`)); d != "workq" {
		t.Errorf("default queue %q", d)
	}
}

// A queued job the scheduler has calendared carries estimated.start_time:
// the expected start, never the start.
func TestParseEstimatedStart(t *testing.T) {
	raw := []byte(`{"Jobs":{"9.h":{"job_state":"Q","comment":"Not Running: Insufficient amount of resource: ncpus",
		"estimated":{"exec_vnode":"(h:ncpus=4)","start_time":"Fri Dec  4 19:30:00 2026"}}}}`)
	got, err := ParseQstat(raw)
	if err != nil {
		t.Fatal(err)
	}
	st := got["9.h"]
	want := time.Date(2026, 12, 4, 19, 30, 0, 0, time.Local)
	if st.State != backends.Pending || !st.ExpectedStart.Equal(want) || !st.Start.IsZero() {
		t.Errorf("%+v", st)
	}
}
