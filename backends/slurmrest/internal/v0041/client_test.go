package v0041

// These tests decode responses captured from a real slurmrestd 24.11.5
// (testdata/2411-v0.0.41-*) with the generated types, through the generated
// Parse* functions, so they prove that overlay.yaml matches what the server
// sends. There are no v0.0.41 captures of jobs/state, of a 404 or of a
// submit error; those tests use the v0.0.42 captures
// (testdata/2411-v0.0.42-*), whose envelope (meta, errors, jobs/state shape)
// data_parser v0.0.41 produces the same way.
//
// v0.0.41 is served with inline schemas, so every nested object has its own
// generated type (V0041OpenapiJobInfoResp_Jobs_ExitCode, ..._StartTime, ...)
// and each response has its own meta/errors types.
//
// v0.0.40+ quirks asserted here (see doc.go):
//   - numbers are {"set","infinite","number"} objects: a value is only
//     meaningful when set is true;
//   - job_state is an array (["FAILED"]);
//   - exit_code is {status:[...], return_code:{set,number}, signal:{id,name}}
//     with the real exit code (3, not v0.0.38's 768); a signalled job has
//     return_code.set=false and signal.id.number=15 / name "TERM";
//   - jobs/state answers {"jobs":[{"job_id":"7","state":[...]}]} with a
//     STRING job_id (the spec's schema is wrong; the overlay fixes it);
//   - a successful DELETE answers 200 with empty errors.

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

// setNum returns the number of a no_val struct, and whether it is set (and
// not infinite).
func setNum[N int32 | int64](set, inf *bool, n *N) (int64, bool) {
	if set == nil || !*set || (inf != nil && *inf) || n == nil {
		return 0, false
	}
	return int64(*n), true
}

// checkMeta checks meta.slurm.release and meta.plugin.data_parser; every
// v0.0.41 response has its own meta type, so the fields are passed in.
func checkMeta(t *testing.T, release, dataParser *string, parser string) {
	t.Helper()
	if deref(t, "meta.slurm.release", release) != "24.11.5" {
		t.Errorf("release = %q", *release)
	}
	if deref(t, "meta.plugin.data_parser", dataParser) != "data_parser/"+parser {
		t.Errorf("data_parser = %q", *dataParser)
	}
}

func checkJobInfoMeta(t *testing.T, r *V0041OpenapiJobInfoResp, parser string) {
	t.Helper()
	m := deref(t, "meta", r.Meta)
	checkMeta(t, deref(t, "slurm", m.Slurm).Release, deref(t, "plugin", m.Plugin).DataParser, parser)
	if v := deref(t, "version", m.Slurm.Version); deref(t, "major", v.Major) != "24" {
		t.Errorf("major = %q", *v.Major)
	}
}

type wantJob struct {
	id       int64
	state    string
	status   string // exit_code.status[0]
	exitCode int64  // return_code.number; -1 = not set
	signal   int64  // signal.id.number; -1 = not set
	reason   string
	nodes    string
}

func checkJob(t *testing.T, j V0041OpenapiJobInfoResp_Jobs, w wantJob) {
	t.Helper()
	if got := deref(t, "job_id", j.JobId); got != w.id {
		t.Errorf("job_id = %d, want %d", got, w.id)
	}
	if got := deref(t, "job_state", j.JobState); len(got) == 0 || string(got[0]) != w.state {
		t.Errorf("job_state = %q, want [%q]", got, w.state)
	}
	ec := deref(t, "exit_code", j.ExitCode)
	if got := deref(t, "exit_code.status", ec.Status); len(got) == 0 || string(got[0]) != w.status {
		t.Errorf("exit_code.status = %q, want [%q]", got, w.status)
	}
	rc := deref(t, "return_code", ec.ReturnCode)
	code, ok := setNum(rc.Set, rc.Infinite, rc.Number)
	if !ok {
		code = -1
	}
	if code != w.exitCode {
		t.Errorf("return_code = %d, want %d", code, w.exitCode)
	}
	sig := deref(t, "signal", ec.Signal)
	id := deref(t, "signal.id", sig.Id)
	signal, ok := setNum(id.Set, id.Infinite, id.Number)
	if !ok {
		signal = -1
	}
	if signal != w.signal {
		t.Errorf("signal = %d, want %d", signal, w.signal)
	}
	if w.signal == 15 && deref(t, "signal.name", sig.Name) != "TERM" {
		t.Errorf("signal.name = %q", *sig.Name)
	}
	if got := deref(t, "state_reason", j.StateReason); got != w.reason {
		t.Errorf("state_reason = %q, want %q", got, w.reason)
	}
	if got := deref(t, "nodes", j.Nodes); got != w.nodes {
		t.Errorf("nodes = %q, want %q", got, w.nodes)
	}
	st := deref(t, "submit_time", j.SubmitTime)
	submit, ok := setNum(st.Set, st.Infinite, st.Number)
	if !ok || submit < 1e9 {
		t.Errorf("submit_time = %+v", st)
	}
	start := deref(t, "start_time", j.StartTime)
	if n, ok := setNum(start.Set, start.Infinite, start.Number); !ok || n < submit {
		t.Errorf("start_time = %+v", start)
	}
	end := deref(t, "end_time", j.EndTime)
	if n, ok := setNum(end.Set, end.Infinite, end.Number); !ok || n < submit {
		t.Errorf("end_time = %+v", end)
	}
	tl := deref(t, "time_limit", j.TimeLimit)
	if limit, ok := setNum(tl.Set, tl.Infinite, tl.Number); !ok || limit <= 0 {
		t.Errorf("time_limit = %+v", tl)
	}
}

func TestGetJob(t *testing.T) {
	for file, w := range map[string]wantJob{
		"2411-v0.0.41-get-job-completed.json": {7, "COMPLETED", "SUCCESS", 0, -1, "None", "vm"},
		"2411-v0.0.41-get-job-failed.json":    {11, "FAILED", "ERROR", 3, -1, "NonZeroExitCode", "vm"},
		"2411-v0.0.41-get-job-timeout.json":   {13, "TIMEOUT", "SIGNALED", -1, 15, "TimeLimit", "vm"},
		"2411-v0.0.41-get-job-cancelled.json": {12, "CANCELLED", "SIGNALED", -1, 15, "None", "vm"},
	} {
		t.Run(file, func(t *testing.T) {
			r, err := ParseSlurmV0041GetJobResponse(capture(t, file))
			if err != nil {
				t.Fatal(err)
			}
			if r.JSON200 == nil {
				t.Fatalf("JSON200 nil, status %d", r.StatusCode())
			}
			checkJobInfoMeta(t, r.JSON200, "v0.0.41")
			if len(r.JSON200.Jobs) != 1 {
				t.Fatalf("%d jobs", len(r.JSON200.Jobs))
			}
			checkJob(t, r.JSON200.Jobs[0], w)
		})
	}
}

func TestGetJobNotFound(t *testing.T) {
	r, err := ParseSlurmV0041GetJobResponse(capture(t, "2411-v0.0.42-get-job-notfound.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 404 || r.JSONDefault == nil {
		t.Fatalf("status %d, JSONDefault %v", r.StatusCode(), r.JSONDefault)
	}
	checkJobInfoMeta(t, r.JSONDefault, "v0.0.42")
	errs := deref(t, "errors", r.JSONDefault.Errors)
	if len(errs) != 1 || deref(t, "error_number", errs[0].ErrorNumber) != 2017 {
		t.Fatalf("errors = %+v", errs)
	}
}

func TestJobsState(t *testing.T) {
	r, err := ParseSlurmV0041GetJobsStateResponse(capture(t, "2411-v0.0.42-jobs-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := deref(t, "jobs", r.JSON200.Jobs)
	if len(jobs) != 16 {
		t.Fatalf("%d jobs, want 16", len(jobs))
	}
	got := map[string]string{}
	for _, j := range jobs {
		got[deref(t, "job_id", j.JobId)] = deref(t, "state", j.State)[0]
	}
	for id, state := range map[string]string{"1": "COMPLETED", "2": "FAILED", "3": "CANCELLED", "4": "RUNNING", "16": "RUNNING"} {
		if got[id] != state {
			t.Errorf("job %s: %q, want %q", id, got[id], state)
		}
	}
	if len(deref(t, "errors", r.JSON200.Errors)) != 0 {
		t.Errorf("errors = %+v", *r.JSON200.Errors)
	}
}

func TestSubmit(t *testing.T) {
	r, err := ParseSlurmV0041PostJobSubmitResponse(capture(t, "2411-v0.0.41-submit-response.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.JSON200 == nil {
		t.Fatal("JSON200 nil")
	}
	m := deref(t, "meta", r.JSON200.Meta)
	checkMeta(t, deref(t, "slurm", m.Slurm).Release, deref(t, "plugin", m.Plugin).DataParser, "v0.0.41")
	if got := deref(t, "job_id", r.JSON200.JobId); got != 6 {
		t.Errorf("job_id = %d, want 6", got)
	}
	if got := deref(t, "step_id", r.JSON200.StepId); got != "batch" {
		t.Errorf("step_id = %q", got)
	}
	// v0.0.40/41 repeat the ids in a "result" object.
	res := deref(t, "result", r.JSON200.Result)
	if deref(t, "result.job_id", res.JobId) != 6 || deref(t, "result.error_code", res.ErrorCode) != 0 {
		t.Errorf("result = %+v", res)
	}
}

func TestSubmitErrors(t *testing.T) {
	r, err := ParseSlurmV0041PostJobSubmitResponse(capture(t, "2411-v0.0.42-submit-badpartition.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 500 || r.JSONDefault == nil {
		t.Fatalf("status %d, JSONDefault %v", r.StatusCode(), r.JSONDefault)
	}
	errs := deref(t, "errors", r.JSONDefault.Errors)
	if len(errs) != 1 || deref(t, "error_number", errs[0].ErrorNumber) != 2000 || deref(t, "error", errs[0].Error) == "" {
		t.Errorf("errors = %+v, want error_number 2000", errs)
	}
	if r.JSONDefault.JobId != nil {
		t.Error("job_id set on error")
	}
}

func TestCancel(t *testing.T) {
	r, err := ParseSlurmV0041DeleteJobResponse(capture(t, "2411-v0.0.41-cancel-response.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode() != 200 || r.JSON200 == nil || len(deref(t, "errors", r.JSON200.Errors)) != 0 {
		t.Fatalf("cancel: status %d, %+v", r.StatusCode(), r.JSON200)
	}
	m := deref(t, "meta", r.JSON200.Meta)
	checkMeta(t, deref(t, "slurm", m.Slurm).Release, deref(t, "plugin", m.Plugin).DataParser, "v0.0.41")
}

// The captured request body must survive a decode/encode round trip
// through V0041JobSubmitReq (environment a "K=V" array, time_limit a
// no_val struct).
func TestSubmitBodyRoundTrip(t *testing.T) {
	raw, err := os.ReadFile("testdata/2411-submit-body.json")
	if err != nil {
		t.Fatal(err)
	}
	var body V0041JobSubmitReq
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	job := deref(t, "job", body.Job)
	if env := deref(t, "environment", job.Environment); len(env) != 2 || env[1] != "MYVAR=42" {
		t.Fatalf("environment = %q", env)
	}
	if n := deref(t, "time_limit", job.TimeLimit).Number; n == nil || *n != 5 {
		t.Fatalf("time_limit = %+v", job.TimeLimit)
	}
	out, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal(raw, &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip differs:\n in: %s\nout: %s", raw, out)
	}
}

// End to end through ClientWithResponses: paths, auth header, repeated
// job_id parameters for jobs/state, and response parsing.
func TestClientEndToEnd(t *testing.T) {
	failed, err := os.ReadFile("testdata/2411-v0.0.41-get-job-failed.json")
	if err != nil {
		t.Fatal(err)
	}
	states, err := os.ReadFile("testdata/2411-v0.0.42-jobs-state.json")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-SLURM-USER-TOKEN") != "tok" {
			http.Error(w, "Authentication failure", http.StatusUnauthorized)
			return
		}
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/slurm/v0.0.41/job/11":
			_, _ = w.Write(failed)
		case r.URL.Path == "/slurm/v0.0.41/jobs/state/":
			_, _ = w.Write(states)
		case r.Method == http.MethodPost && r.URL.Path == "/slurm/v0.0.41/job/submit":
			var body V0041JobSubmitReq
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Job == nil || body.Job.Script == nil {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			_, _ = w.Write([]byte(`{"job_id":99,"step_id":"batch","errors":[],"warnings":[]}`))
		case r.URL.Path == "/slurm/v0.0.41/ping/":
			_, _ = w.Write([]byte(`{"pings":[{"hostname":"vm","pinged":"UP","latency":80,"mode":"primary"}],"errors":[],"warnings":[]}`))
		default:
			_, _ = w.Write([]byte(`{"errors":[],"warnings":[]}`))
		}
	}))
	defer srv.Close()

	c, err := NewClientWithResponses(srv.URL, WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-SLURM-USER-TOKEN", "tok")
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	job, err := c.SlurmV0041GetJobWithResponse(ctx, "11", nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.JSON200 == nil || *job.JSON200.Jobs[0].ExitCode.ReturnCode.Number != 3 {
		t.Fatalf("get job: %s", job.Body)
	}

	st, err := c.SlurmV0041GetJobsStateWithResponse(ctx, &SlurmV0041GetJobsStateParams{JobId: &[]string{"11", "12"}})
	if err != nil || st.JSON200 == nil || len(*st.JSON200.Jobs) != 16 {
		t.Fatalf("jobs/state: %v %s", err, st.Body)
	}

	script, env := "#!/bin/sh\ntrue\n", []string{"A=b"}
	sub, err := c.SlurmV0041PostJobSubmitWithResponse(ctx, V0041JobSubmitReq{
		Job: &V0041JobDescMsg{Script: &script, Environment: &env},
	})
	if err != nil || sub.JSON200 == nil || *sub.JSON200.JobId != 99 {
		t.Fatalf("submit: %v %s", err, sub.Body)
	}

	sig := "SIGUSR1"
	if _, err := c.SlurmV0041DeleteJobWithResponse(ctx, "11", &SlurmV0041DeleteJobParams{Signal: &sig}); err != nil {
		t.Fatal(err)
	}
	since := "1795722000"
	if _, err := c.SlurmV0041GetJobsWithResponse(ctx, &SlurmV0041GetJobsParams{UpdateTime: &since}); err != nil {
		t.Fatal(err)
	}
	ping, err := c.SlurmV0041GetPingWithResponse(ctx)
	if err != nil || ping.JSON200 == nil || *ping.JSON200.Pings[0].Pinged != "UP" {
		t.Fatalf("ping: %v %s", err, ping.Body)
	}

	want := []string{
		"GET /slurm/v0.0.41/job/11",
		"GET /slurm/v0.0.41/jobs/state/?job_id=11&job_id=12", // repeated, not CSV
		"POST /slurm/v0.0.41/job/submit",
		"DELETE /slurm/v0.0.41/job/11?signal=SIGUSR1",
		"GET /slurm/v0.0.41/jobs/?update_time=1795722000",
		"GET /slurm/v0.0.41/ping/",
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("requests:\n got %q\nwant %q", seen, want)
	}
}
