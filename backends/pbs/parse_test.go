package pbs

import (
	"os"
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
	got := strings.Join(Args(req, ""), " ")
	want := "-N n -o /r/out -e /r/err -V -r n -l select=2:ncpus=8:mpiprocs=4:ngpus=4:mem=4096mb -l walltime=01:30:01 -l place=scatter -q workq -A proj -W depend=afterok:1 /r/job.sh"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := strings.Join(Args(req, "scatter:excl"), " "); !strings.Contains(got, " -l place=scatter:excl ") {
		t.Errorf("site place: %s", got)
	}
	if got := strings.Join(Args(req, "none"), " "); strings.Contains(got, "place") {
		t.Errorf("place none: %s", got)
	}
	req.Nodes = 1
	if got := strings.Join(Args(req, "scatter:excl"), " "); strings.Contains(got, "place") {
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
