package sbatch

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// captured reads a fixture and the job ids capture.sh recorded with it.
func captured(t *testing.T, kind, ver string) ([]byte, map[string]string) {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + kind + "-" + ver + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	idsRaw, err := os.ReadFile("testdata/ids-" + ver + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, f := range strings.Fields(string(idsRaw)) {
		k, v, _ := strings.Cut(f, "=")
		ids[k] = v
	}
	return raw, ids
}

type want struct {
	state  backends.State
	code   int // -1: no exit code expected
	sig    int
	reason string
}

var wantByRole = map[string]want{
	"ok":                {backends.Completed, 0, 0, ""},
	"fail":              {backends.Failed, 3, 0, "NonZeroExitCode"},
	"running":           {backends.Running, -1, 0, ""},
	"cancelled_running": {backends.Cancelled, -2, 0, ""}, // -2: any exit code
	"cancelled_pending": {backends.Cancelled, -2, 0, ""},
	"timeout":           {backends.Timeout, -2, 0, "TimeLimit"},
	"multi":             {backends.Completed, 0, 0, ""},
}

func TestParseSqueueCaptured(t *testing.T) {
	for _, ver := range []string{"22.05", "24.11"} {
		t.Run(ver, func(t *testing.T) {
			raw, ids := captured(t, "squeue", ver)
			got := map[backends.JobID]backends.JobStatus{}
			for _, st := range ParseSqueue(raw) {
				got[st.ID] = st
			}
			for role, w := range wantByRole {
				st, ok := got[backends.JobID(ids[role])]
				if !ok {
					t.Errorf("%s (job %s) not parsed", role, ids[role])
					continue
				}
				checkStatus(t, role, st, w)
			}
			if st := got[backends.JobID(ids["held"])]; st.State != backends.Pending || st.Reason != "JobHeldUser" {
				t.Errorf("held job: %+v", st)
			}
			if st := got[backends.JobID(ids["ok"])]; st.Submit.IsZero() || st.Start.IsZero() || st.End.IsZero() || len(st.Nodes) == 0 {
				t.Errorf("times or nodes missing: %+v", st)
			}
			if st := got[backends.JobID(ids["timeout"])]; st.Deadline.Sub(st.Start) != time.Minute {
				t.Errorf("deadline of the 1-minute job: %v after start", st.Deadline.Sub(st.Start))
			}
		})
	}
}

func TestParseSacctCaptured(t *testing.T) {
	raw, ids := captured(t, "sacct", "22.05")
	got := ParseSacct(raw)
	for _, role := range []string{"ok", "fail", "timeout"} {
		st, ok := got[backends.JobID(ids[role])]
		if !ok {
			t.Errorf("%s not parsed", role)
			continue
		}
		w := wantByRole[role]
		w.reason = "" // sacct's Reason is the pending reason only
		checkStatus(t, role, st, w)
	}
}

func checkStatus(t *testing.T, role string, st backends.JobStatus, w want) {
	t.Helper()
	if st.State != w.state {
		t.Errorf("%s: state %s (%s), want %s", role, st.State, st.Native, w.state)
	}
	switch {
	case w.code == -1 && st.ExitCode != nil:
		t.Errorf("%s: exit code %d, want none", role, *st.ExitCode)
	case w.code >= 0 && (st.ExitCode == nil || *st.ExitCode != w.code):
		t.Errorf("%s: exit code %v, want %d", role, st.ExitCode, w.code)
	}
	if w.reason != "" && st.Reason != w.reason {
		t.Errorf("%s: reason %q, want %q", role, st.Reason, w.reason)
	}
}

func TestParseSqueueOddLines(t *testing.T) {
	raw := []byte("12|RUNNING|None|0|node[01-03]|2026-01-01T00:00:00|2026-01-01T00:00:01|2026-01-01T01:00:01|1:00:00|tether:r|with|pipes:1\n" +
		"garbage\n13_[1-3]|PENDING|None|0||N/A|N/A|N/A|5:00|\n\n" +
		"14|CANCELLED by 0|None|15|n1|2026-01-01T00:00:00|2026-01-01T00:00:01|2026-01-01T00:00:02|UNLIMITED|\n" +
		"15|COMPLETED|None|768|n1|2026-01-01T00:00:00|2026-01-01T00:00:01|2026-01-01T00:00:02|2:00|\n")
	got := ParseSqueue(raw)
	if len(got) != 3 {
		t.Fatalf("parsed %d jobs: %+v", len(got), got)
	}
	if n := got[0].Nodes; len(n) != 3 || n[0] != "node01" || n[2] != "node03" {
		t.Errorf("nodes %v", n)
	}
	if got[0].ExitCode != nil {
		t.Errorf("a running job has no exit code yet")
	}
	if got[1].State != backends.Cancelled || got[1].Signal != 15 || got[1].ExitCode != nil {
		t.Errorf("cancelled: %+v (a job killed by a signal has no exit code, as on REST)", got[1])
	}
	// 24.11's "code:signal" form, and sacct's
	if q := ParseSqueue([]byte("16|FAILED|None|0:9|n1|N/A|N/A|N/A|2:00|\n")); len(q) != 1 || q[0].Signal != 9 || q[0].ExitCode != nil {
		t.Errorf("0:9: %+v", q)
	}
	if s := ParseSacct([]byte("17|FAILED|0:9|None|n1|N/A|N/A|N/A|2:00\n")); s["17"].Signal != 9 || s["17"].ExitCode != nil {
		t.Errorf("sacct 0:9: %+v", s["17"])
	}
	if got[2].State != backends.Completed || *got[2].ExitCode != 3 {
		t.Errorf("raw wait status 768 is exit 3: %+v", got[2])
	}
}

func TestArgs(t *testing.T) {
	req := backends.JobRequest{Name: "n", Dir: "/r/a", Stdout: "/r/a/stdout", Stderr: "/r/100%/err", Script: "/r/a/job.sh", Tag: "tether:r:1",
		Nodes: 2, NTasks: 8, NTasksPerNode: 4, CPUsPerTask: 2, GPUsPerTask: 1, MemoryMiB: 4096, Walltime: 90 * time.Second,
		Partition: "debug", Account: "acct", QoS: "q", Reservation: "res", Constraint: "c", Exclude: []string{"n1", "n2"},
		WarnSignal: "USR1", WarnBefore: 45 * time.Second, ExtraArgs: []string{"--exclusive"}}
	got := strings.Join(Args(req), " ")
	want := "--parsable --job-name=n --chdir=/r/a --output=/r/a/stdout --error=/r/100%%/err --comment=tether:r:1 --export=NONE --time=0-00:02:00 --no-requeue " +
		"--nodes=2 --ntasks=8 --ntasks-per-node=4 --cpus-per-task=2 --gpus-per-task=1 --mem=4096M --partition=debug --account=acct --qos=q " +
		"--reservation=res --constraint=c --exclude=n1,n2 --signal=B:USR1@45 --exclusive /r/a/job.sh"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// the site policy's names, never the whole environment, never values
	req.Env = map[string]string{"B_VAR": "x,y", "A_VAR": "it's"}
	if got := strings.Join(Args(req), " "); !strings.Contains(got, " --export=A_VAR,B_VAR ") || strings.Contains(got, "x,y") {
		t.Errorf("with env: %s", got)
	}
}

// FuzzParseSqueue: any squeue or sacct output parses without a panic, and
// every parsed job has a numeric id and a known state.
func FuzzParseSqueue(f *testing.F) {
	for _, name := range []string{"squeue-22.05.txt", "squeue-24.11.txt", "sacct-22.05.txt"} {
		if b, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("1|RUNNING|None|0|n[1-2]|N/A|N/A|N/A|1:00|x\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, st := range ParseSqueue(raw) {
			if st.ID == "" || st.State == "" {
				t.Fatalf("bad job %+v", st)
			}
		}
		for id, st := range ParseSacct(raw) {
			if id != st.ID || st.State == "" {
				t.Fatalf("bad job %+v", st)
			}
		}
	})
}
