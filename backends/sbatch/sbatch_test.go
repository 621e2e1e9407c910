package sbatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
	"github.com/tether-hpc/tether/backends"
)

// fakeSlurm is a directory of stand-ins for the Slurm commands: each
// prints what it was given (captured from the test clusters) and records
// its arguments, one call per line.
type fakeSlurm struct{ dir string }

func newFakeSlurm(t *testing.T) *fakeSlurm {
	t.Helper()
	return &fakeSlurm{dir: t.TempDir()}
}

const fakeCommand = `#!/bin/sh
d=$(dirname "$0"); n=$(basename "$0")
printf '%s\n' "$*" >> "$d/$n.calls"
cat "$d/$n.out"
cat "$d/$n.err" >&2
exit $(cat "$d/$n.rc")
`

// set makes the command print stdout and stderr and exit with code.
func (f *fakeSlurm) set(t *testing.T, name, stdout, stderr string, code int) {
	t.Helper()
	for file, data := range map[string]string{name: fakeCommand, name + ".out": stdout, name + ".err": stderr, name + ".rc": strconv.Itoa(code)} {
		if err := os.WriteFile(filepath.Join(f.dir, file), []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(f.dir, name+".calls"))
}

// calls returns the argument lines of every call of the command.
func (f *fakeSlurm) calls(name string) []string {
	b, err := os.ReadFile(filepath.Join(f.dir, name+".calls"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (f *fakeSlurm) backend(accounting bool) *Backend { return New(f.dir, nil, accounting) }

// capturedCase is one failure capture-errors.sh recorded.
type capturedCase struct {
	name, stderr string
	code         int
}

func capturedErrors(t *testing.T, ver string) []capturedCase {
	t.Helper()
	ar, err := txtar.ParseFile("testdata/sbatch-errors-" + ver + ".txtar")
	if err != nil {
		t.Fatal(err)
	}
	var out []capturedCase
	exit := regexp.MustCompile(`(?m)^# exit (\d+)\n?\z`)
	for _, f := range ar.Files {
		data := string(f.Data)
		m := exit.FindStringSubmatchIndex(data)
		if m == nil {
			t.Fatalf("%s: no exit status in %q", f.Name, data)
		}
		code, _ := strconv.Atoi(data[m[2]:m[3]])
		_, body, _ := strings.Cut(data[:m[0]], "\n") // drop the "# sbatch ARGS" line
		out = append(out, capturedCase{name: f.Name, stderr: body, code: code})
	}
	return out
}

// what Submit must make of every captured sbatch failure: nil means
// ErrUnavailable (transient), otherwise the definite refusal's words.
var capturedWant = map[string]string{
	"partition":     "Invalid partition name specified",
	"timelimit":     "Requested time limit is invalid",
	"ntasks":        "More processors requested than permitted",
	"cpus-per-task": "More processors requested than permitted",
	"nodes":         "Node count specification invalid",
	"memory":        "Requested node configuration is not available",
	"tmp":           "Requested node configuration is not available",
	"feature":       "Invalid feature specification",
	"gres":          "Invalid generic resource (gres) specification",
	"gpus":          "Invalid generic resource (gres) specification",
	"reservation":   "Requested reservation is invalid",
	"exclude":       "Invalid node name specified",
	"nodelist":      "Invalid node name specified",
	"licenses":      "Invalid license specification",
	"option":        "unrecognized option '--no-such-option'",
	"time-spec":     "Invalid --time specification",
	"signal-spec":   "Invalid --signal specification",
	"munge-down":    "",
	"ctld-down":     "",
}

// Messages the test clusters cannot produce on demand (a munge key
// mismatch, a controller that times out, a submit limit, accounting
// enforcement), in the form sbatch prints them.
var literalCases = []struct {
	name, stderr string
	refusal      string // "" = transient
}{
	{"credential", "sbatch: error: Batch job submission failed: Invalid authentication credential\n", ""},
	{"expired credential", "sbatch: error: Batch job submission failed: Authentication credential expired\n", ""},
	{"transport", "sbatch: error: Batch job submission failed: Transport endpoint is not connected\n", ""},
	{"socket timeout", "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n", ""},
	{"zero bytes", "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received\n", ""},
	{"receive failure", "sbatch: error: Batch job submission failed: Unable to contact slurm controller (receive failure)\n", ""},
	{"busy", "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\nsbatch: error: Batch job submission failed: Resource temporarily unavailable\n", ""},
	{"job record", "sbatch: error: Slurm job queue full, sleeping and retrying\nsbatch: error: Batch job submission failed: Unable to create job record, try again\n", ""},
	{"standby", "sbatch: error: Batch job submission failed: Slurm backup controller in standby mode\n", ""},
	{"database", "sbatch: error: Batch job submission failed: Unable to connect to database\n", ""},
	{"database cluster", "sbatch: error: There is a problem talking to the database: Connection refused.  Only local cluster communication is available, remove --cluster from your command line or contact your admin to resolve the problem.\n", ""},
	{"partition down", "sbatch: error: Batch job submission failed: Required partition not available (inactive or drain)\n", ""},
	{"submissions disabled", "sbatch: error: Batch job submission failed: System submissions disabled\n", ""},
	{"job_submit plugin", "sbatch: error: Batch job submission failed: Unspecified error\n", ""},
	{"unknown", "sbatch: error: something nobody has seen before\n", ""},
	{"silent", "", ""},
	{"submit limit", "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n", ""},
	{"assoc submit limit", "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n", ""},
	{"size limit", "sbatch: error: QOSMaxCpuPerJobLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n", "Job violates accounting/QOS policy"},
	{"account", "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n", "Invalid account or account/partition combination specified"},
	{"qos", "sbatch: error: Batch job submission failed: Invalid qos specification\n", "Invalid qos specification"},
	{"argument", "sbatch: option '--time' requires an argument\nTry \"sbatch --help\" for more information\n", "sbatch: option '--time' requires an argument"},
	{"node count", "sbatch: error: \"x\" is not a valid node count\n", `sbatch: error: "x" is not a valid node count`},
}

func checkSubmitError(t *testing.T, name string, err error, refusal string) {
	t.Helper()
	switch {
	case refusal == "" && (!errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrRejected)):
		t.Errorf("%s: want ErrUnavailable (transient), got %v", name, err)
	case refusal != "" && (!errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrUnavailable)):
		t.Errorf("%s: want ErrRejected, got %v", name, err)
	case refusal != "" && !strings.Contains(err.Error(), refusal):
		t.Errorf("%s: the error does not carry Slurm's words %q: %v", name, refusal, err)
	}
}

// Only definite refusals are ErrRejected (exit 2, the request must
// change); every other sbatch failure (munge or slurmctld down, a timeout,
// a message tether does not know) is ErrUnavailable. Before, any sbatch
// error was a refusal, so an outage failed runs as bad input.
func TestSubmitErrorsCaptured(t *testing.T) {
	for _, ver := range []string{"22.05", "24.11"} {
		cases := capturedErrors(t, ver)
		seen := map[string]bool{}
		for _, c := range cases {
			if strings.HasPrefix(c.name, "scancel-") {
				continue
			}
			want, ok := capturedWant[c.name]
			if !ok {
				t.Errorf("%s: captured case %s has no expectation", ver, c.name)
				continue
			}
			seen[c.name] = true
			f := newFakeSlurm(t)
			f.set(t, "sbatch", "", c.stderr, c.code)
			_, err := f.backend(true).Submit(context.Background(), backends.JobRequest{Script: "/x/job.sh"})
			checkSubmitError(t, ver+"/"+c.name, err, want)
		}
		for name := range capturedWant {
			if !seen[name] {
				t.Errorf("%s: no capture of %s", ver, name)
			}
		}
	}
}

func TestSubmitErrorsLiteral(t *testing.T) {
	for _, c := range literalCases {
		f := newFakeSlurm(t)
		f.set(t, "sbatch", "", c.stderr, 1)
		_, err := f.backend(true).Submit(context.Background(), backends.JobRequest{Script: "/x/job.sh"})
		checkSubmitError(t, c.name, err, c.refusal)
	}
	// sbatch that cannot run, or prints no job id
	b := New(filepath.Join(t.TempDir(), "nonexistent"), nil, true)
	if _, err := b.Submit(context.Background(), backends.JobRequest{}); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("missing sbatch: %v", err)
	}
	f := newFakeSlurm(t)
	f.set(t, "sbatch", "Submitted batch job\n", "", 0)
	if _, err := f.backend(true).Submit(context.Background(), backends.JobRequest{}); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("no job id: %v", err)
	}
	f.set(t, "sbatch", "1234;cluster\n", "", 0)
	if id, err := f.backend(true).Submit(context.Background(), backends.JobRequest{}); err != nil || id != "1234" {
		t.Errorf("Submit = %q, %v", id, err)
	}
}

// Cancel is idempotent (a job that ended or that Slurm never knew needs
// no cancel) and a cancel that cannot reach the controller, or cannot
// authenticate, wraps ErrUnavailable so that the engine issues it again.
func TestCancel(t *testing.T) {
	for _, ver := range []string{"22.05", "24.11"} {
		for _, c := range capturedErrors(t, ver) {
			name, ok := strings.CutPrefix(c.name, "scancel-")
			if !ok {
				continue
			}
			f := newFakeSlurm(t)
			f.set(t, "scancel", "", c.stderr, c.code)
			err := f.backend(true).Cancel(context.Background(), "99999999")
			switch name {
			case "ended", "unknown", "unknown-verbose":
				if err != nil {
					t.Errorf("%s/%s: %v, want nil", ver, name, err)
				}
			case "munge-down", "ctld-down":
				if !errors.Is(err, backends.ErrUnavailable) {
					t.Errorf("%s/%s: %v, want ErrUnavailable", ver, name, err)
				}
			default:
				t.Errorf("%s: captured case %s has no expectation", ver, c.name)
			}
		}
	}
	// older scancel versions exit 1 for these
	for _, msg := range []string{"scancel: error: Kill job error on job id 5: Invalid job id specified\n",
		"scancel: error: Kill job error on job id 5: Job/step already completing or completed\n"} {
		f := newFakeSlurm(t)
		f.set(t, "scancel", "", msg, 1)
		if err := f.backend(true).Cancel(context.Background(), "5"); err != nil {
			t.Errorf("%q: %v", msg, err)
		}
	}
	f := newFakeSlurm(t)
	f.set(t, "scancel", "", "scancel: error: Kill job error on job id 5: Socket timed out on send/recv operation\n", 1)
	if err := f.backend(true).Cancel(context.Background(), "5"); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("timeout: %v", err)
	}
}

// findFixture is what capture-find.sh recorded on one cluster.
type findFixture struct {
	squeue, sacct []byte
	run           string
	jobs          map[string]string // attempt1, attempt2, other -> job id
}

func loadFind(t *testing.T, ver string) findFixture {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fx := findFixture{squeue: read("find-squeue-" + ver + ".txt"), sacct: read("find-sacct-" + ver + ".txt"), jobs: map[string]string{}}
	for _, kv := range strings.Fields(string(read("find-ids-" + ver + ".txt"))) {
		k, v, _ := strings.Cut(kv, "=")
		if k == "run" {
			fx.run = v
		} else {
			fx.jobs[k] = v
		}
	}
	return fx
}

// A job the controller has purged (MinJobAge after it ended) is found in
// accounting with ONE sacct call, by the attempt's working directory (the
// comment is not stored without AccountingStoreFlags=job_comment): the
// launcher must not submit it again. Before, FindByTag read only squeue,
// and a purged job was submitted a second time.
func TestFindByTagPurgedJob(t *testing.T) {
	for _, ver := range []string{"22.05", "24.11"} {
		fx := loadFind(t, ver)
		tag := func(n int) string { return fmt.Sprintf("tether:%s:%d", fx.run, n) }

		// still in the controller: squeue finds it by its comment
		f := newFakeSlurm(t)
		f.set(t, "squeue", string(fx.squeue), "", 0)
		f.set(t, "sacct", string(fx.sacct), "", 0)
		b := f.backend(true)
		if id, ok, err := b.FindByTag(context.Background(), tag(2)); err != nil || !ok || string(id) != fx.jobs["attempt2"] {
			t.Errorf("%s: in squeue: FindByTag = %q %v %v, want %s", ver, id, ok, err, fx.jobs["attempt2"])
		}
		if n := len(f.calls("sacct")); n != 0 {
			t.Errorf("%s: %d sacct calls for a job squeue knows", ver, n)
		}

		// purged: squeue knows only other jobs
		f.set(t, "squeue", "12|(null)\n13|not|tether's\n", "", 0)
		for n, role := range map[int]string{1: "attempt1", 2: "attempt2"} {
			id, ok, err := b.FindByTag(context.Background(), tag(n))
			if err != nil || !ok || string(id) != fx.jobs[role] {
				t.Errorf("%s: purged attempt %d: FindByTag = %q %v %v, want %s", ver, n, id, ok, err, fx.jobs[role])
			}
		}
		calls := f.calls("sacct")
		if len(calls) != 2 {
			t.Fatalf("%s: sacct calls %q, want one per FindByTag", ver, calls)
		}
		if !regexp.MustCompile(`^-X -n -P --format=JobID,Comment,WorkDir --starttime=now-\d+hours$`).MatchString(calls[0]) {
			t.Errorf("%s: sacct %s", ver, calls[0])
		}
		if _, ok, err := b.FindByTag(context.Background(), tag(3)); ok || err != nil {
			t.Errorf("%s: an attempt that was never submitted: found=%v err=%v", ver, ok, err)
		}
		if _, ok, err := b.FindByTag(context.Background(), "tether:capture-20260101T000000-abcdef:1"); ok || err != nil {
			t.Errorf("%s: another run: found=%v err=%v", ver, ok, err)
		}

		// slurmdbd unreachable: an error, never "not found" (which would
		// submit again)
		dbdDown, _ := os.ReadFile("testdata/find-sacct-dbd-down-" + ver + ".txt")
		f.set(t, "sacct", "", strings.TrimSuffix(string(dbdDown), "# exit 1\n"), 1)
		if _, ok, err := b.FindByTag(context.Background(), tag(1)); ok || !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("%s: slurmdbd down: found=%v err=%v, want ErrUnavailable", ver, ok, err)
		}
		// a cluster without accounting storage: nothing to find there
		noAcct, _ := os.ReadFile("testdata/find-sacct-no-accounting-" + ver + ".txt")
		f.set(t, "sacct", "", strings.TrimSuffix(string(noAcct), "# exit 1\n"), 1)
		if _, ok, err := b.FindByTag(context.Background(), tag(1)); ok || err != nil {
			t.Errorf("%s: accounting disabled: found=%v err=%v", ver, ok, err)
		}
		// accounting = false in the site: no sacct call at all
		f.set(t, "sacct", string(fx.sacct), "", 0)
		if _, ok, err := f.backend(false).FindByTag(context.Background(), tag(1)); ok || err != nil || len(f.calls("sacct")) != 0 {
			t.Errorf("%s: without accounting: found=%v err=%v sacct calls %q", ver, ok, err, f.calls("sacct"))
		}
		// squeue failing is an error too
		f.set(t, "squeue", "", "squeue: error: Unable to contact slurm controller (connect failure)\n", 1)
		if _, ok, err := b.FindByTag(context.Background(), tag(1)); ok || !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("%s: squeue down: found=%v err=%v", ver, ok, err)
		}
	}
}

// Where slurmdbd stores comments (AccountingStoreFlags=job_comment) the
// comment matches wherever the job ran; the newest of several jobs wins.
func TestFindByTagStoredComment(t *testing.T) {
	f := newFakeSlurm(t)
	f.set(t, "squeue", "", "", 0)
	f.set(t, "sacct", "40|tether:r-20260101T000000-abcdef:1|/somewhere/else\n"+
		"41|tether:r-20260101T000000-abcdef:1|/somewhere/else\n"+
		"42|tether:r-20260101T000000-abcdef:10|/state/runs/r-20260101T000000-abcdef/attempts/10\n"+
		"43|with|pipes|/state/runs/r-20260101T000000-abcdef/attempts/11\n", "", 0)
	b := f.backend(true)
	if id, ok, err := b.FindByTag(context.Background(), "tether:r-20260101T000000-abcdef:1"); err != nil || !ok || id != "41" {
		t.Errorf("FindByTag = %q %v %v, want 41", id, ok, err)
	}
	if id, ok, err := b.FindByTag(context.Background(), "tether:r-20260101T000000-abcdef:11"); err != nil || !ok || id != "43" {
		t.Errorf("FindByTag = %q %v %v, want 43 (by its working directory)", id, ok, err)
	}
}

// A limit on the number of jobs (QOS or association MaxSubmitJobs,
// MaxJobCount reached) is ErrSubmitLimit and ErrNotSent: no job exists,
// so the submitter waits and sends the same request again; a QOS size
// limit stays a refusal.
func TestSubmitLimitIsNotSent(t *testing.T) {
	for _, c := range literalCases {
		f := newFakeSlurm(t)
		f.set(t, "sbatch", "", c.stderr, 1)
		_, err := f.backend(true).Submit(context.Background(), backends.JobRequest{Script: "/x/job.sh"})
		limit := strings.Contains(c.stderr, "SubmitJob") || strings.Contains(c.stderr, "Unable to create job record")
		if errors.Is(err, backends.ErrSubmitLimit) != limit || limit && !errors.Is(err, backends.ErrNotSent) {
			t.Errorf("%s: %v (submit limit: %v)", c.name, err, limit)
		}
	}
}
