package slurmrest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-hpc/tether/backends"
	g38 "github.com/tether-hpc/tether/backends/slurmrest/internal/v0038"
)

// decodeJob reads a captured GET job answer of one API version and
// translates it the way the backend does.
func decodeJob(t testing.TB, version string, raw []byte) (backends.JobStatus, error) {
	switch version {
	case "v0.0.38":
		var r g38.V0038JobsResponse
		if err := json.Unmarshal(raw, &r); err != nil || r.Jobs == nil || len(*r.Jobs) == 0 || (*r.Jobs)[0].JobId == nil {
			return backends.JobStatus{}, errNoJob(err)
		}
		return jobV0038((*r.Jobs)[0]).status(), nil
	case "v0.0.40", "v0.0.41", "v0.0.42":
		var r wireJobs
		if err := json.Unmarshal(raw, &r); err != nil || len(r.Jobs) == 0 {
			return backends.JobStatus{}, errNoJob(err)
		}
		return r.Jobs[0].job().status(), nil
	}
	t.Fatalf("unknown version %s", version)
	return backends.JobStatus{}, nil
}

type noJobErr struct{ err error }

func (e noJobErr) Error() string { return "no job in the answer" }
func errNoJob(err error) error   { return noJobErr{err} }

func capture(t *testing.T, pkg, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("internal", pkg, "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The captured answers of real slurmrestd 22.05 and 24.11 translate into
// the same normalized states and exit codes as the sbatch backend's.
func TestDecodeCapturedJobs(t *testing.T) {
	type want struct {
		state backends.State
		code  int // -1: no exit code
		sig   int
	}
	cases := map[string]want{
		"completed": {backends.Completed, 0, 0},
		"failed":    {backends.Failed, 3, 0},
		"timeout":   {backends.Timeout, -1, 15},
		"cancelled": {backends.Cancelled, -2, 0}, // -2: any
	}
	files := map[string]func(string) (string, string){
		"v0.0.38": func(c string) (string, string) { return "v0038", "2205-get-job-" + c + ".json" },
		"v0.0.40": func(c string) (string, string) { return "v0040", "2411-v0.0.40-get-job-" + c + ".json" },
		"v0.0.41": func(c string) (string, string) { return "v0041", "2411-v0.0.41-get-job-" + c + ".json" },
		"v0.0.42": func(c string) (string, string) { return "v0042", "2411-v0.0.42-get-job-" + c + ".json" },
	}
	for version, file := range files {
		for c, w := range cases {
			t.Run(version+"/"+c, func(t *testing.T) {
				pkg, name := file(c)
				st, err := decodeJob(t, version, capture(t, pkg, name))
				if err != nil {
					t.Fatal(err)
				}
				if st.State != w.state {
					t.Errorf("state %s (%s), want %s", st.State, st.Native, w.state)
				}
				switch {
				case w.code == -1 && st.ExitCode != nil:
					t.Errorf("exit code %d, want none (signal %d)", *st.ExitCode, st.Signal)
				case w.code >= 0 && (st.ExitCode == nil || *st.ExitCode != w.code):
					t.Errorf("exit code %v, want %d", st.ExitCode, w.code)
				}
				if w.sig != 0 && st.Signal != w.sig {
					t.Errorf("signal %d, want %d", st.Signal, w.sig)
				}
				if st.Submit.IsZero() || len(st.Nodes) == 0 && st.State != backends.Cancelled {
					t.Errorf("times or nodes missing: %+v", st)
				}
			})
		}
	}
	// 22.05: SIGKILL is a raw wait status of 9
	st, _ := decodeJob(t, "v0.0.38", capture(t, "v0038", "2205-get-job-sigkill.json"))
	if st.State != backends.Failed || st.Signal != 9 || st.ExitCode != nil {
		t.Errorf("sigkill: %+v", st)
	}
}

func TestOfferedVersions(t *testing.T) {
	got, err := OfferedVersions(capture(t, "v0038", "../openapi.json"))
	if err != nil || len(got) == 0 || got[len(got)-1] != "v0.0.38" {
		t.Errorf("22.05 offers %v, %v", got, err)
	}
	got, err = OfferedVersions(capture(t, "v0042", "../openapi.json"))
	if err != nil || len(got) < 3 {
		t.Errorf("24.11 offers %v, %v", got, err)
	}
	if _, err := OfferedVersions([]byte("<html>")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestClassifyErrorBodies(t *testing.T) {
	cases := map[string]errKind{
		"v0038/2205-submit-badpartition.txt":         errDefinite,
		"v0038/2205-get-job-notfound.txt":            errDefinite,
		"v0042/2411-v0.0.42-submit-badpartition.txt": errDefinite,
		`{"errors":[{"error_number":1001,"error":"Unable to contact slurm controller (connect failure)"}]}`: errTransient,
		`{"errors":[{"error_number":1007,"error":"Protocol authentication error"}]}`:                        errAuthKind,
		`<html>bad gateway</html>`: errNone,
		// unknown errors are transient; only Slurm's definite refusals are final
		`{"errors":[{"error_number":4242,"error":"Something new"}]}`:                                                             errTransient,
		`{"errors":[{"error_number":7000,"error":"Unable to connect to database"}]}`:                                             errTransient,
		`{"errors":[{"error_number":-1,"error":"Unspecified error"}]}`:                                                           errTransient,
		`{"errors":[{"error_number":2041,"error":"Requested more tasks than available processors"}]}`:                            errDefinite,
		`{"errors":[{"error_code":2066,"error":"Invalid qos specification"}]}`:                                                   errDefinite,
		`{"errors":[{"error_number":2050,"error":"Job violates accounting/QOS policy","description":"AssocMaxSubmitJobLimit"}]}`: errSubmitLimit, // no job: wait and send again
		`{"errors":[{"error_number":2007,"error":"Unable to create job record, try again"}]}`:                                    errSubmitLimit, // MaxJobCount
	}
	for in, want := range cases {
		body := []byte(in)
		if in[0] != '{' && in[0] != '<' {
			dir, name := filepath.Split(in)
			body = capture(t, filepath.Clean(dir), name)
			if i := indexJSON(body); i >= 0 {
				body = body[i:]
			}
		}
		if got := classify(body); got != want {
			t.Errorf("classify(%s) = %v, want %v", in, got, want)
		}
	}
}

// indexJSON skips the HTTP status line and headers of a .txt capture.
func indexJSON(b []byte) int {
	for i, c := range b {
		if c == '{' {
			return i
		}
	}
	return -1
}

// FuzzDecodeJob: any answer body decodes into a status or an error, for
// every API version, without a panic.
func FuzzDecodeJob(f *testing.F) {
	for _, p := range []string{"v0038/testdata/2205-get-job-failed.json", "v0042/testdata/2411-v0.0.42-get-job-timeout.json",
		"v0041/testdata/2411-v0.0.41-get-job-completed.json", "v0040/testdata/2411-v0.0.40-get-job-cancelled.json"} {
		if b, err := os.ReadFile(filepath.Join("internal", p)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"jobs":[{"job_id":1,"job_state":["RUNNING"],"exit_code":{"return_code":{"set":true,"number":-5}}}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, v := range []string{"v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42"} {
			st, err := decodeJob(t, v, raw)
			if err == nil && st.State == "" {
				t.Fatalf("%s: empty state", v)
			}
		}
		classify(raw)
		OfferedVersions(raw)
	})
}
