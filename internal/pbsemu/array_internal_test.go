package pbsemu

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseJRange(t *testing.T) {
	for _, c := range []struct {
		in               string
		start, end, step int
		ok               bool
	}{
		{"1-3", 1, 3, 1, true}, {"0-199", 0, 199, 1, true}, {"1-10:2", 1, 10, 2, true}, {"0-999", 0, 999, 1, true},
		{"3-1", 0, 0, 0, false}, {"1-1", 0, 0, 0, false}, {"5", 0, 0, 0, false}, {"-3", 0, 0, 0, false},
		{"1-3:0", 0, 0, 0, false}, {"1-3:", 0, 0, 0, false}, {"a-3", 0, 0, 0, false}, {"1-3x", 0, 0, 0, false},
		{"1 -3", 0, 0, 0, false}, {"", 0, 0, 0, false}, {"1-3,5", 0, 0, 0, false},
	} {
		s, e, st, ok := parseJRange(c.in)
		if ok != c.ok || (ok && (s != c.start || e != c.end || st != c.step)) {
			t.Errorf("parseJRange(%q) = %d %d %d %v", c.in, s, e, st, ok)
		}
	}
}

func TestParseIndexList(t *testing.T) {
	got := parseIndexList("1-3,5, 7-11:2")
	want := []indexRange{{1, 3, 1}, {5, 5, 1}, {7, 11, 2}}
	if len(got) != len(want) {
		t.Fatalf("parseIndexList: %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseIndexList[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"3-1", "a", "1-3:0", "1-x"} {
		if r := parseIndexList(bad); r != nil {
			t.Errorf("parseIndexList(%q) = %v", bad, r)
		}
	}
}

// array_indices_remaining is range_to_str of the queued indices.
func TestRemainingRange(t *testing.T) {
	a := newArrayInfo("1-10:2", 1, 10, 2, nil)
	if a.Count != 5 || a.Remaining != "1-9:2" {
		t.Fatalf("new: %d %q", a.Count, a.Remaining)
	}
	a.unqueue(5)
	if a.Remaining != "1-3:2,7-9:2" {
		t.Errorf("without 5: %q", a.Remaining)
	}
	a.unqueue(1)
	a.unqueue(9)
	if a.Remaining != "3,7" || a.remaining() != "3,7" {
		t.Errorf("3 and 7 left: %q", a.Remaining)
	}
	if i, ok := a.nextQueued(); !ok || i != 3 {
		t.Errorf("next %d %v", i, ok)
	}
	a.unqueue(3)
	a.unqueue(7)
	if a.Remaining != "" || a.remaining() != "-" || a.nQueued != 0 {
		t.Errorf("none left: %q %q %d", a.Remaining, a.remaining(), a.nQueued)
	}
	b := newArrayInfo("0-9", 0, 9, 1, nil)
	b.unqueue(0)
	b.unqueue(4)
	b.Remaining = b.remainingRange()
	c := &ArrayInfo{Start: 0, End: 9, Step: 1, Count: 10, Remaining: b.Remaining}
	c.restore()
	if c.nQueued != 8 || c.isQueued(4) || !c.isQueued(5) || c.remainingRange() != "1-3,5-9" {
		t.Errorf("restore: %d %q", c.nQueued, c.remainingRange())
	}
	if _, ok := c.pos(10); ok {
		t.Errorf("10 is not an index of 0-9")
	}
}

// capturedArray is capture 13's array, 17[] of qsub -J 1-3 -- /bin/sleep 3.
func capturedArray(t *testing.T) (*Job, *Config) {
	t.Helper()
	cfg := DefaultConfig()
	rr, err := resolveResources([]KeyVal{{"select", "1:ncpus=1"}, {"walltime", "00:00:20"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &Job{
		Seq: 17, ID: "17[].pbshost", Name: "STDIN", Owner: "pbsuser@pbshost", User: "pbsuser", Queue: "workq",
		State: "Q", Substate: subQueued, Project: "_pbs_project_default", HoldTypes: "n", JoinPath: "n",
		KeepFiles: "n", MailPoints: "a", Checkpoint: "u", Rerunable: true,
		OutputPath: "pbshost:/home/pbsuser/cases/STDIN.o17.^array_index^",
		ErrorPath:  "pbshost:/home/pbsuser/cases/STDIN.e17.^array_index^",
		Ctime:      1, Qtime: 1, Mtime: 1, Etime: 1, Resources: rr, Home: "/home/pbsuser",
		SubmitArgs: "-J 1-3 -l select=1:ncpus=1 -l walltime=00:00:20 -- /bin/sleep 3", SubmitHost: "pbshost",
		Executable: "/bin/sleep", Args: []string{"3"}, VariableList: []KeyVal{{"PBS_O_HOME", "/home/pbsuser"}},
		Array: newArrayInfo("1-3", 1, 3, 1, nil),
	}
	return p, &cfg
}

func attrOrder(a []Attr) string {
	var out []string
	seen := map[string]bool{}
	for _, x := range a {
		k := x.Name + "." + x.Resource
		if !seen[k] {
			out = append(out, k)
			seen[k] = true
		}
	}
	return strings.Join(out, " ")
}

// The parent (begun and finished) and a finished subjob have the
// captured attributes in the captured order, and the array attributes
// have the captured values.
func TestArrayAttrsMatchCapture(t *testing.T) {
	p, cfg := capturedArray(t)
	now := time.Unix(100, 0)
	s := &server{cfg: *cfg, jobs: map[int]*Job{17: p}}
	// Begun: subjobs 1 and 2 run, 3 is queued.
	for _, i := range []int{1, 2} {
		sj := s.newSubjob(p, i, now)
		p.Array.unqueue(i)
		sj.State, sj.Substate, sj.RunCount, sj.Stime = "R", subRunning, 1, 2
		p.Array.subjobs[i], p.Array.active[i] = sj, sj
	}
	p.State, p.Substate, p.Stime, p.Comment = "B", subBegun, 2, "Job Array Began at Thu Nov 26 at 20:00"
	begun := capturedJob(t, "13_job_array.txt", "qstat -f -F json 17[].pbshost", "17[].pbshost")
	got := p.Attrs(cfg, now)
	if attrOrder(got) != attrOrder(begun) {
		t.Errorf("begun parent order\n got: %s\nwant: %s", attrOrder(got), attrOrder(begun))
	}
	for _, n := range []string{"job_state", "substate", "array", "array_state_count", "array_indices_submitted", "array_indices_remaining"} {
		g, _ := attrValue(got, n, "")
		w, _ := attrValue(begun, n, "")
		if g != w {
			t.Errorf("begun %s = %q, want %q", n, g, w)
		}
	}

	// Finished: every subjob ran and exited 0.
	for _, i := range []int{1, 2, 3} {
		sj := p.Array.subjobs[i]
		if sj == nil {
			sj = s.newSubjob(p, i, now)
			p.Array.unqueue(i)
			p.Array.subjobs[i] = sj
		}
		zero, one := 0, 1
		sj.State, sj.Substate, sj.RunCount, sj.Stime, sj.ObitTime, sj.HistoryTime = "X", subFinished, 1, 2, 3, 3
		sj.ExitStatus, sj.Stageout, sj.Used, sj.SessionID = &zero, &one, &Usage{NCPUs: 1}, 9529
		sj.ExecHost, sj.ExecVnode = "pbshost/1", "(pbshost:ncpus=1)"
		sj.Comment = "Job run at Thu Nov 26 at 20:00 on (pbshost:ncpus=1) and finished"
		delete(p.Array.active, i)
	}
	s.inst = Instance{Home: t.TempDir()}
	s.log = discardLogger()
	if !s.checkArrayDone(p, now) {
		t.Fatal("array not done")
	}
	finished := capturedJob(t, "13_job_array.txt", "qstat -x -f -F json 17[].pbshost", "17[].pbshost")
	got = p.Attrs(cfg, now)
	if attrOrder(got) != attrOrder(finished) {
		t.Errorf("finished parent order\n got: %s\nwant: %s", attrOrder(got), attrOrder(finished))
	}
	for _, n := range []string{"job_state", "substate", "comment", "Stageout_status", "Exit_status", "array_state_count", "array_indices_remaining"} {
		g, _ := attrValue(got, n, "")
		w, _ := attrValue(finished, n, "")
		if g != w {
			t.Errorf("finished %s = %q, want %q", n, g, w)
		}
	}
	sub := capturedJob(t, "13_job_array.txt", "qstat -x -f -F json 17[2].pbshost", "17[2].pbshost")
	got = p.Array.subjobs[2].Attrs(cfg, now)
	if attrOrder(got) != attrOrder(sub) {
		t.Errorf("subjob order\n got: %s\nwant: %s", attrOrder(got), attrOrder(sub))
	}
	for _, n := range []string{"job_state", "substate", "Output_Path", "Error_Path", "array_id", "array_index", "exec_host", "comment"} {
		g, _ := attrValue(got, n, "")
		w, _ := attrValue(sub, n, "")
		if g != w {
			t.Errorf("subjob %s = %q, want %q", n, g, w)
		}
	}
}

// qstat -t's rows for the parent and a subjob are the captured bytes.
func TestArrayRowsMatchCapture(t *testing.T) {
	begun := capturedJob(t, "13_job_array.txt", "qstat -f -F json 17[].pbshost", "17[].pbshost")
	table := findBlock(t, "13_job_array.txt", "qstat -t")
	if row := defaultRow(begun, "17[].pbshost"); !strings.HasPrefix(table, defaultHeader+row) {
		t.Errorf("parent row %q not in\n%s", row, table)
	}
	// a queued subjob as qstat -t shows it: the parent's attributes, Q
	q := fakeSubjob(begun, "Q", subQueued)
	if row := defaultRow(q, "17[3].pbshost"); !strings.HasSuffix(table, row) {
		t.Errorf("queued subjob row %q not in\n%s", row, table)
	}
	if v, _ := attrValue(q, "substate", ""); v != "10" {
		t.Errorf("queued subjob substate %q", v)
	}
	if _, ok := attrValue(q, "array", ""); ok {
		t.Errorf("queued subjob has the array attributes")
	}
	sub := capturedJob(t, "13_job_array.txt", "qstat -x -f -F json 17[2].pbshost", "17[2].pbshost")
	if row := defaultRow(sub, "17[2].pbshost"); !strings.Contains(findBlock(t, "13_job_array.txt", "qstat -x -t"), row) {
		t.Errorf("finished subjob row %q", row)
	}
	// a finished subjob without a job of its own
	x := fakeSubjob(begun, "X", -1)
	if v, _ := attrValue(x, "comment", ""); v != "Subjob finished" {
		t.Errorf("expired subjob comment %q", v)
	}
	if v, _ := attrValue(x, "substate", ""); v != "70" {
		t.Errorf("expired subjob substate %q (status_subjob keeps the parent's)", v)
	}
}
