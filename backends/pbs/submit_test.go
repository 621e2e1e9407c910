package pbs

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/cli"
)

// The tag goes to the job as a variable (qsub -v), which qstat -f shows in
// Variable_List (capture 12: "-v FOO=bar" gives "FOO":"bar").
func TestArgsTag(t *testing.T) {
	req := backends.JobRequest{Name: "n", Stdout: "/o", Stderr: "/e", Script: "/job.sh", Tag: "tether:sim-20260101T000000-abcdef:2"}
	got := strings.Join(Args(req, Options{}), " ")
	if !strings.HasPrefix(got, "-N n -o /o -e /e -k oed -v TETHER_TAG=tether:sim-20260101T000000-abcdef:2 -r n ") {
		t.Errorf("args: %s", got)
	}
	for _, bad := range []string{"a,b", "a'b", `a"b`, "a b"} {
		req.Tag = bad
		if got := strings.Join(Args(req, Options{}), " "); strings.Contains(got, "TETHER_TAG") {
			t.Errorf("tag %q that qsub -v would mangle was sent: %s", bad, got)
		}
	}
}

// qsub -V must not carry a TETHER_TAG of tether's own environment.
func TestEnvironDropsTag(t *testing.T) {
	t.Setenv("TETHER_TAG", "tether:outer:1")
	b := New("", "", map[string]string{"PBSEMU_HOME": "/x"})
	env := b.Environ()
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TETHER_TAG=") }) {
		t.Errorf("TETHER_TAG passed to qsub")
	}
	if !slices.Contains(env, "PBSEMU_HOME=/x") {
		t.Errorf("site env missing")
	}
}

// Only qsub's definite refusals are ErrRejected; a lost or unknown answer
// is ErrUnavailable, since the job may have been queued.
func TestQsubResult(t *testing.T) {
	type want int
	const (
		ok want = iota
		rejected
		unavailable
		limit // a submit limit: not sent, to be sent again later
	)
	for _, c := range []struct {
		name           string
		code           int
		stdout, stderr string
		want           want
		id             string
	}{
		{"id", 0, "12.pbshost\n", "", ok, "12.pbshost"},
		{"id after other lines", 0, "site banner\n13.pbshost\n", "", ok, "13.pbshost"},
		{"id without server", 0, "14\n", "", ok, "14.srv"},
		{"no output", 0, "", "", unavailable, ""},
		{"garbage", 0, "hello world\n", "", unavailable, ""},
		// capture 10
		{"unknown queue", 170, "", "qsub: Unknown queue\n", rejected, ""},
		{"bad walltime", 166, "", "qsub: Illegal attribute or resource value Resource_List.walltime\n", rejected, ""},
		{"unknown resource", 187, "", "qsub: Unknown resource: foo\n", rejected, ""},
		// capture 17
		{"over queue limit", 188, "", "qsub: Job violates queue and/or server resource limits\n", rejected, ""},
		{"torque wording", 188, "", "qsub: Job exceeds queue resource limits MSG=cannot satisfy queue max walltime requirement\n", rejected, ""},
		// capture 15
		{"root", 175, "", "qsub: Bad UID for job execution\n", rejected, ""},
		{"option", 2, "", "qsub: illegal -N value\nusage: qsub [-a date_time] [-A account_string] [-c interval]\n", rejected, ""},
		{"dependency", 54, "", "qsub: Invalid Job Dependency\n", rejected, ""},
		{"server down", 162, "", "System call failure.\nqsub: cannot connect to server pbshost (errno=15010)\n", unavailable, ""},
		{"protocol", 183, "", "qsub: Batch protocol error\n", unavailable, ""},
		{"daemon", 1, "", "Failed to recv data from background qsub\n", unavailable, ""},
		{"queue disabled", 38, "", "qsub: Queue is not enabled\n", unavailable, ""},
		{"max queued", 38, "", "qsub: would exceed complex's per-user limit of jobs in 'Q' state\n", limit, ""},
		{"max queued, queue", 38, "", "qsub: would exceed queue generic's per-user limit of jobs in 'Q' state\n", limit, ""},
		{"queue full", 38, "", "qsub: Maximum number of jobs already in queue\n", limit, ""},
		{"script gone", 1, "", "qsub: script file:: No such file or directory\n", unavailable, ""},
		{"unknown", 99, "", "qsub: something new\n", unavailable, ""},
	} {
		b := &Backend{Server: "srv"}
		id, err := b.qsubResult(cli.Result{Name: "qsub", Stdout: []byte(c.stdout), Stderr: []byte(c.stderr), Code: c.code}, nil)
		switch c.want {
		case ok:
			if err != nil || string(id) != c.id {
				t.Errorf("%s: %q %v, want %s", c.name, id, err, c.id)
			}
		case rejected:
			if !errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrUnavailable) {
				t.Errorf("%s: %v, want ErrRejected", c.name, err)
			}
		case unavailable:
			if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrSubmitLimit) {
				t.Errorf("%s: %v, want ErrUnavailable", c.name, err)
			}
		case limit:
			if !errors.Is(err, backends.ErrSubmitLimit) || !errors.Is(err, backends.ErrNotSent) || errors.Is(err, backends.ErrRejected) {
				t.Errorf("%s: %v, want ErrSubmitLimit", c.name, err)
			}
		}
	}
}

// FindByTag reads Variable_List of every job: the tagged one, the first
// submitted if a Task's own qsub -V copied the tag, values of any JSON type.
func TestFindTagged(t *testing.T) {
	doc := `{"timestamp":1,"pbs_version":"23.06.06","pbs_server":"pbshost","Jobs":{
	"3.pbshost":{"job_state":"F","ctime":"Thu Nov 26 19:59:18 2026","Variable_List":{"PBS_O_HOME":"/root","TETHER_TAG":"tether:a:1","N":5}},
	"4.pbshost":{"job_state":"R","ctime":"Thu Nov 26 19:59:20 2026","Variable_List":{"TETHER_TAG":"tether:b:1"}},
	"5.pbshost":{"job_state":"Q","ctime":"Thu Nov 26 20:00:01 2026","Variable_List":{"TETHER_TAG":"tether:b:1"}},
	"6.pbshost":{"job_state":"Q","ctime":"Thu Nov 26 20:00:01 2026"},
	"7.pbshost":{"job_state":"Q","ctime":"Thu Nov 26 20:00:01 2026","Variable_List":{"TETHER_TAG":"tether:c:1"}},
	"8.pbshost":{"job_state":"Q","ctime":"Thu Nov 26 20:00:01 2026","Variable_List":{"TETHER_TAG":"tether:c:1"}}}}`
	for tag, want := range map[string]string{"tether:a:1": "3.pbshost", "tether:b:1": "4.pbshost", "tether:c:1": "7.pbshost", "tether:a:2": ""} {
		id, found, err := findTagged([]byte(doc), tag)
		if err != nil || string(id) != want || found != (want != "") {
			t.Errorf("%s: %q %v %v, want %q", tag, id, found, err, want)
		}
	}
	if _, found, err := findTagged([]byte(`{"timestamp":1,"pbs_version":"23.06.06","pbs_server":"pbshost"}`), "tether:a:1"); found || err != nil {
		t.Errorf("no jobs: %v %v", found, err)
	}
	if _, _, err := findTagged(nil, "tether:a:1"); err == nil {
		t.Error("empty qstat output is no answer")
	}
	if _, _, err := findTagged([]byte("qstat: garbage"), "tether:a:1"); err == nil {
		t.Error("garbage accepted")
	}
}

// qstat -F json of a job submitted with -V can be invalid JSON (stray
// backslashes, OpenPBS issue 2541 and pull 2049): it is repaired, so one
// such job hides neither the others nor itself.
func TestParseQstatRepairsJSON(t *testing.T) {
	doc := "{\"Jobs\":{\"9.pbshost\":{\"job_state\":\"R\",\"ctime\":\"Thu Nov 26 19:59:18 2026\",\"Variable_List\":{" +
		`"MYVAR":"\'\"asads\"\'","MYVAR2":"ab\,c","F":"a` + "\t" + `b","U":"\u00e9 \uZZ","TETHER_TAG":"tether:x:1"}}}}`
	if json.Valid([]byte(doc)) {
		t.Fatal("the test document should be invalid JSON")
	}
	got, err := ParseQstat([]byte(doc))
	if err != nil || got["9.pbshost"].State != backends.Running {
		t.Fatalf("%v %v", got, err)
	}
	if id, found, err := findTagged([]byte(doc), "tether:x:1"); err != nil || !found || id != "9.pbshost" {
		t.Errorf("find in repaired document: %q %v %v", id, found, err)
	}
	if b, err := os.ReadFile("testdata/openpbs-23.06_14_qstat_x_f_json_all-1.json"); err != nil || string(repairJSON(b)) != string(b) {
		t.Errorf("repair changes valid JSON (%v)", err)
	}
}
