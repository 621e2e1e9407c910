package pbsemu_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/internal/pbsemu"
	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
)

func TestMain(m *testing.M) { os.Exit(pbsemutest.Main(m)) }

// env is one emulator instance plus a submit directory.
type env struct {
	t   *testing.T
	srv *pbsemutest.Server
	dir string
}

func newEnv(t *testing.T, opts pbsemutest.Options) *env {
	t.Parallel()
	return &env{t: t, srv: pbsemutest.Start(t, opts), dir: t.TempDir()}
}

func (e *env) script(name, body string) string {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), []byte(body), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *env) run(name string, args ...string) pbsemutest.Result {
	e.t.Helper()
	return e.srv.Run(e.dir, name, args...)
}

func (e *env) qsub(args ...string) string {
	e.t.Helper()
	r := e.run("qsub", args...)
	if r.Code != 0 {
		e.t.Fatalf("qsub %v: rc=%d %s", args, r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	if !regexp.MustCompile(`^\d+\.pbshost$`).MatchString(id) {
		e.t.Fatalf("qsub printed %q", r.Stdout)
	}
	return id
}

type qstatJSON struct {
	Timestamp  int64                     `json:"timestamp"`
	PBSVersion string                    `json:"pbs_version"`
	PBSServer  string                    `json:"pbs_server"`
	Jobs       map[string]map[string]any `json:"Jobs"`
}

// stat runs qstat [-x] -f -F json id and returns the job (nil if absent).
func (e *env) stat(id string, history bool) (map[string]any, pbsemutest.Result) {
	e.t.Helper()
	args := []string{"-f", "-F", "json", id}
	if history {
		args = append([]string{"-x"}, args...)
	}
	r := e.run("qstat", args...)
	var doc qstatJSON
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		e.t.Fatalf("qstat %v: bad JSON %q: %v", args, r.Stdout, err)
	}
	if doc.PBSVersion != "23.06.06" || doc.PBSServer != "pbshost" || doc.Timestamp == 0 {
		e.t.Errorf("qstat JSON header: %+v", doc)
	}
	return doc.Jobs[id], r
}

// wait polls until the job reaches one of the states.
func (e *env) wait(id string, states string, timeout time.Duration) map[string]any {
	e.t.Helper()
	return e.waitJob(id, "reach "+states, timeout, func(j map[string]any) bool {
		s, _ := j["job_state"].(string)
		return strings.Contains(states, s)
	})
}

// waitJob polls qstat -x until the job satisfies ok, failing the test
// with what it waited for after timeout.
func (e *env) waitJob(id, what string, timeout time.Duration, ok func(map[string]any) bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		j, _ := e.stat(id, true)
		if j != nil {
			last = j
			if ok(j) {
				return j
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("job %s did not %s within %s; last: %v", id, what, timeout, last)
	return nil
}

// waitUntil polls cond until it holds, failing the test with what it
// waited for (and cond's last word) after timeout.
func (e *env) waitUntil(what string, timeout time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func num(j map[string]any, k string) float64 {
	f, _ := j[k].(float64)
	return f
}

func str(j map[string]any, k string) string {
	s, _ := j[k].(string)
	return s
}

func sub(j map[string]any, k, r string) any {
	m, _ := j[k].(map[string]any)
	return m[r]
}

// capturedKeys returns the attribute names of a job in a capture file.
func capturedKeys(t *testing.T, file, id string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "openpbs-23.06_"+file))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\t\t\""+id+"\":\t{")
	end := strings.Index(s[start:], "\n\t\t}")
	var keys []string
	for _, m := range regexp.MustCompile(`(?m)^\t\t\t"([^"]+)":`).FindAllStringSubmatch(s[start:start+end], -1) {
		keys = append(keys, m[1])
	}
	return keys
}

func sameKeys(t *testing.T, what string, job map[string]any, want []string, ignore ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, k := range ignore {
		skip[k] = true
	}
	for _, k := range want {
		if _, ok := job[k]; !ok && !skip[k] {
			t.Errorf("%s: attribute %s missing", what, k)
		}
	}
	wantSet := map[string]bool{}
	for _, k := range want {
		wantSet[k] = true
	}
	for k := range job {
		if !wantSet[k] && !skip[k] {
			t.Errorf("%s: unexpected attribute %s", what, k)
		}
	}
}

const tinyScript = `#!/bin/bash
#PBS -N tiny
#PBS -l walltime=00:00:10
echo "tiny jobid=$PBS_JOBID pwd=$(pwd)"
echo "PBS_NODEFILE=$PBS_NODEFILE:"; cat $PBS_NODEFILE
echo "vars $PBS_JOBNAME $PBS_QUEUE $PBS_O_WORKDIR $PBS_ENVIRONMENT NCPUS=$NCPUS OMP=$OMP_NUM_THREADS"
echo to-stderr >&2
`

func TestTinyJobLifecycle(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NoScheduling: true})
	e.script("tiny.sh", tinyScript)
	id := e.qsub("tiny.sh")
	seq := strings.TrimSuffix(id, ".pbshost")

	q, r := e.stat(id, false)
	if r.Code != 0 || q == nil {
		t.Fatalf("qstat queued: %+v", r)
	}
	if str(q, "job_state") != "Q" || num(q, "substate") != 10 || str(q, "Hold_Types") != "n" {
		t.Errorf("queued: state %v substate %v", q["job_state"], q["substate"])
	}
	sameKeys(t, "queued", q, capturedKeys(t, "03_tiny_queued.txt", "3.pbshost"), "comment", "PBS_O_LANG")
	if str(q, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "tiny.o"+seq) || str(q, "Error_Path") != "pbshost:"+filepath.Join(e.dir, "tiny.e"+seq) {
		t.Errorf("paths: %v %v", q["Output_Path"], q["Error_Path"])
	}
	if sub(q, "Variable_List", "PBS_O_WORKDIR") != e.dir || sub(q, "Resource_List", "select") != "1:ncpus=1" {
		t.Errorf("Variable_List/Resource_List: %v %v", q["Variable_List"], q["Resource_List"])
	}
	if tbl := e.run("qstat"); !strings.Contains(tbl.Stdout, id+"         tiny             root                     0 Q workq") {
		t.Errorf("qstat table:\n%s", tbl.Stdout)
	}

	e.srv.SetScheduling(true)
	f := e.wait(id, "F", 10*time.Second)
	if num(f, "substate") != 92 || num(f, "Exit_status") != 0 || num(f, "run_count") != 1 || num(f, "Stageout_status") != 1 {
		t.Errorf("finished: %v", f)
	}
	if !regexp.MustCompile(`^Job run at \w{3} \w{3} \d\d at \d\d:\d\d on \(pbshost:ncpus=1\) and finished$`).MatchString(str(f, "comment")) {
		t.Errorf("comment %q", f["comment"])
	}
	if str(f, "exec_host") != "pbshost/0" || str(f, "exec_vnode") != "(pbshost:ncpus=1)" {
		t.Errorf("exec: %v %v", f["exec_host"], f["exec_vnode"])
	}
	sameKeys(t, "finished", f, capturedKeys(t, "03_tiny_finished.txt", "3.pbshost"), "PBS_O_LANG")
	for _, k := range []string{"cpupercent", "cput", "mem", "ncpus", "vmem", "walltime"} {
		if sub(f, "resources_used", k) == nil {
			t.Errorf("resources_used.%s missing", k)
		}
	}
	for _, k := range []string{"ctime", "qtime", "etime", "stime", "mtime", "obittime"} {
		if _, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", str(f, k), time.Local); err != nil {
			t.Errorf("%s = %q: %v", k, f[k], err)
		}
	}

	// Without -x a finished job is an error; stdout keeps the skeleton.
	j, r := e.stat(id, false)
	if j != nil || r.Code != 35 || r.Stderr != "qstat: "+id+" Job has finished, use -x or -H to obtain historical job information\n" {
		t.Errorf("qstat finished without -x: %+v", r)
	}

	out, err := os.ReadFile(filepath.Join(e.dir, "tiny.o"+seq))
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(filepath.Dir(e.srv.Home), "home")
	for _, want := range []string{
		"tiny jobid=" + id + " pwd=" + home,
		"PBS_NODEFILE=" + filepath.Join(e.srv.Home, "aux", id) + ":\npbshost\n",
		"vars tiny workq " + e.dir + " PBS_BATCH NCPUS=1 OMP=1",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	st, err := os.Stat(filepath.Join(e.dir, "tiny.e"+seq))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("stderr file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "tiny.e"+seq)); string(b) != "to-stderr\n" {
		t.Errorf("stderr file %q", b)
	}
}

func TestExitStatuses(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 4, WalltimeCheckInterval: 500 * time.Millisecond, KillDelay: time.Second})
	exit3 := e.qsub(e.script("exit3.sh", "#PBS -N exit3\necho failing\nexit 3\n"))
	wall := e.qsub(e.script("wall.sh", "#PBS -N wallx\n#PBS -l walltime=00:00:01\necho start\nsleep 60\n"))
	sig := e.qsub(e.script("sig.sh", "#PBS -N selfkill\nkill -USR1 $$\n"))

	f := e.wait(exit3, "F", 10*time.Second)
	if num(f, "substate") != 93 || num(f, "Exit_status") != 3 || !strings.HasSuffix(str(f, "comment"), " and failed") {
		t.Errorf("exit 3: %v %v %v", f["substate"], f["Exit_status"], f["comment"])
	}
	f = e.wait(sig, "F", 10*time.Second)
	// The script runs as a command of the MoM's login shell, which reports
	// its child's death by signal the shell way: 128+N (256+N only when the
	// top shell itself is killed, as by qdel).
	if num(f, "Exit_status") != 128+10 || num(f, "substate") != 93 {
		t.Errorf("script killed by SIGUSR1: %v %v", f["Exit_status"], f["substate"])
	}
	f = e.wait(wall, "F", 15*time.Second)
	if num(f, "substate") != 93 || num(f, "Exit_status") != -29 || !strings.HasSuffix(str(f, "comment"), " and exceeded resource walltime") {
		t.Errorf("walltime: %v %v %v", f["substate"], f["Exit_status"], f["comment"])
	}
	seq := strings.TrimSuffix(wall, ".pbshost")
	errf, _ := os.ReadFile(filepath.Join(e.dir, "wallx.e"+seq))
	if !regexp.MustCompile(`^=>> PBS: job killed: walltime \d+ exceeded limit 1\n$`).Match(errf) {
		t.Errorf("walltime stderr %q", errf)
	}
	if outf, _ := os.ReadFile(filepath.Join(e.dir, "wallx.o"+seq)); string(outf) != "start\n" {
		t.Errorf("walltime stdout %q", outf)
	}
}

func TestQdel(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{KillDelay: 2 * time.Second})
	e.script("long.sh", "#PBS -N longdel\n#PBS -l walltime=00:05:00\nsleep 300\n")
	run := e.qsub("long.sh")
	held := e.qsub("-h", "long.sh")
	e.wait(run, "R", 5*time.Second)

	h, _ := e.stat(held, false)
	if str(h, "job_state") != "H" || num(h, "substate") != 20 || str(h, "Hold_Types") != "u" || h["etime"] != nil {
		t.Errorf("held: %v %v %v etime=%v", h["job_state"], h["substate"], h["Hold_Types"], h["etime"])
	}
	if r := e.run("qdel", run); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Fatalf("qdel running: %+v", r)
	}
	// Still R for about kill_delay, already with the new comment.
	j, _ := e.stat(run, false)
	if str(j, "job_state") != "R" || !strings.HasSuffix(str(j, "comment"), " and terminated by root@pbshost") {
		t.Errorf("after qdel: %v %q", j["job_state"], j["comment"])
	}
	f := e.wait(run, "F", 10*time.Second)
	if num(f, "substate") != 91 || num(f, "Exit_status") != 271 {
		t.Errorf("deleted running job: substate %v Exit_status %v", f["substate"], f["Exit_status"])
	}
	sameKeys(t, "deleted running", f, capturedKeys(t, "14_qstat_x_f_json_all.txt", "6.pbshost"))

	if r := e.run("qdel", held); r.Code != 0 {
		t.Fatalf("qdel held: %+v", r)
	}
	f, _ = e.stat(held, true)
	if str(f, "job_state") != "F" || num(f, "substate") != 91 || f["Exit_status"] != nil || f["comment"] != nil {
		t.Errorf("deleted held job: %v", f)
	}
	sameKeys(t, "deleted held", f, capturedKeys(t, "14_qstat_x_f_json_all.txt", "7.pbshost"))

	if r := e.run("qdel", held); r.Code != 35 || r.Stderr != "qdel: Job has finished "+held+"\n" {
		t.Errorf("qdel finished: %+v", r)
	}
	if r := e.run("qdel", "99999.pbshost"); r.Code != 153 || r.Stderr != "qdel: Unknown Job Id 99999.pbshost\n" {
		t.Errorf("qdel unknown: %+v", r)
	}
	if r := e.run("qdel"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "usage:") {
		t.Errorf("qdel usage: %+v", r)
	}
	if r := e.run("qdel", "-x", held); r.Code != 0 {
		t.Errorf("qdel -x: %+v", r)
	}
	if _, r := e.stat(held, true); r.Code != 153 {
		t.Errorf("after qdel -x: %+v", r)
	}
}

// TestErrorsMatchCapture replays capture 10 (messages, stdout, exit codes).
func TestErrorsMatchCapture(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{})
	e.script("tiny.sh", "#PBS -N tiny\ntrue\n")
	done := e.qsub("tiny.sh")
	e.wait(done, "F", 10*time.Second)
	skeleton := regexp.MustCompile("^\\{\n\t\"timestamp\":\t\\d+,\n\t\"pbs_version\":\t\"23.06.06\",\n\t\"pbs_server\":\t\"pbshost\"\n\\}\n$")
	for _, tc := range []struct {
		cmd    []string
		stdout *regexp.Regexp
		stderr string
		code   int
	}{
		{[]string{"qstat", "-f", "-F", "json", "99999.pbshost"}, skeleton, "qstat: Unknown Job Id 99999.pbshost\n", 153},
		{[]string{"qstat", "-f", "-F", "json", done}, skeleton, "qstat: " + done + " Job has finished, use -x or -H to obtain historical job information\n", 35},
		{[]string{"qstat", "-x", "-f", "-F", "json", "99999.pbshost"}, skeleton, "qstat: Unknown Job Id 99999.pbshost\n", 153},
		{[]string{"qstat", "99999"}, regexp.MustCompile("^$"), "qstat: Unknown Job Id 99999.pbshost\n", 153},
		{[]string{"qdel", "99999.pbshost"}, regexp.MustCompile("^$"), "qdel: Unknown Job Id 99999.pbshost\n", 153},
		{[]string{"qdel", done}, regexp.MustCompile("^$"), "qdel: Job has finished " + done + "\n", 35},
		{[]string{"qsub", "-q", "nosuchq", "tiny.sh"}, regexp.MustCompile("^$"), "qsub: Unknown queue\n", 170},
		{[]string{"qsub", "-l", "walltime=abc", "tiny.sh"}, regexp.MustCompile("^$"), "qsub: Illegal attribute or resource value Resource_List.walltime\n", 166},
		{[]string{"qsub", "-l", "select=1:ncpus=1:foo=2", "tiny.sh"}, regexp.MustCompile("^$"), "qsub: Unknown resource: foo\n", 187},
		{[]string{"qsub", "/nonexistent.sh"}, regexp.MustCompile("^$"), "qsub: script file:: No such file or directory\n", 1},
	} {
		r := e.run(tc.cmd[0], tc.cmd[1:]...)
		if r.Code != tc.code || r.Stderr != tc.stderr || !tc.stdout.MatchString(r.Stdout) {
			t.Errorf("%v: rc=%d stderr=%q stdout=%q; want rc=%d stderr=%q", tc.cmd, r.Code, r.Stderr, r.Stdout, tc.code, tc.stderr)
		}
	}
	// Several ids in one call: found jobs are printed, the last error sets the code.
	r := e.run("qstat", "-x", "-f", "-F", "json", done, "99999")
	var doc qstatJSON
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || doc.Jobs[done] == nil || r.Code != 153 {
		t.Errorf("mixed ids: rc=%d %q", r.Code, r.Stdout)
	}
}

func TestRootNeedsACL(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root (make test installs the clusters); this test needs it")
		}
		t.Skip("only meaningful when run as root")
	}
	e := newEnv(t, pbsemutest.Options{RejectRoot: true})
	r := e.run("qsub", e.script("x.sh", "true\n"))
	if r.Code != 175 || r.Stderr != "qsub: Bad UID for job execution\n" {
		t.Errorf("root submit: %+v", r)
	}
}

func TestHistoryDisabled(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{DisableHistory: true})
	id := e.qsub(e.script("t.sh", "true\n"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, r := e.stat(id, true)
		if r.Code == 153 {
			if r.Stderr != "qstat: Unknown Job Id "+id+"\n" {
				t.Errorf("stderr %q", r.Stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never vanished: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := e.run("qstat", "-x"); r.Stdout != "" {
		t.Errorf("qstat -x lists %q", r.Stdout)
	}
	if r := e.run("qdel", id); r.Code != 153 {
		t.Errorf("qdel vanished job: %+v", r)
	}
}

func TestSchedulingAndHolds(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 2})
	e.script("sleep.sh", "sleep 30\n")
	big := e.qsub("-l", "select=1:ncpus=2", "sleep.sh")
	e.wait(big, "R", 5*time.Second)
	small := e.qsub("sleep.sh")
	never := e.qsub("-l", "select=1:ncpus=8", "sleep.sh")
	// until the scheduler has looked at both (it comments on what it
	// does not start)
	commented := func(j map[string]any) bool { return str(j, "comment") != "" }
	e.waitJob(small, "get a scheduler comment", 5*time.Second, commented)
	e.waitJob(never, "get a scheduler comment", 5*time.Second, commented)
	j, _ := e.stat(small, false)
	if str(j, "job_state") != "Q" || str(j, "comment") != "Not Running: Not enough free nodes available" {
		t.Errorf("busy node: %v %q", j["job_state"], j["comment"])
	}
	j, _ = e.stat(never, false)
	if str(j, "comment") != "Can Never Run: Insufficient amount of resource: ncpus (R: 8 A: 2 T: 2)" {
		t.Errorf("never: %q", j["comment"])
	}
	if r := e.run("qstat", "-s", never); !strings.HasSuffix(r.Stdout, "   Can Never Run: Insufficient amount of resource: ncpus (R: 8 A: 2 T: 2)\n") {
		t.Errorf("qstat -s:\n%s", r.Stdout)
	}
	b, _ := e.stat(big, false)
	if str(b, "exec_host") != "pbshost/0*2" || str(b, "exec_vnode") != "(pbshost:ncpus=2)" {
		t.Errorf("2-cpu exec: %v %v", b["exec_host"], b["exec_vnode"])
	}
	e.run("qdel", big, never)
	e.wait(small, "R", 10*time.Second)

	held := e.qsub("-h", "-l", "select=1:ncpus=1", "sleep.sh")
	h, _ := e.stat(held, false)
	if str(h, "job_state") != "H" {
		t.Fatalf("held: %v", h["job_state"])
	}
	if r := e.run("qrls", held); r.Code != 0 {
		t.Fatalf("qrls: %+v", r)
	}
	r := e.wait(held, "R", 5*time.Second)
	if str(r, "Hold_Types") != "n" || str(r, "exec_host") != "pbshost/1" {
		t.Errorf("released: %v %v", r["Hold_Types"], r["exec_host"])
	}
}

func TestDependencies(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 4})
	// the parents run until the test has looked at the held children
	release := filepath.Join(e.dir, "release")
	wait := "while [ ! -e " + release + " ]; do sleep 0.05; done\n"
	e.script("ok.sh", wait)
	e.script("bad.sh", wait+"exit 3\n")
	e.script("child.sh", "true\n")
	okP := e.qsub("ok.sh")
	badP := e.qsub("bad.sh")
	okC := e.qsub("-W", "depend=afterok:"+okP, "child.sh")
	badC := e.qsub("-W", "depend=afterok:"+badP, "child.sh")
	c, _ := e.stat(okC, false)
	if str(c, "job_state") != "H" || num(c, "substate") != 22 || str(c, "Hold_Types") != "s" || str(c, "depend") != "afterok:"+okP+"@pbshost" {
		t.Errorf("dependent: %v %v %v %v", c["job_state"], c["substate"], c["Hold_Types"], c["depend"])
	}
	sameKeys(t, "dependent", c, capturedKeys(t, "07_depend_afterok.txt", "9.pbshost"), "PBS_O_LANG")
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := e.wait(okC, "F", 10*time.Second)
	if num(f, "Exit_status") != 0 || str(f, "Hold_Types") != "n" || f["depend"] != nil {
		t.Errorf("released child: %v", f)
	}
	sameKeys(t, "released child", f, capturedKeys(t, "14_qstat_x_f_json_all.txt", "9.pbshost"), "PBS_O_LANG")
	f = e.wait(badC, "F", 10*time.Second)
	if num(f, "substate") != 92 || f["Exit_status"] != nil || f["comment"] != nil || str(f, "Hold_Types") != "s" {
		t.Errorf("child of failed parent: %v", f)
	}
	sameKeys(t, "deleted child", f, capturedKeys(t, "14_qstat_x_f_json_all.txt", "11.pbshost"))
	p, _ := e.stat(badP, true)
	if str(p, "depend") != "beforeok:"+badC+"@pbshost" {
		t.Errorf("parent depend %v", p["depend"])
	}
	if r := e.run("qsub", "-W", "depend=afterok:4242", "child.sh"); r.Code == 0 {
		t.Errorf("depend on unknown job accepted")
	}
}

// TestQsubOptions replays capture 12 and checks option/directive precedence.
func TestQsubOptions(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{})
	e.script("opts.sh", "#PBS -N fromdirective\n#PBS -l walltime=00:00:05\n#PBS -r n\necho pwd=$(pwd) FOO=$FOO\necho to-stderr >&2\n")
	id := e.qsub("-N", "optsjob", "-j", "oe", "-o", filepath.Join(e.dir, "custom.out"), "-v", "FOO=bar",
		"-l", "select=1:ncpus=1", "-l", "walltime=00:00:20", "-A", "acct1", "opts.sh")
	f := e.wait(id, "F", 10*time.Second)
	seq := strings.TrimSuffix(id, ".pbshost")
	if str(f, "Job_Name") != "optsjob" || str(f, "Join_Path") != "oe" || str(f, "Rerunable") != "False" || str(f, "Account_Name") != "acct1" {
		t.Errorf("attributes: %v %v %v %v", f["Job_Name"], f["Join_Path"], f["Rerunable"], f["Account_Name"])
	}
	if str(f, "Output_Path") != "pbshost:"+filepath.Join(e.dir, "custom.out") || str(f, "Error_Path") != "pbshost:"+filepath.Join(e.dir, "optsjob.e"+seq) {
		t.Errorf("paths %v %v", f["Output_Path"], f["Error_Path"])
	}
	if sub(f, "Resource_List", "walltime") != "00:00:20" || sub(f, "Variable_List", "FOO") != "bar" {
		t.Errorf("Resource_List %v Variable_List %v", f["Resource_List"], f["Variable_List"])
	}
	if str(f, "Submit_arguments") != "-N optsjob -j oe -o "+filepath.Join(e.dir, "custom.out")+" -v FOO=bar -l select=1:ncpus=1 -l walltime=00:00:20 -A acct1 opts.sh" {
		t.Errorf("Submit_arguments %q", f["Submit_arguments"])
	}
	home := filepath.Join(filepath.Dir(e.srv.Home), "home")
	out, _ := os.ReadFile(filepath.Join(e.dir, "custom.out"))
	if string(out) != "pwd="+home+" FOO=bar\nto-stderr\n" {
		t.Errorf("joined output %q", out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "optsjob.e"+seq)); err == nil {
		t.Errorf("-j oe must not create the error file")
	}
	// Job read from stdin is named STDIN; -z prints nothing.
	r := e.srv.Command("qsub", "-z")
	r.Dir = e.dir
	r.Stdin = strings.NewReader("echo from-stdin\n")
	if out, err := r.Output(); err != nil || len(out) != 0 {
		t.Errorf("qsub -z: %q %v", out, err)
	}
	if r := e.run("qstat", "-x"); !strings.Contains(r.Stdout, "STDIN") {
		t.Errorf("STDIN job missing:\n%s", r.Stdout)
	}
}

func TestMPINodefile(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{})
	e.script("mpi.sh", "#PBS -N mpitest\n#PBS -l select=1:ncpus=2:mpiprocs=2\n#PBS -j oe\ncat $PBS_NODEFILE\necho NCPUS=$NCPUS OMP_NUM_THREADS=$OMP_NUM_THREADS\n")
	id := e.qsub("mpi.sh")
	f := e.wait(id, "F", 10*time.Second)
	if str(f, "exec_host") != "pbshost/0*2" || sub(f, "Resource_List", "mpiprocs") != float64(2) || sub(f, "Resource_List", "ncpus") != float64(2) {
		t.Errorf("mpi job: %v %v", f["exec_host"], f["Resource_List"])
	}
	out, _ := os.ReadFile(filepath.Join(e.dir, "mpitest.o"+strings.TrimSuffix(id, ".pbshost")))
	if string(out) != "pbshost\npbshost\nNCPUS=2 OMP_NUM_THREADS=2\n" {
		t.Errorf("output %q", out)
	}
}

// A hybrid chunk: ompthreads sets OMP_NUM_THREADS and NCPUS (without it
// PBS would give each rank the chunk's ncpus threads).
func TestOmpThreads(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 4})
	e.script("omp.sh", "#PBS -N omptest\n#PBS -l select=1:ncpus=4:mpiprocs=2:ompthreads=2\n#PBS -j oe\ncat $PBS_NODEFILE\necho NCPUS=$NCPUS OMP_NUM_THREADS=$OMP_NUM_THREADS\n")
	id := e.qsub("omp.sh")
	e.wait(id, "F", 10*time.Second)
	out, _ := os.ReadFile(filepath.Join(e.dir, "omptest.o"+strings.TrimSuffix(id, ".pbshost")))
	if string(out) != "pbshost\npbshost\nNCPUS=2 OMP_NUM_THREADS=2\n" {
		t.Errorf("output %q", out)
	}
}

func TestServerDownAndUp(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 1})
	// the job runs until the server is down
	release := filepath.Join(e.dir, "release")
	run := e.qsub(e.script("s.sh", "#PBS -N survivor\nwhile [ ! -e "+release+" ]; do sleep 0.05; done\necho survived\n"))
	queued := e.qsub(e.script("q.sh", "#PBS -N later\necho later\n"))
	e.wait(run, "R", 5*time.Second)
	e.srv.Down()

	for _, tc := range []struct {
		cmd    []string
		stderr string
		code   int
	}{
		{[]string{"qsub", "q.sh"}, "System call failure.\nqsub: cannot connect to server pbshost (errno=15010)\n", 162},
		{[]string{"qstat", "-f", "-F", "json", run}, "System call failure.\nqstat: cannot connect to server pbshost (errno=15010)\n", 255},
		{[]string{"qstat"}, "System call failure.\nqstat: cannot connect to server pbshost (errno=15010)\n", 255},
		{[]string{"qstat", "-B", "-f", "-F", "json"}, "System call failure.\nqstat: cannot connect to server pbshost (errno=15010)\n", 255},
		{[]string{"qdel", run}, "System call failure.\nCouldn't connect to cluster: pbshost\n", 162},
	} {
		r := e.run(tc.cmd[0], tc.cmd[1:]...)
		if r.Code != tc.code || r.Stderr != tc.stderr {
			t.Errorf("%v while down: rc=%d %q", tc.cmd, r.Code, r.Stderr)
		}
	}
	// the running job ends while the server is down: its supervisor has
	// delivered the output and recorded the end
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mom := filepath.Join(e.srv.Home, "jobs", strings.TrimSuffix(run, ".pbshost"), "mom.json")
	e.waitUntil("the job ends while the server is down", 10*time.Second, func() (bool, string) {
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
	f := e.wait(run, "F", 10*time.Second)
	if num(f, "Exit_status") != 0 || num(f, "substate") != 92 {
		t.Errorf("job that ended while down: %v", f)
	}
	out, _ := os.ReadFile(filepath.Join(e.dir, "survivor.o"+strings.TrimSuffix(run, ".pbshost")))
	if string(out) != "survived\n" {
		t.Errorf("output %q", out)
	}
	if f := e.wait(queued, "F", 10*time.Second); num(f, "Exit_status") != 0 {
		t.Errorf("queued job after restart: %v", f)
	}
	r := e.run("qstat", "-B", "-f", "-F", "json")
	if r.Code != 0 || !strings.Contains(r.Stdout, "\"server_state\":\t\"Active\"") {
		t.Errorf("qstat -B after restart: %+v", r)
	}
}

func TestInstancesAreIndependent(t *testing.T) {
	a := newEnv(t, pbsemutest.Options{})
	b := pbsemutest.Start(t, pbsemutest.Options{ServerName: "other"})
	ida := a.qsub(a.script("x.sh", "true\n"))
	r := b.Run(a.dir, "qsub", "x.sh")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "0.other" || ida != "0.pbshost" {
		t.Errorf("ids %q %q", ida, r.Stdout)
	}
	cfg, err := (pbsemu.Instance{Home: b.Home}).LoadConfig()
	if err != nil || cfg.ServerName != "other" {
		t.Errorf("config %+v %v", cfg, err)
	}
}

func TestMiscOptions(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 4})
	home := filepath.Join(filepath.Dir(e.srv.Home), "home")
	e.script("env.sh", "#PBS -N envjob\necho EXPORTED=$EXPORTED_BY_V\n[ \"$HOME\" = \"$PWD\" ] || echo HOME=$HOME PWD=$PWD\n[ \"$USER\" = \"$LOGNAME\" ] || echo USER=$USER LOGNAME=$LOGNAME\n")
	cmd := e.srv.Command("qsub", "-V", "-k", "oe", "-W", "umask=022", "env.sh")
	cmd.Dir = e.dir
	// -V exports these too, but the job gets its own (start_exec.c).
	cmd.Env = append(cmd.Env, "EXPORTED_BY_V=yes", "HOME=/nonexistent-submit-home", "USER=submitter-user")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(out))
	seq := strings.TrimSuffix(id, ".pbshost")
	f := e.wait(id, "F", 10*time.Second)
	if sub(f, "Variable_List", "EXPORTED_BY_V") != "yes" || str(f, "Keep_Files") != "oe" {
		t.Errorf("-V/-k: %v %v", f["Variable_List"], f["Keep_Files"])
	}
	// -k oe keeps the files in the home directory, written while the job runs.
	st, err := os.Stat(filepath.Join(home, "envjob.o"+seq))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("kept output: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "envjob.o"+seq)); string(b) != "EXPORTED=yes\n" {
		t.Errorf("kept output %q", b)
	}

	// The shell gets the script's path on stdin and runs it as a command:
	// $0 is the script file, and the script's own stdin is exhausted.
	sc := e.qsub(e.script("stdin.sh", "#!/bin/bash\nread x; echo read=$? zero=$0\n"))
	e.wait(sc, "F", 10*time.Second)
	b, _ := os.ReadFile(filepath.Join(e.dir, "stdin.sh.o"+strings.TrimSuffix(sc, ".pbshost")))
	if want := "read=1 zero=" + filepath.Join(e.srv.Home, "jobs", strings.TrimSuffix(sc, ".pbshost"), sc+".SC") + "\n"; string(b) != want {
		t.Errorf("script invocation: %q, want %q", b, want)
	}

	// -a in the future: state W (substate 30) until then; qdel ends it.
	later := time.Now().Add(2 * time.Hour).Format("200601021504")
	w := e.qsub("-a", later, "env.sh")
	j, _ := e.stat(w, false)
	if str(j, "job_state") != "W" || num(j, "substate") != 30 || j["Execution_Time"] == nil {
		t.Errorf("-a: %v %v %v", j["job_state"], j["substate"], j["Execution_Time"])
	}
	e.run("qdel", w)
	if j, _ := e.stat(w, true); num(j, "substate") != 91 {
		t.Errorf("deleted W job: %v", j["substate"])
	}

	// Queue limits reject at submission.
	e.srv.Configure(func(c *pbsemu.Config) {
		c.Queues = []pbsemu.QueueConfig{{Name: "workq"}, {Name: "short", ResourcesMax: map[string]string{"walltime": "00:10:00"}}}
	})
	// until the server has reread its config: it knows queue short (the
	// probe is the check below; neither answer makes a job)
	var r pbsemutest.Result
	e.waitUntil("the server knows queue short", 10*time.Second, func() (bool, string) {
		r = e.run("qsub", "-q", "short", "-l", "walltime=01:00:00", "env.sh")
		return !strings.Contains(r.Stderr, "Unknown queue"), fmt.Sprintf("%+v", r)
	})
	if r.Code != 188 || r.Stderr != "qsub: Job violates queue and/or server resource limits\n" {
		t.Errorf("queue limit: %+v", r)
	}
	if r := e.run("qsub", "-q", "short", "-l", "walltime=00:01:00", "env.sh"); r.Code != 0 {
		t.Errorf("within limit: %+v", r)
	}
	if r := e.run("qsub", "-N", "bad name", "env.sh"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "qsub: illegal -N value\nusage: qsub") {
		t.Errorf("bad -N: %+v", r)
	}
	if r := e.run("qstat", "-F", "json"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "qstat: conflicting options.\n") {
		t.Errorf("-F without -f: %+v", r)
	}
	if r := e.run("qselect", "-x", "-s", "F"); !strings.Contains(r.Stdout, id+"\n") {
		t.Errorf("qselect: %+v", r)
	}
}

// waitFile waits until a file exists (a job's marker).
func (e *env) waitFile(path string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s did not appear within 10s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A job deleted while running is F/91 with the comment "terminated by";
// its Exit_status depends on the server: 271 as in capture 06 (the top
// shell killed by SIGTERM), 0 as in capture 16, or the script's own status
// (143 from a script that traps TERM and exits).
func TestQdelExitStatusVariants(t *testing.T) {
	for _, c := range []struct {
		mode, env string // config.json, PBSEMU_QDEL_EXIT_STATUS of qsub
		want      float64
	}{{"", "", 271}, {pbsemu.QdelExitSignal, "", 271}, {pbsemu.QdelExitZero, "", 0}, {pbsemu.QdelExitJob, "", 143},
		{pbsemu.QdelExitZero, pbsemu.QdelExitJob, 143}, {"", pbsemu.QdelExitZero, 0}} {
		t.Run("mode="+c.mode+",env="+c.env, func(t *testing.T) {
			e := newEnv(t, pbsemutest.Options{Configure: func(cfg *pbsemu.Config) { cfg.QdelExitStatus = c.mode }})
			marker := filepath.Join(e.dir, "trapping")
			cmd := e.srv.Command("qsub", "-N", "trapper", e.script("trap.sh", "#!/bin/bash\ntrap 'echo got TERM; exit 143' TERM\ntouch "+marker+"\nwhile :; do sleep 0.1; done\n"))
			cmd.Dir, cmd.Env = e.dir, append(cmd.Env, pbsemu.EnvQdelExitStatus+"="+c.env)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("qsub: %v", err)
			}
			id := strings.TrimSpace(string(out))
			e.waitFile(marker)
			if r := e.run("qdel", id); r.Code != 0 {
				t.Fatalf("qdel: %+v", r)
			}
			f := e.wait(id, "F", 10*time.Second)
			if num(f, "substate") != 91 || num(f, "Exit_status") != c.want || !strings.HasSuffix(str(f, "comment"), " and terminated by root@pbshost") {
				t.Errorf("deleted: substate %v Exit_status %v comment %q; want 91 %v", f["substate"], f["Exit_status"], f["comment"], c.want)
			}
			out, _ = os.ReadFile(filepath.Join(e.dir, "trapper.o"+strings.TrimSuffix(id, ".pbshost")))
			if c.want == 143 && string(out) != "got TERM\n" {
				t.Errorf("the script's trap did not run: %q", out)
			}
		})
	}
	in := pbsemu.Instance{Home: t.TempDir()}
	if err := in.WriteConfig(pbsemu.Config{QdelExitStatus: "sometimes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.LoadConfig(); err == nil || !strings.Contains(err.Error(), "qdel_exit_status") {
		t.Errorf("unknown qdel_exit_status accepted: %v", err)
	}
}

// countJobs counts the jobs of qstat -x -f -F json (history included).
func (e *env) countJobs() int {
	e.t.Helper()
	r := e.run("qstat", "-x", "-f", "-F", "json")
	var doc qstatJSON
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &doc) != nil {
		e.t.Fatalf("qstat -x -f -F json: %+v", r)
	}
	return len(doc.Jobs)
}

// The qsub_fault knob loses qsub's answer after the server queued the job:
// the job exists (with its -v variables) although qsub failed, hung or
// printed nothing.
func TestQsubFaults(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{})
	e.script("t.sh", "#PBS -N faulty\nsleep 30\n")

	e.srv.Configure(func(c *pbsemu.Config) { c.QsubFault = pbsemu.QsubFaultFail })
	if r := e.run("qsub", "-v", "TETHER_TAG=tether:r:1", "t.sh"); r.Code != 183 || r.Stderr != "qsub: Batch protocol error\n" || r.Stdout != "" {
		t.Errorf("fail: %+v", r)
	}
	if n := e.countJobs(); n != 1 {
		t.Errorf("fail: %d jobs, want 1", n)
	}
	j, _ := e.stat("0.pbshost", true)
	if sub(j, "Variable_List", "TETHER_TAG") != "tether:r:1" {
		t.Errorf("Variable_List of the job: %v", j["Variable_List"])
	}

	e.srv.Configure(func(c *pbsemu.Config) { c.QsubFault = pbsemu.QsubFaultSilent })
	if r := e.run("qsub", "t.sh"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("silent: %+v", r)
	}
	if n := e.countJobs(); n != 2 {
		t.Errorf("silent: %d jobs, want 2", n)
	}

	e.srv.Configure(func(c *pbsemu.Config) { c.QsubFault = pbsemu.QsubFaultHang })
	cmd := e.srv.Command("qsub", "t.sh")
	cmd.Dir = e.dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for e.countJobs() != 3 {
		if time.Now().After(deadline) {
			t.Fatal("hang: the job was never queued")
		}
		select {
		case err := <-exited:
			t.Fatalf("hang: qsub returned (%v)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("hang: qsub returned (%v) after queueing the job", err)
	default:
	}
	_ = cmd.Process.Kill()
	<-exited

	e.srv.Configure(func(c *pbsemu.Config) { c.QsubFault = "" })
	if id := e.qsub("t.sh"); id != "3.pbshost" {
		t.Errorf("after the faults: %s", id)
	}
	// PBSEMU_QSUB_FAULT sets the fault for one command.
	cmd = e.srv.Command("qsub", "t.sh")
	cmd.Dir, cmd.Env = e.dir, append(cmd.Env, pbsemu.EnvQsubFault+"="+pbsemu.QsubFaultSilent)
	if out, err := cmd.Output(); err != nil || len(out) != 0 || e.countJobs() != 5 {
		t.Errorf("PBSEMU_QSUB_FAULT=silent: %q %v, %d jobs", out, err, e.countJobs())
	}
	cmd = e.srv.Command("qsub", "t.sh")
	cmd.Dir, cmd.Env = e.dir, append(cmd.Env, pbsemu.EnvQsubFault+"=sometimes")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "PBSEMU_QSUB_FAULT") || e.countJobs() != 5 {
		t.Errorf("bad PBSEMU_QSUB_FAULT: %q %v, %d jobs", out, err, e.countJobs())
	}
}

// The MoM kills a job over its cput request (always) or its mem request
// (with $enforce mem): F/93, JOB_EXEC_KILL_CPUT -28 / JOB_EXEC_KILL_MEM -27,
// "and exceeded resource cput|mem", and the MoM's line on stderr.
func TestResourceLimitKills(t *testing.T) {
	e := newEnv(t, pbsemutest.Options{NCPUs: 2, WalltimeCheckInterval: 500 * time.Millisecond,
		Configure: func(c *pbsemu.Config) { c.EnforceMem = true }})
	cpu := e.qsub("-N", "burner", "-l", "cput=00:00:01", e.script("burn.sh", "#!/bin/bash\nwhile :; do :; done\n"))
	mem := e.qsub("-N", "hog", "-l", "select=1:ncpus=1:mem=16mb", e.script("hog.sh", "#!/bin/bash\nx=$(head -c 64000000 /dev/zero | tr '\\0' a)\nsleep 60\n"))
	for _, c := range []struct {
		id, name, res string
		exit          float64
		line          string
	}{
		{cpu, "burner", "cput", -28, `^=>> PBS: job killed: cput \d+ exceeded limit 1\n$`},
		{mem, "hog", "mem", -27, `^=>> PBS: job killed: mem \d+kb exceeded limit 16384kb\n$`},
	} {
		// a deadline, not a sleep: on a loaded machine the burner may
		// get a small share of a core, and needs 2 s of CPU
		f := e.wait(c.id, "F", 2*time.Minute)
		if num(f, "substate") != 93 || num(f, "Exit_status") != c.exit || !strings.HasSuffix(str(f, "comment"), " and exceeded resource "+c.res) {
			t.Errorf("%s: substate %v Exit_status %v comment %q", c.res, f["substate"], f["Exit_status"], f["comment"])
		}
		errf, _ := os.ReadFile(filepath.Join(e.dir, c.name+".e"+strings.TrimSuffix(c.id, ".pbshost")))
		if !regexp.MustCompile(c.line).Match(errf) {
			t.Errorf("%s: stderr %q", c.res, errf)
		}
	}
}
