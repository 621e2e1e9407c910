package pbsemu_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
)

// qsubArray submits a job array and returns the parent's id "N[].pbshost".
func (e *env) qsubArray(args ...string) string {
	e.t.Helper()
	r := e.run("qsub", args...)
	if r.Code != 0 {
		e.t.Fatalf("qsub %v: rc=%d %s", args, r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	if !regexp.MustCompile(`^\d+\[\]\.pbshost$`).MatchString(id) {
		e.t.Fatalf("qsub %v printed %q, want N[].pbshost", args, r.Stdout)
	}
	return id
}

// sj is the id of subjob idx of the array parent id.
func sj(parent string, idx int) string {
	return strings.Replace(parent, "[]", "["+strconv.Itoa(idx)+"]", 1)
}

// seqOf is the sequence number of a job or array id.
func seqOf(id string) string {
	s, _, _ := strings.Cut(id, "[")
	s, _, _ = strings.Cut(s, ".")
	return s
}

// statDoc runs qstat with args and decodes its JSON.
func (e *env) statDoc(args ...string) (qstatJSON, pbsemutest.Result) {
	e.t.Helper()
	r := e.run("qstat", args...)
	var doc qstatJSON
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		e.t.Fatalf("qstat %v: bad JSON %q: %v", args, r.Stdout, err)
	}
	return doc, r
}

// table runs a qstat table command and returns id -> state per row.
func (e *env) table(args ...string) ([]string, map[string]string) {
	e.t.Helper()
	r := e.run("qstat", args...)
	if r.Code != 0 {
		e.t.Fatalf("qstat %v: %+v", args, r)
	}
	var ids []string
	states := map[string]string{}
	for _, line := range strings.Split(r.Stdout, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] == "Job" || strings.HasPrefix(f[0], "---") {
			continue
		}
		ids = append(ids, f[0])
		states[f[0]] = f[4]
	}
	return ids, states
}

// The capture's array, replayed: qsub -J prints N[].pbshost, the parent is
// Q, then B (substate 70, "Job Array Began at") while subjobs run, F when
// all are done; qstat -t lists the parent and then each subjob; the JSON
// of parent and subjobs has the captured attributes.
func TestArrayLifecycle(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NoScheduling: true})
	release := filepath.Join(e.dir, "release")
	id := e.qsubArray("-J", "1-3", "-l", "select=1:ncpus=1", "-l", "walltime=00:00:20", "--",
		"/bin/sh", "-c", "while [ ! -e "+release+" ]; do sleep 0.05; done; echo index=$PBS_ARRAY_INDEX")
	seq := seqOf(id)
	if id != seq+"[].pbshost" {
		t.Fatalf("id %s", id)
	}
	q, _ := e.stat(id, false)
	if str(q, "job_state") != "Q" || num(q, "substate") != 10 || str(q, "array") != "True" ||
		str(q, "array_indices_submitted") != "1-3" || str(q, "array_indices_remaining") != "1-3" ||
		str(q, "array_state_count") != "Queued:3 Running:0 Exiting:0 Expired:0" {
		t.Errorf("queued array: %v", q)
	}
	if str(q, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "STDIN.o"+seq+".^array_index^") ||
		str(q, "Error_Path") != "pbshost:"+filepath.Join(e.dir, "STDIN.e"+seq+".^array_index^") {
		t.Errorf("array paths %v %v", q["Output_Path"], q["Error_Path"])
	}
	if q["stime"] != nil || q["comment"] != nil {
		t.Errorf("queued array has stime/comment: %v %v", q["stime"], q["comment"])
	}
	// A subjob that has not run is the parent's attributes up to "array".
	sq, _ := e.stat(sj(id, 2), false)
	if str(sq, "job_state") != "Q" || sq["array"] != nil || sq["project"] != nil || str(sq, "Submit_arguments") == "" {
		t.Errorf("queued subjob: %v", sq)
	}

	e.srv.SetScheduling(true)
	// 2 cpus: subjobs 1 and 2 run, 3 waits
	e.waitJob(id, "have two running subjobs", 10*time.Second, func(j map[string]any) bool {
		return str(j, "array_state_count") == "Queued:1 Running:2 Exiting:0 Expired:0"
	})
	b, _ := e.stat(id, false)
	if str(b, "job_state") != "B" || num(b, "substate") != 70 || num(b, "array_indices_remaining") != 3 ||
		!regexp.MustCompile(`^Job Array Began at \w{3} \w{3} \d\d at \d\d:\d\d$`).MatchString(str(b, "comment")) || b["stime"] == nil {
		t.Errorf("begun array: %v", b)
	}
	sameKeys(t, "begun array", b, capturedKeys(t, "13_job_array.txt", "17[].pbshost"), "PBS_O_LANG")
	e.waitJob(sj(id, 2), "report its session", 10*time.Second, func(j map[string]any) bool { return j["session_id"] != nil })
	ids, states := e.table("-t")
	want := []string{seq + "[].pbshost", seq + "[1].pbshost", seq + "[2].pbshost", seq + "[3].pbshost"}
	if strings.Join(ids, " ") != strings.Join(want, " ") || states[want[0]] != "B" || states[want[1]] != "R" || states[want[2]] != "R" || states[want[3]] != "Q" {
		t.Errorf("qstat -t: %v %v", ids, states)
	}
	if ids, _ := e.table(); len(ids) != 1 || ids[0] != want[0] {
		t.Errorf("qstat without -t lists %v", ids)
	}
	r2, _ := e.stat(sj(id, 2), false)
	if str(r2, "job_state") != "R" || str(r2, "array_id") != id || num(r2, "array_index") != 2 ||
		str(r2, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "STDIN.o"+seq+".2") || r2["Hold_Types"] != nil || r2["Checkpoint"] != nil {
		t.Errorf("running subjob: %v", r2)
	}
	if eh := str(r2, "exec_host"); eh != "pbshost/0" && eh != "pbshost/1" {
		t.Errorf("exec_host %q", eh)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := e.wait(id, "F", 20*time.Second)
	if num(f, "substate") != 92 || num(f, "Exit_status") != 0 || num(f, "Stageout_status") != 1 ||
		str(f, "array_indices_remaining") != "-" || str(f, "array_state_count") != "Queued:0 Running:0 Exiting:0 Expired:0" ||
		!strings.HasSuffix(str(f, "comment"), " and finished") {
		t.Errorf("finished array: %v", f)
	}
	sameKeys(t, "finished array", f, capturedKeys(t, "14_qstat_x_f_json_all.txt", "17[].pbshost"), "PBS_O_LANG")
	for i := 1; i <= 3; i++ {
		s, _ := e.stat(sj(id, i), true)
		if str(s, "job_state") != "F" || num(s, "substate") != 92 || num(s, "Exit_status") != 0 || num(s, "run_count") != 1 ||
			!strings.HasSuffix(str(s, "comment"), " and finished") {
			t.Errorf("subjob %d: %v", i, s)
		}
		sameKeys(t, "finished subjob", s, capturedKeys(t, "13_job_array.txt", "17[2].pbshost"), "PBS_O_LANG")
		out, _ := os.ReadFile(filepath.Join(e.dir, "STDIN.o"+seq+"."+strconv.Itoa(i)))
		if string(out) != "index="+strconv.Itoa(i)+"\n" {
			t.Errorf("subjob %d output %q", i, out)
		}
	}
	// finished: without -x an error, with -x -t everything
	if _, r := e.stat(sj(id, 2), false); r.Code != 35 || r.Stderr != "qstat: "+sj(id, 2)+" Job has finished, use -x or -H to obtain historical job information\n" {
		t.Errorf("finished subjob without -x: %+v", r)
	}
	ids, states = e.table("-x", "-t")
	if strings.Join(ids, " ") != strings.Join(want, " ") || states[want[0]] != "F" || states[want[3]] != "F" {
		t.Errorf("qstat -x -t: %v %v", ids, states)
	}
	doc, _ := e.statDoc("-x", "-f", "-F", "json", "-t")
	if len(doc.Jobs) != 4 {
		t.Errorf("qstat -x -f -F json -t: %d jobs", len(doc.Jobs))
	}
	if doc, _ := e.statDoc("-x", "-f", "-F", "json"); len(doc.Jobs) != 1 {
		t.Errorf("qstat -x -f -F json without -t: %d jobs", len(doc.Jobs))
	}
	if r := e.run("qselect", "-x"); r.Stdout != id+"\n" {
		t.Errorf("qselect -x: %q", r.Stdout)
	}
	// several subjob ids and a job in one call
	single := e.qsub(e.script("one.sh", "true\n"))
	e.wait(single, "F", 10*time.Second)
	doc, r := e.statDoc("-x", "-f", "-F", "json", sj(id, 1), sj(id, 3), single)
	if r.Code != 0 || len(doc.Jobs) != 3 || doc.Jobs[sj(id, 3)] == nil || doc.Jobs[single] == nil {
		t.Errorf("mixed ids: %+v", r)
	}
	for _, bad := range []string{sj(id, 4), sj(id, 0), seq + ".pbshost", "999[].pbshost", "999[1].pbshost"} {
		if _, r := e.stat(bad, true); r.Code != 153 || r.Stderr != "qstat: Unknown Job Id "+bad+"\n" {
			t.Errorf("qstat %s: %+v", bad, r)
		}
	}
}

// A subjob's environment: PBS_ARRAY_INDEX, PBS_ARRAY_ID, its own
// PBS_JOBID, the usual variables and -v ones; ^array_index^ in -o/-e;
// #PBS -J in the script; -k keeps <name>.o<seq>.<index> in the home.
func TestArrayEnvironmentAndPaths(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{})
	e.script("env.sh", `#!/bin/bash
#PBS -N arrenv
#PBS -J 0-1
#PBS -l walltime=00:00:30
echo "idx=$PBS_ARRAY_INDEX aid=$PBS_ARRAY_ID jid=$PBS_JOBID name=$PBS_JOBNAME q=$PBS_QUEUE env=$PBS_ENVIRONMENT wd=$PBS_O_WORKDIR tag=$TAG"
echo "nodefile=$PBS_NODEFILE tmpdir=$TMPDIR"
echo err-$PBS_ARRAY_INDEX >&2
`)
	id := e.qsubArray("-v", "TAG=hello", "-o", filepath.Join(e.dir, "out.^array_index^.txt"), "env.sh")
	e.wait(id, "F", 20*time.Second)
	seq := seqOf(id)
	for i := 0; i <= 1; i++ {
		s, _ := e.stat(sj(id, i), true)
		if str(s, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "out."+strconv.Itoa(i)+".txt") ||
			str(s, "Error_Path") != "pbshost:"+filepath.Join(e.dir, "arrenv.e"+seq+"."+strconv.Itoa(i)) ||
			sub(s, "Variable_List", "TAG") != "hello" || sub(s, "Resource_List", "walltime") != "00:00:30" {
			t.Errorf("subjob %d: %v %v %v", i, s["Output_Path"], s["Error_Path"], s["Variable_List"])
		}
		out, _ := os.ReadFile(filepath.Join(e.dir, "out."+strconv.Itoa(i)+".txt"))
		want := fmt.Sprintf("idx=%d aid=%s jid=%s name=arrenv q=workq env=PBS_BATCH wd=%s tag=hello\n", i, id, sj(id, i), e.dir)
		if !strings.HasPrefix(string(out), want) ||
			!strings.Contains(string(out), "nodefile="+filepath.Join(e.srv.Home, "aux", sj(id, i))+" tmpdir="+filepath.Join(e.srv.Home, "tmp", "pbs."+sj(id, i))+"\n") {
			t.Errorf("subjob %d output %q, want prefix %q", i, out, want)
		}
		if b, _ := os.ReadFile(filepath.Join(e.dir, "arrenv.e"+seq+"."+strconv.Itoa(i))); string(b) != "err-"+strconv.Itoa(i)+"\n" {
			t.Errorf("subjob %d stderr %q", i, b)
		}
	}
	p, _ := e.stat(id, true)
	if str(p, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "out.^array_index^.txt") || str(p, "Submit_arguments") != "-v TAG=hello -o "+filepath.Join(e.dir, "out.^array_index^.txt")+" env.sh" {
		t.Errorf("parent: %v %v", p["Output_Path"], p["Submit_arguments"])
	}

	// a held array: H until qrls, then its subjobs run
	held := e.qsubArray("-h", "-J", "0-1", "--", "/bin/true")
	if h, _ := e.stat(held, false); str(h, "job_state") != "H" || num(h, "substate") != 20 || str(h, "Hold_Types") != "u" {
		t.Errorf("held array: %v %v %v", h["job_state"], h["substate"], h["Hold_Types"])
	}
	if r := e.run("qrls", held); r.Code != 0 {
		t.Errorf("qrls array: %+v", r)
	}
	if f := e.wait(held, "F", 20*time.Second); num(f, "Exit_status") != 0 {
		t.Errorf("released array: %v", f["Exit_status"])
	}

	// -k oe: the files stay in the home as <name>.o<seq>.<index>
	home := filepath.Join(filepath.Dir(e.srv.Home), "home")
	k := e.qsubArray("-k", "oe", "-J", "3-4", "-N", "kept", "--", "/bin/echo", "kept")
	e.wait(k, "F", 20*time.Second)
	for _, i := range []string{"3", "4"} {
		if b, err := os.ReadFile(filepath.Join(home, "kept.o"+seqOf(k)+"."+i)); err != nil || string(b) != "kept\n" {
			t.Errorf("kept output %s: %q %v", i, b, err)
		}
	}
}

// Steps, the %N throttle, and the refusals of bad -J values.
func TestArrayRangesAndThrottle(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 4, NoScheduling: true})
	stepped := e.qsubArray("-J", "1-10:2", "--", "/bin/true")
	p, _ := e.stat(stepped, false)
	if str(p, "array_indices_submitted") != "1-10:2" || str(p, "array_indices_remaining") != "1-9:2" ||
		str(p, "array_state_count") != "Queued:5 Running:0 Exiting:0 Expired:0" {
		t.Errorf("stepped array: %v %v %v", p["array_indices_submitted"], p["array_indices_remaining"], p["array_state_count"])
	}
	if ids, _ := e.table("-t", stepped); strings.Join(ids, " ") != stepped+" "+sj(stepped, 1)+" "+sj(stepped, 3)+" "+sj(stepped, 5)+" "+sj(stepped, 7)+" "+sj(stepped, 9) {
		t.Errorf("stepped subjobs: %v", ids)
	}
	if _, r := e.stat(sj(stepped, 2), false); r.Code != 153 {
		t.Errorf("off-step index: %+v", r)
	}
	// a range of subjob ids
	if doc, r := e.statDoc("-f", "-F", "json", strings.Replace(stepped, "[]", "[3-7:2]", 1)); r.Code != 0 || len(doc.Jobs) != 3 || doc.Jobs[sj(stepped, 5)] == nil {
		t.Errorf("qstat of a range: %+v", r)
	}

	release := filepath.Join(e.dir, "release")
	throttled := e.qsubArray("-J", "0-9%3", "-N", "thr", e.script("thr.sh", "while [ ! -e "+release+" ]; do sleep 0.05; done\n"))
	p, _ = e.stat(throttled, false)
	if num(p, "max_run_subjobs") != 3 || str(p, "array_indices_submitted") != "0-9" {
		t.Errorf("throttled array: %v %v", p["max_run_subjobs"], p["array_indices_submitted"])
	}
	e.run("qdel", stepped)
	e.srv.SetScheduling(true)
	running := func() int {
		_, states := e.table("-x", "-t", throttled)
		n := 0
		for id, st := range states {
			if st == "R" && id != throttled {
				n++
			}
		}
		return n
	}
	e.waitUntil("3 subjobs run", 10*time.Second, func() (bool, string) {
		n := running()
		return n == 3, strconv.Itoa(n)
	})
	// 4 cpus, but %3: the fourth stays queued for a while
	for i := 0; i < 10; i++ {
		if n := running(); n != 3 {
			t.Fatalf("%d subjobs running with %%3", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := running(); n > 3 {
			t.Fatalf("%d subjobs running with %%3", n)
		}
		if j, _ := e.stat(throttled, true); str(j, "job_state") == "F" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("throttled array did not finish")
		}
		time.Sleep(20 * time.Millisecond)
	}

	for _, bad := range []string{"3-1", "1-1", "a-3", "1-3:0", "5", "-3", "1-3x", ""} {
		r := e.run("qsub", "-J", bad, "--", "/bin/true")
		if r.Code != 2 || !strings.HasPrefix(r.Stderr, "qsub: illegal -J value\nusage: qsub") {
			t.Errorf("-J %q: %+v", bad, r)
		}
	}
	for _, c := range []struct {
		args   []string
		stderr string
		code   int
	}{
		{[]string{"-J", "0-10000"}, "qsub: Array job exceeds server or queue size limit\n", 3},
		{[]string{"-J", "1-3%x"}, "qsub: Illegal attribute or resource value\n", 166},
		{[]string{"-W", "max_run_subjobs=2"}, "qsub: Attribute has to be set on an array job\n", 127},
	} {
		r := e.run("qsub", append(c.args, "--", "/bin/true")...)
		if r.Code != c.code || r.Stderr != c.stderr {
			t.Errorf("qsub %v: %+v", c.args, r)
		}
	}
	if r := e.run("qsub", "-r", "n", "-J", "1-2", "--", "/bin/true"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "qsub:  cannot submit non-rerunable Array Job\nusage: qsub") {
		t.Errorf("-r n -J: %+v", r)
	}
	if r := e.run("qsub", "-J", "1-2%1", "-W", "max_run_subjobs=1", "--", "/bin/true"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "qsub: multiple max_run_subjobs values found\n") {
		t.Errorf("two max_run_subjobs: %+v", r)
	}
	// the largest array: max_array_size subjobs
	e.srv.SetScheduling(false)
	big := e.qsubArray("-J", "1-10000", "--", "/bin/true")
	if p, _ := e.stat(big, false); str(p, "array_indices_remaining") != "1-10000" {
		t.Errorf("big array: %v", p["array_indices_remaining"])
	}
}

// qdel of the parent ends the whole array in one command; qdel of one
// subjob ends that one; finished, exiting and unknown subjobs are refused
// like OpenPBS does.
func TestArrayQdel(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 2, KillDelay: time.Second})
	e.script("long.sh", "#PBS -N long\necho started $PBS_ARRAY_INDEX\nsleep 300\n")
	whole := e.qsubArray("-J", "0-5", "long.sh")
	e.waitJob(whole, "run two subjobs", 10*time.Second, func(j map[string]any) bool {
		return str(j, "array_state_count") == "Queued:4 Running:2 Exiting:0 Expired:0"
	})
	e.waitJob(sj(whole, 1), "report its session", 10*time.Second, func(j map[string]any) bool { return j["session_id"] != nil })
	if r := e.run("qdel", whole); r.Code != 0 || r.Stderr != "" {
		t.Fatalf("qdel array: %+v", r)
	}
	f := e.wait(whole, "F", 15*time.Second)
	if num(f, "substate") != 91 || num(f, "Exit_status") != 1 || str(f, "array_indices_remaining") != "-" ||
		!strings.HasSuffix(str(f, "comment"), " and terminated") || str(f, "array_state_count") != "Queued:0 Running:0 Exiting:0 Expired:4" {
		t.Errorf("deleted array: %v %v %v %v %v", f["substate"], f["Exit_status"], f["array_indices_remaining"], f["comment"], f["array_state_count"])
	}
	for i := 0; i <= 1; i++ {
		s, _ := e.stat(sj(whole, i), true)
		if str(s, "job_state") != "F" || num(s, "substate") != 91 || num(s, "Exit_status") != 271 ||
			!strings.HasSuffix(str(s, "comment"), " and terminated by root@pbshost") {
			t.Errorf("killed subjob %d: %v %v %v %v", i, s["job_state"], s["substate"], s["Exit_status"], s["comment"])
		}
	}
	seq := seqOf(whole)
	for i := 2; i <= 5; i++ {
		s, _ := e.stat(sj(whole, i), true)
		if str(s, "job_state") != "F" || str(s, "comment") != "Subjob finished" || s["exec_host"] != nil {
			t.Errorf("never-run subjob %d: %v %v %v", i, s["job_state"], s["comment"], s["exec_host"])
		}
		if _, err := os.Stat(filepath.Join(e.dir, "long.o"+seq+"."+strconv.Itoa(i))); err == nil {
			t.Errorf("subjob %d ran", i)
		}
	}
	if r := e.run("qdel", whole); r.Code != 35 || r.Stderr != "qdel: Job has finished "+whole+"\n" {
		t.Errorf("qdel finished array: %+v", r)
	}
	if r := e.run("qdel", sj(whole, 1)); r.Code != 35 || r.Stderr != "qdel: Job has finished "+sj(whole, 1)+"\n" {
		t.Errorf("qdel subjob of finished array: %+v", r)
	}

	// One subjob at a time.
	e.script("quick.sh", "#PBS -N quick\nif [ $PBS_ARRAY_INDEX = 0 ]; then exit 0; fi\nsleep 300\n")
	one := e.qsubArray("-J", "0-3", "quick.sh")
	e.wait(sj(one, 0), "X", 10*time.Second)
	e.waitJob(sj(one, 1), "report its session", 10*time.Second, func(j map[string]any) bool { return j["session_id"] != nil })
	x, _ := e.stat(sj(one, 0), false) // X while the array lives: no -x needed
	if str(x, "job_state") != "X" || num(x, "substate") != 92 || num(x, "Exit_status") != 0 {
		t.Errorf("expired subjob: %v %v %v", x["job_state"], x["substate"], x["Exit_status"])
	}
	for _, c := range []struct {
		id, stderr string
		code       int
	}{
		{sj(one, 0), "qdel: Request invalid for finished array subjob " + sj(one, 0) + "\n", 55},
		{sj(one, 9), "qdel: Invalid request " + sj(one, 9) + "\n", 156},
		{strings.Replace(one, "[]", "[x]", 1), "qdel: Invalid request " + strings.Replace(one, "[]", "[x]", 1) + "\n", 156},
		{"999[1].pbshost", "qdel: Unknown Job Id 999[1].pbshost\n", 153},
	} {
		if r := e.run("qdel", c.id); r.Code != c.code || r.Stderr != c.stderr {
			t.Errorf("qdel %s: %+v", c.id, r)
		}
	}
	// the queued subjob 3 expires without running, the running 1 is killed
	if r := e.run("qdel", sj(one, 3)); r.Code != 0 {
		t.Errorf("qdel queued subjob: %+v", r)
	}
	q3, _ := e.stat(sj(one, 3), false)
	if str(q3, "job_state") != "X" || str(q3, "comment") != "Subjob finished" {
		t.Errorf("deleted queued subjob: %v %v", q3["job_state"], q3["comment"])
	}
	if r := e.run("qdel", sj(one, 1)); r.Code != 0 {
		t.Errorf("qdel running subjob: %+v", r)
	}
	k := e.wait(sj(one, 1), "X", 10*time.Second)
	if num(k, "substate") != 91 || num(k, "Exit_status") != 271 {
		t.Errorf("killed subjob: %v %v", k["substate"], k["Exit_status"])
	}
	p, _ := e.stat(one, false)
	if str(p, "job_state") != "B" || str(p, "array_indices_remaining") != "-" || str(p, "array_state_count") != "Queued:0 Running:1 Exiting:0 Expired:3" {
		t.Errorf("array after single deletions: %v %v %v", p["job_state"], p["array_indices_remaining"], p["array_state_count"])
	}
	if r := e.run("qdel", sj(one, 2)); r.Code != 0 {
		t.Errorf("qdel last subjob: %+v", r)
	}
	f = e.wait(one, "F", 10*time.Second)
	if num(f, "substate") != 91 || !strings.HasSuffix(str(f, "comment"), " and terminated") {
		t.Errorf("array whose subjobs were deleted one by one: %v %v", f["substate"], f["comment"])
	}
	if _, err := os.Stat(filepath.Join(e.dir, "quick.o"+seqOf(one)+".3")); err == nil {
		t.Errorf("deleted queued subjob ran")
	}
	// a range of subjobs
	rng := e.qsubArray("-J", "0-3", "-h", "quick.sh")
	if r := e.run("qdel", strings.Replace(rng, "[]", "[1-2]", 1)); r.Code != 0 {
		t.Errorf("qdel range: %+v", r)
	}
	if p, _ := e.stat(rng, false); str(p, "array_indices_remaining") != "0,3" || str(p, "job_state") != "H" {
		t.Errorf("after qdel of a range: %v %v", p["array_indices_remaining"], p["job_state"])
	}
	if r := e.run("qdel", strings.Replace(rng, "[]", "[7-9]", 1)); r.Code != 153 {
		t.Errorf("qdel range outside the array: %+v", r)
	}
	if r := e.run("qdel", rng); r.Code != 0 {
		t.Errorf("qdel held array: %+v", r)
	}
	if f, _ := e.stat(rng, true); str(f, "job_state") != "F" || num(f, "substate") != 91 || f["Exit_status"] != nil {
		t.Errorf("deleted held array: %v %v %v", f["job_state"], f["substate"], f["Exit_status"])
	}
	// qdel -x of a finished array removes it and its subjobs
	if r := e.run("qdel", "-x", sj(rng, 0)); r.Code != 55 {
		t.Errorf("qdel -x of a subjob of a finished array: %+v", r)
	}
	if r := e.run("qdel", "-x", rng); r.Code != 0 {
		t.Errorf("qdel -x array: %+v", r)
	}
	if _, r := e.stat(sj(rng, 0), true); r.Code != 153 {
		t.Errorf("after qdel -x: %+v", r)
	}
}

// A subjob that is exiting cannot be deleted (PBSE_BADSTATE).
func TestArrayQdelExiting(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{ExitingDelay: 6 * time.Second})
	// subjob 1 runs on while subjob 0 exits, so the array stays begun
	// (B) however slow the machine is between the qdel and the qstat
	id := e.qsubArray("-J", "0-1", "--", "/bin/sh", "-c", `[ "$PBS_ARRAY_INDEX" = 0 ] || sleep 8`)
	e.wait(sj(id, 0), "E", 10*time.Second)
	if r := e.run("qdel", sj(id, 0)); r.Code != 168 || r.Stderr != "qdel: Request invalid for state of job "+sj(id, 0)+"\n" {
		t.Errorf("qdel exiting subjob: %+v", r)
	}
	p, _ := e.stat(id, false)
	if !strings.Contains(str(p, "array_state_count"), "Exiting:") || str(p, "job_state") != "B" {
		t.Errorf("parent while exiting: %v", p)
	}
	e.wait(id, "F", 30*time.Second)
}

// Each subjob's Exit_status is its own; walltime kills a subjob like a
// single job (-29). The parent's Exit_status follows update_sj_parent: the
// last subjob (in index order, at the end) maps 0 to 0, >0 to 1, <0 to 2.
func TestArrayExitStatuses(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 3, WalltimeCheckInterval: 500 * time.Millisecond, KillDelay: time.Second})
	e.script("mixed.sh", `#PBS -N mixed
#PBS -l walltime=00:00:01
case $PBS_ARRAY_INDEX in
0) exit 0 ;;
1) exit 3 ;;
2) echo start; sleep 60 ;;
esac
`)
	id := e.qsubArray("-J", "0-2", "mixed.sh")
	f := e.wait(id, "F", 20*time.Second)
	if num(f, "substate") != 93 || num(f, "Exit_status") != 2 || !strings.HasSuffix(str(f, "comment"), " and failed") {
		t.Errorf("array: %v %v %v", f["substate"], f["Exit_status"], f["comment"])
	}
	for _, c := range []struct {
		idx      int
		exit     float64
		substate float64
		comment  string
	}{{0, 0, 92, " and finished"}, {1, 3, 93, " and failed"}, {2, -29, 93, " and exceeded resource walltime"}} {
		s, _ := e.stat(sj(id, c.idx), true)
		if num(s, "Exit_status") != c.exit || num(s, "substate") != c.substate || !strings.HasSuffix(str(s, "comment"), c.comment) {
			t.Errorf("subjob %d: %v %v %q", c.idx, s["Exit_status"], s["substate"], s["comment"])
		}
	}
	errf, _ := os.ReadFile(filepath.Join(e.dir, "mixed.e"+seqOf(id)+".2"))
	if !regexp.MustCompile(`^=>> PBS: job killed: walltime \d+ exceeded limit 1\n$`).Match(errf) {
		t.Errorf("walltime stderr %q", errf)
	}
	// the parent's Exit_status is that of the highest index: exit 0 last
	ok := e.qsubArray("-J", "0-1", "--", "/bin/sh", "-c", "exit $((1 - PBS_ARRAY_INDEX))")
	if f := e.wait(ok, "F", 20*time.Second); num(f, "Exit_status") != 0 || num(f, "substate") != 93 {
		t.Errorf("array whose last subjob succeeded: %v %v", f["Exit_status"], f["substate"])
	}
	// afterok on an array: released when the array ends with 0
	child := e.qsub("-W", "depend=afterok:"+ok, e.script("c.sh", "true\n"))
	if c := e.wait(child, "F", 10*time.Second); num(c, "Exit_status") != 0 || c["Exit_status"] == nil {
		t.Errorf("afterok child of an array: %v", c)
	}
}

// The server goes down with an array half done: a subjob has finished,
// one runs (and ends while the server is down), the others are queued. The
// next server reloads it all and runs the rest.
func TestArraySurvivesRestart(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 1})
	release := filepath.Join(e.dir, "release")
	e.script("half.sh", "#PBS -N half\nif [ $PBS_ARRAY_INDEX -ge 1 ]; then while [ ! -e "+release+" ]; do sleep 0.05; done; fi\necho done $PBS_ARRAY_INDEX\n")
	id := e.qsubArray("-J", "0-3", "half.sh")
	e.wait(sj(id, 0), "X", 10*time.Second)
	e.waitJob(sj(id, 1), "report its session", 10*time.Second, func(j map[string]any) bool { return j["session_id"] != nil })
	e.srv.Down()
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mom := filepath.Join(e.srv.Home, "jobs", seqOf(id), "sub", "1", "mom.json")
	e.waitUntil("subjob 1 ends while the server is down", 10*time.Second, func() (bool, string) {
		b, err := os.ReadFile(mom)
		if err != nil {
			return false, err.Error()
		}
		var m struct {
			Phase string `json:"phase"`
		}
		return json.Unmarshal(b, &m) == nil && m.Phase == "done", string(b)
	})
	e.srv.Up()
	f := e.wait(id, "F", 20*time.Second)
	if num(f, "substate") != 92 || str(f, "array_state_count") != "Queued:0 Running:0 Exiting:0 Expired:0" {
		t.Errorf("array after restart: %v %v", f["substate"], f["array_state_count"])
	}
	for i := 0; i <= 3; i++ {
		out, _ := os.ReadFile(filepath.Join(e.dir, "half.o"+seqOf(id)+"."+strconv.Itoa(i)))
		if string(out) != "done "+strconv.Itoa(i)+"\n" {
			t.Errorf("subjob %d output %q", i, out)
		}
		if s, _ := e.stat(sj(id, i), true); str(s, "job_state") != "F" || num(s, "Exit_status") != 0 {
			t.Errorf("subjob %d: %v %v", i, s["job_state"], s["Exit_status"])
		}
	}
}

// With history off, a finished subjob has no job of its own: it shows as
// X from the parent's attributes; the finished array vanishes.
func TestArrayHistoryDisabled(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 1, DisableHistory: true})
	release := filepath.Join(e.dir, "release")
	id := e.qsubArray("-J", "0-1", "--", "/bin/sh", "-c", "[ $PBS_ARRAY_INDEX = 0 ] || while [ ! -e "+release+" ]; do sleep 0.05; done")
	e.waitJob(sj(id, 1), "run", 10*time.Second, func(j map[string]any) bool { return str(j, "job_state") == "R" })
	x := e.wait(sj(id, 0), "X", 10*time.Second)
	if str(x, "job_state") != "X" || str(x, "comment") != "Subjob finished" || num(x, "substate") != 70 || x["exec_host"] != nil {
		t.Errorf("purged subjob: %v %v %v", x["job_state"], x["comment"], x["substate"])
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.waitUntil("the array vanishes", 10*time.Second, func() (bool, string) {
		_, r := e.stat(id, true)
		return r.Code == 153, fmt.Sprintf("%+v", r)
	})
}

// 200 short subjobs on 2 cpus finish well within a minute; a 1000-subjob
// array is one qsub, and qstat answers for its 1000 subjob ids at once.
func TestArrayScale(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 2})
	start := time.Now()
	id := e.qsubArray("-J", "0-199", "--", "/bin/sh", "-c", "exit 0")
	f := e.wait(id, "F", 50*time.Second)
	took := time.Since(start)
	t.Logf("200 subjobs took %s", took)
	if took > 45*time.Second {
		t.Errorf("200 subjobs took %s", took)
	}
	if num(f, "Exit_status") != 0 || num(f, "substate") != 92 || str(f, "array_state_count") != "Queued:0 Running:0 Exiting:0 Expired:0" {
		t.Errorf("array: %v %v %v", f["Exit_status"], f["substate"], f["array_state_count"])
	}
	doc, _ := e.statDoc("-x", "-f", "-F", "json", "-t", id)
	if len(doc.Jobs) != 201 {
		t.Errorf("qstat -x -t: %d jobs", len(doc.Jobs))
	}
	for k, j := range doc.Jobs {
		if str(j, "job_state") != "F" || (k != id && num(j, "Exit_status") != 0) {
			t.Errorf("%s: %v %v", k, j["job_state"], j["Exit_status"])
		}
	}

	e.srv.SetScheduling(false)
	big := e.qsubArray("-J", "0-999", "--", "/bin/true")
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = sj(big, i)
	}
	doc, r := e.statDoc(append([]string{"-f", "-F", "json"}, ids...)...)
	if r.Code != 0 || len(doc.Jobs) != 1000 || str(doc.Jobs[sj(big, 999)], "job_state") != "Q" {
		t.Errorf("qstat of 1000 subjobs: rc=%d %d jobs", r.Code, len(doc.Jobs))
	}
	if ids, _ := e.table("-t", big); len(ids) != 1001 {
		t.Errorf("qstat -t: %d rows", len(ids))
	}
}

// qstat -J lists arrays only; -t adds their subjobs.
func TestQstatArrayOptions(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NoScheduling: true})
	single := e.qsub(e.script("s.sh", "true\n"))
	id := e.qsubArray("-J", "5-6", "s.sh")
	if ids, _ := e.table("-J"); strings.Join(ids, " ") != id {
		t.Errorf("qstat -J: %v", ids)
	}
	if ids, _ := e.table("-J", "-t"); strings.Join(ids, " ") != id+" "+sj(id, 5)+" "+sj(id, 6) {
		t.Errorf("qstat -J -t: %v", ids)
	}
	if ids, _ := e.table("-t"); strings.Join(ids, " ") != single+" "+id+" "+sj(id, 5)+" "+sj(id, 6) {
		t.Errorf("qstat -t: %v", ids)
	}
	// qstat -t's queued subjobs are Q/10; an explicit id keeps the
	// parent's substate (status_subjob)
	doc, _ := e.statDoc("-f", "-F", "json", "-t", id)
	if num(doc.Jobs[sj(id, 5)], "substate") != 10 || str(doc.Jobs[sj(id, 5)], "job_state") != "Q" {
		t.Errorf("-t subjob: %v", doc.Jobs[sj(id, 5)])
	}
	r := e.run("qstat", "-f", sj(id, 6))
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "Job Id: "+sj(id, 6)+"\n    Job_Name = s.sh\n") || !strings.Contains(r.Stdout, "    job_state = Q\n") {
		t.Errorf("qstat -f subjob:\n%s", r.Stdout)
	}
	b := e.run("qstat", "-B", "-f", "-F", "json")
	if !strings.Contains(b.Stdout, `"max_array_size":	10000`) {
		t.Errorf("qstat -B: %s", b.Stdout)
	}
}
