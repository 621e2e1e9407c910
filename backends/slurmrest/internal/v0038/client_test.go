package v0038

// These tests decode responses captured from a real slurmrestd 22.05.8
// (testdata/2205-*) with the generated types, through the generated Parse*
// functions, so they prove that overlay.yaml matches what the server sends.
//
// v0.0.38 quirks asserted here (see doc.go):
//   - exit_code is the raw wait status: exit 3 arrives as 768 (3<<8),
//     SIGTERM (scancel, timeout) as 15, SIGKILL as 9, and a job cancelled
//     before it ran as 4294967295 (NO_VAL).
//   - job_state is a plain string.
//   - meta.Slurm.version numbers are JSON numbers (the spec says string).
//   - submit errors carry error_code, get/kill errors error_number.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// capture returns testdata/name as an *http.Response. *.txt files hold the
// status line and headers as captured; *.json files are bodies of HTTP 200
// application/json answers.
func capture(t *testing.T, name string) *http.Response {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".json") {
		return &http.Response{
			StatusCode: http.StatusOK,
			Status:     "200 OK",
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       io.NopCloser(bytes.NewReader(raw)),
		}
	}
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("%s: no header/body separator", name)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(append(head, "\r\n\r\n"...))), nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// The saved body is not byte-exact with Content-Length; use it whole.
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp
}

func deref[T any](t *testing.T, what string, p *T) T {
	t.Helper()
	if p == nil {
		t.Fatalf("%s: nil", what)
	}
	return *p
}

func checkMeta(t *testing.T, m *V0038Meta) {
	t.Helper()
	v := deref(t, "meta", m).Slurm
	if v == nil || v.Version == nil || deref(t, "major", v.Version.Major) != 22 ||
		deref(t, "minor", v.Version.Minor) != 5 || deref(t, "micro", v.Version.Micro) != 8 {
		t.Fatalf("meta.Slurm.version = %+v, want 22.5.8", v)
	}
}

func TestGetJob(t *testing.T) {
	for _, tc := range []struct {
		file     string
		id       int
		state    string
		exitCode int // raw wait status
		reason   string
		nodes    string
	}{
		{"2205-get-job-running.json", 22, "RUNNING", 0, "None", "vm"},
		{"2205-get-job-completed.json", 20, "COMPLETED", 0, "None", "vm"},
		{"2205-get-job-failed.json", 21, "FAILED", 3 << 8, "NonZeroExitCode", "vm"}, // exit 3 -> 768
		{"2205-get-job-timeout.json", 23, "TIMEOUT", 15, "TimeLimit", "vm"},         // SIGTERM
		{"2205-get-job-cancelled.json", 22, "CANCELLED", 15, "None", "vm"},          // SIGTERM
		{"2205-get-job-sigkill.json", 24, "FAILED", 9, "JobLaunchFailure", "vm"},    // SIGKILL
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := ParseSlurmV0038GetJobResponse(capture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if r.JSON200 == nil {
				t.Fatalf("JSON200 nil, status %d", r.StatusCode())
			}
			checkMeta(t, r.JSON200.Meta)
			jobs := deref(t, "jobs", r.JSON200.Jobs)
			if len(jobs) != 1 {
				t.Fatalf("%d jobs", len(jobs))
			}
			j := jobs[0]
			if got := deref(t, "job_id", j.JobId); got != tc.id {
				t.Errorf("job_id = %d, want %d", got, tc.id)
			}
			if got := deref(t, "job_state", j.JobState); got != tc.state {
				t.Errorf("job_state = %q, want %q", got, tc.state)
			}
			if got := deref(t, "exit_code", j.ExitCode); got != tc.exitCode {
				t.Errorf("exit_code = %d, want %d", got, tc.exitCode)
			}
			if got := deref(t, "state_reason", j.StateReason); got != tc.reason {
				t.Errorf("state_reason = %q, want %q", got, tc.reason)
			}
			if got := deref(t, "nodes", j.Nodes); got != tc.nodes {
				t.Errorf("nodes = %q, want %q", got, tc.nodes)
			}
			sub, start, end := deref(t, "submit_time", j.SubmitTime), deref(t, "start_time", j.StartTime), deref(t, "end_time", j.EndTime)
			if sub <= 1e9 || start < sub || end < start {
				t.Errorf("times submit=%d start=%d end=%d", sub, start, end)
			}
			if deref(t, "time_limit", j.TimeLimit) <= 0 {
				t.Errorf("time_limit = %d", *j.TimeLimit)
			}
			if j.JobResources == nil || deref(t, "job_resources.nodes", j.JobResources.Nodes) != tc.nodes {
				t.Errorf("job_resources = %+v", j.JobResources)
			}
		})
	}
}

func TestGetJobNotFound(t *testing.T) {
	r, err := ParseSlurmV0038GetJobResponse(capture(t, "2205-get-job-notfound.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 500 || r.JSONDefault == nil {
		t.Fatalf("status %d, JSONDefault %v", r.StatusCode(), r.JSONDefault)
	}
	errs := deref(t, "errors", r.JSONDefault.Errors)
	if len(errs) != 1 || deref(t, "error_number", errs[0].ErrorNumber) != 2017 {
		t.Fatalf("errors = %+v", errs)
	}
}

func TestListJobs(t *testing.T) {
	r, err := ParseSlurmV0038GetJobsResponse(capture(t, "2205-list-jobs.json"))
	if err != nil {
		t.Fatal(err)
	}
	checkMeta(t, r.JSON200.Meta)
	jobs := deref(t, "jobs", r.JSON200.Jobs)
	if len(jobs) != 24 {
		t.Fatalf("%d jobs, want 24", len(jobs))
	}
	byID := map[int]V0038JobResponseProperties{}
	for _, j := range jobs {
		byID[deref(t, "job_id", j.JobId)] = j
	}
	for id, want := range map[int]struct {
		state string
		exit  int
	}{
		1: {"COMPLETED", 0},
		2: {"FAILED", 768}, // exit 3
		8: {"FAILED", 256}, // exit 1
		3: {"CANCELLED", 15},
		4: {"TIMEOUT", 15},
		6: {"CANCELLED", 4294967295}, // cancelled before it ran: NO_VAL
	} {
		j, ok := byID[id]
		if !ok {
			t.Fatalf("job %d missing", id)
		}
		if *j.JobState != want.state || *j.ExitCode != want.exit {
			t.Errorf("job %d: state %q exit %d, want %q %d", id, *j.JobState, *j.ExitCode, want.state, want.exit)
		}
	}
}

func TestSubmit(t *testing.T) {
	for file, id := range map[string]int{
		"2205-submit-response.txt":        20,
		"2205-local-submit-response.json": 26,
	} {
		r, err := ParseSlurmV0038SubmitJobResponse(capture(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if r.JSON200 == nil {
			t.Fatalf("%s: JSON200 nil", file)
		}
		checkMeta(t, r.JSON200.Meta)
		if got := deref(t, "job_id", r.JSON200.JobId); got != id {
			t.Errorf("%s: job_id = %d, want %d", file, got, id)
		}
		if got := deref(t, "step_id", r.JSON200.StepId); got != "BATCH" {
			t.Errorf("%s: step_id = %q", file, got)
		}
	}
}

func TestSubmitErrors(t *testing.T) {
	for _, tc := range []struct {
		file   string
		status int
		codes  []int // error_code of each entry
	}{
		{"2205-submit-badpartition.txt", 500, []int{2000}},
		{"2205-submit-badtime.txt", 500, []int{2051}},
		{"2205-submit-noenv.txt", 400, []int{2127, 9001}},
	} {
		r, err := ParseSlurmV0038SubmitJobResponse(capture(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if r.StatusCode() != tc.status || r.JSONDefault == nil {
			t.Fatalf("%s: status %d, JSONDefault %v", tc.file, r.StatusCode(), r.JSONDefault)
		}
		checkMeta(t, r.JSONDefault.Meta)
		var codes []int
		for _, e := range deref(t, "errors", r.JSONDefault.Errors) {
			codes = append(codes, deref(t, "error_code", e.ErrorCode))
			if deref(t, "error", e.Error) == "" {
				t.Errorf("%s: empty error text", tc.file)
			}
		}
		if !reflect.DeepEqual(codes, tc.codes) {
			t.Errorf("%s: error codes %v, want %v", tc.file, codes, tc.codes)
		}
	}
}

func TestCancel(t *testing.T) {
	r, err := ParseSlurmV0038CancelJobResponse(capture(t, "2205-cancel-response.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 200 || r.JSON200 == nil || len(deref(t, "errors", r.JSON200.Errors)) != 0 {
		t.Fatalf("cancel: status %d, %+v", r.StatusCode(), r.JSON200)
	}

	r, err = ParseSlurmV0038CancelJobResponse(capture(t, "2205-cancel-notfound.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 500 || r.JSON500 == nil {
		t.Fatalf("cancel unknown: status %d, JSON500 %v", r.StatusCode(), r.JSON500)
	}
	errs := deref(t, "errors", r.JSON500.Errors)
	if len(errs) != 1 || deref(t, "error_number", errs[0].ErrorNumber) != 2017 ||
		deref(t, "source", errs[0].Source) != "slurm_kill_job" {
		t.Fatalf("errors = %+v", errs)
	}
}

func TestPing(t *testing.T) {
	r, err := ParseSlurmV0038PingResponse(capture(t, "2205-jwt-ping.txt"))
	if err != nil {
		t.Fatal(err)
	}
	checkMeta(t, r.JSON200.Meta)
	pings := deref(t, "pings", r.JSON200.Pings)
	if len(pings) != 1 || deref(t, "ping", pings[0].Ping) != V0038PingPingUP ||
		deref(t, "hostname", pings[0].Hostname) != "vm" {
		t.Fatalf("pings = %+v", pings)
	}
}

// The captured request bodies must survive a decode/encode round trip
// through V0038JobSubmission (environment is an object, script top level).
func TestSubmitBodyRoundTrip(t *testing.T) {
	for _, file := range []string{"2205-submit-body.json", "2205-local-submit-body.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		var body V0038JobSubmission
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if body.Script == "" || body.Job == nil || body.Job.Environment["PATH"] == "" {
			t.Fatalf("%s: decoded %+v", file, body)
		}
		out, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		_ = json.Unmarshal(raw, &a)
		_ = json.Unmarshal(out, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: round trip differs:\n in: %s\nout: %s", file, raw, out)
		}
	}
}

// End to end through ClientWithResponses: paths, auth headers, query
// parameters and response parsing.
func TestClientEndToEnd(t *testing.T) {
	failed, err := os.ReadFile("testdata/2205-get-job-failed.json")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-SLURM-USER-NAME") != "alice" || r.Header.Get("X-SLURM-USER-TOKEN") != "tok" {
			http.Error(w, "Authentication failure", http.StatusUnauthorized)
			return
		}
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/slurm/v0.0.38/job/21":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(failed)
		case r.Method == http.MethodPost && r.URL.Path == "/slurm/v0.0.38/job/submit":
			var body V0038JobSubmission
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Job.Environment["A"] != "b" {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"meta":{"Slurm":{"version":{"major":22,"micro":8,"minor":5}}},"errors":[],"job_id":99,"step_id":"BATCH"}`))
		case r.URL.Path == "/openapi/v3":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"openapi":"3.0.2"}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"errors":[]}`))
		}
	}))
	defer srv.Close()

	c, err := NewClientWithResponses(srv.URL, WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-SLURM-USER-NAME", "alice")
		r.Header.Set("X-SLURM-USER-TOKEN", "tok")
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	job, err := c.SlurmV0038GetJobWithResponse(ctx, "21")
	if err != nil {
		t.Fatal(err)
	}
	if job.JSON200 == nil || *(*job.JSON200.Jobs)[0].ExitCode>>8 != 3 {
		t.Fatalf("get job: %s", job.Body)
	}

	sub, err := c.SlurmV0038SubmitJobWithResponse(ctx, V0038JobSubmission{
		Script: "#!/bin/sh\ntrue\n",
		Job:    &V0038JobProperties{Environment: map[string]string{"A": "b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sub.JSON200 == nil || *sub.JSON200.JobId != 99 {
		t.Fatalf("submit: %d %s", sub.StatusCode(), sub.Body)
	}

	sig := V0038SignalUSR1
	if _, err := c.SlurmV0038CancelJobWithResponse(ctx, "21", &SlurmV0038CancelJobParams{Signal: &sig}); err != nil {
		t.Fatal(err)
	}
	since := int64(1795722000)
	if _, err := c.SlurmV0038GetJobsWithResponse(ctx, &SlurmV0038GetJobsParams{UpdateTime: &since}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SlurmV0038PingWithResponse(ctx); err != nil {
		t.Fatal(err)
	}
	spec, err := c.OpenapiV3GetWithResponse(ctx)
	if err != nil || !strings.Contains(string(spec.Body), "3.0.2") {
		t.Fatalf("openapi: %v %s", err, spec.Body)
	}

	want := []string{
		"GET /slurm/v0.0.38/job/21",
		"POST /slurm/v0.0.38/job/submit",
		"DELETE /slurm/v0.0.38/job/21?signal=USR1",
		"GET /slurm/v0.0.38/jobs?update_time=1795722000",
		"GET /slurm/v0.0.38/ping",
		"GET /openapi/v3",
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("requests:\n got %q\nwant %q", seen, want)
	}
}
