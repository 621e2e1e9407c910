package slurmrest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

const secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.NOT-TO-BE-LOGGED"

func tokenFile(t *testing.T) *FileToken {
	p := filepath.Join(t.TempDir(), "jwt")
	os.WriteFile(p, []byte("SLURM_JWT="+secret+"\n"), 0o600)
	return &FileToken{Path: p}
}

func testBackend(t *testing.T, url string) *Backend {
	b, err := New(Config{URL: url, APIVersion: "v0.0.42", User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	b.t.client.RetryWaitMin, b.t.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	return b
}

func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Fatalf("the token leaked into an error: %v", err)
	}
}

// Retries stay bounded: a server that keeps failing gets RetryMax+1 tries,
// and the caller gets ErrUnavailable, never a false failure of the job.
func TestRetriesBounded(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.Header.Get("X-SLURM-USER-TOKEN") != secret || r.Header.Get("X-SLURM-USER-NAME") != "alice" {
			t.Errorf("auth headers missing")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	_, err := b.Query(context.Background(), []backends.JobID{"1"})
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	noSecret(t, err)
	if got := n.Load(); got != 4 {
		t.Errorf("%d requests, want 4 (1 + 3 retries)", got)
	}
}

// Connection resets are retried the same way.
func TestRetriesOnReset(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jobs":[{"job_id":"7","state":["RUNNING"]}]}`))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	got, err := b.Query(context.Background(), []backends.JobID{"7"})
	if err != nil || got["7"].State != backends.Running {
		t.Fatalf("%v %v", got, err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3", n.Load())
	}
}

// A definite Slurm error in a 500 (22.05 style) is not retried, and a
// submit with it is a rejection (exit 2).
func TestDefiniteErrorNotRetried(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"errors":[{"error_number":2000,"error":"Invalid partition name specified"}]}`))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "job.sh"), []byte("#!/bin/bash\n"), 0o755)
	_, err := b.Submit(context.Background(), backends.JobRequest{Script: filepath.Join(dir, "job.sh"), Dir: dir})
	if !errors.Is(err, backends.ErrRejected) || !strings.Contains(err.Error(), "Invalid partition name specified") {
		t.Fatalf("want ErrRejected with Slurm's message, got %v", err)
	}
	if n.Load() != 1 {
		t.Errorf("%d requests, want 1", n.Load())
	}
}

// A refused token is an auth error that names where the token came from,
// not the token; the token is re-read once before giving up.
func TestAuthError(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte("Authentication failure"))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	_, err := b.Query(context.Background(), []backends.JobID{"1"})
	if !errors.Is(err, backends.ErrAuth) || !strings.Contains(err.Error(), "token file") || !strings.Contains(err.Error(), "renew the token") {
		t.Fatalf("want a clear ErrAuth, got %v", err)
	}
	noSecret(t, err)
	if n.Load() != 2 {
		t.Errorf("%d requests, want 2 (one with a re-read token)", n.Load())
	}
}

func TestTokenSources(t *testing.T) {
	ft := tokenFile(t)
	tok, err := ft.Token(context.Background())
	if err != nil || tok != secret {
		t.Fatalf("file token: %q %v", tok, err)
	}
	// a new token, with a new mtime however coarse the filesystem's clock
	fi, err := os.Stat(ft.Path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ft.Path, []byte("newtoken\n"), 0o600)
	if err := os.Chtimes(ft.Path, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if tok, _ := ft.Token(context.Background()); tok != "newtoken" {
		t.Errorf("file token not reread: %q", tok)
	}
	t.Setenv("TEST_JWT", "SLURM_JWT=envtoken")
	if tok, _ := (EnvToken{Name: "TEST_JWT"}).Token(context.Background()); tok != "envtoken" {
		t.Errorf("env token %q", tok)
	}
	ct := &CommandToken{Argv: []string{"echo", "SLURM_JWT=cmdtoken"}}
	if tok, _ := ct.Token(context.Background()); tok != "cmdtoken" {
		t.Errorf("command token %q", tok)
	}
	bad := &CommandToken{Argv: []string{"sh", "-c", "echo " + secret + "; exit 1"}}
	_, err = bad.Token(context.Background())
	if err == nil {
		t.Fatal("failing command accepted")
	}
	noSecret(t, err)
	if !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("the error does not say how the command failed: %v", err)
	}
	why := &CommandToken{Argv: []string{"sh", "-c", "echo 'scontrol: error: JWT authentication disabled' >&2; echo " + secret + " >&2; exit 2"}}
	if _, err := why.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("want the exit status: %v", err)
	} else {
		noSecret(t, err) // stderr with a token in it is left out
	}
	why2 := &CommandToken{Argv: []string{"sh", "-c", "echo 'scontrol: error: JWT authentication disabled' >&2; exit 2"}}
	if _, err := why2.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "JWT authentication disabled") {
		t.Errorf("want the command's stderr: %v", err)
	}
	if _, err := (&FileToken{Path: "/nonexistent/jwt"}).Token(context.Background()); err == nil || !strings.Contains(err.Error(), "/nonexistent/jwt") {
		t.Errorf("missing file: %v", err)
	}
}

// fakeRest is a small slurmrestd v0.0.42: submits create jobs with their
// comment and working directory; lose makes the n-th submit's answer get
// lost after the job was created (504) or before (a reset, nothing
// created), or makes slurmctld refuse to take it ("1800": connect failure,
// nothing created) or lose it inside Slurm ("5004": socket timed out, after
// the job was created). hold, when set, stops every submit before it is
// handled until it is closed; created gets the id of every job created.
// purge moves jobs from the controller to accounting (db).
type fakeRest struct {
	mu       sync.Mutex
	jobs     []map[string]any
	db       []map[string]any
	submits  int
	requests []string
	lose     map[int]string // submit number -> "504" | "reset" | "1800" | "5004"
	posts    atomic.Int64
	hold     chan struct{}
	created  chan int
	noDB     bool // slurmrestd without openapi/slurmdbd
}

func (f *fakeRest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/job/submit") {
		f.posts.Add(1)
		if f.hold != nil {
			<-f.hold
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/job/submit"):
		f.submits++
		switch f.lose[f.submits] {
		case "reset":
			c, _, _ := w.(http.Hijacker).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		case "1800":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"errors":[{"description":"Batch job submission failed","error_number":1800,"error":"Unable to contact slurm controller (connect failure)","source":"slurm_submit_batch_job()"}]}`))
			return
		}
		var body struct {
			Job struct {
				Comment string `json:"comment"`
				Dir     string `json:"current_working_directory"`
			} `json:"job"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		id := 100 + len(f.jobs) + len(f.db)
		f.jobs = append(f.jobs, map[string]any{"job_id": id, "comment": body.Job.Comment, "job_state": []string{"PENDING"}, "current_working_directory": body.Job.Dir})
		if f.created != nil {
			f.created <- id
		}
		switch f.lose[f.submits] {
		case "504":
			w.WriteHeader(http.StatusGatewayTimeout)
			return
		case "5004":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"errors":[{"description":"Batch job submission failed","error_number":5004,"error":"Socket timed out on send/recv operation","source":"slurm_submit_batch_job()"}]}`))
			return
		}
		fmt.Fprintf(w, `{"job_id":%d}`, id)
	case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/jobs/state"):
		var items []map[string]any
		for _, j := range f.jobs {
			items = append(items, map[string]any{"job_id": fmt.Sprint(j["job_id"]), "state": j["job_state"]})
		}
		json.NewEncoder(w).Encode(map[string]any{"jobs": items})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/slurm/") && strings.HasSuffix(r.URL.Path, "/jobs/"):
		json.NewEncoder(w).Encode(map[string]any{"jobs": f.jobs})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/slurmdb/") && !f.noDB:
		var jobs []map[string]any
		for _, j := range f.db {
			// accounting keeps no comment without AccountingStoreFlags=job_comment
			jobs = append(jobs, map[string]any{"job_id": j["job_id"], "comment": map[string]any{"job": ""}, "working_directory": j["current_working_directory"]})
		}
		json.NewEncoder(w).Encode(map[string]any{"jobs": jobs, "errors": []any{}})
	case strings.HasPrefix(r.URL.Path, "/slurmdb/"):
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("Unable find requested URL. Please view /openapi/v3 for API reference."))
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errors":[{"error_number":2017,"error":"Invalid job id specified"}]}`))
	}
}

// purge moves every job from the controller to accounting, as slurmctld
// does MinJobAge after a job ended.
func (f *fakeRest) purge() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.db = append(f.db, f.jobs...)
	f.jobs = nil
}

func (f *fakeRest) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// submitReq is an attempt as the launcher makes it: its tag and its own
// working directory, <state>/runs/<run id>/attempts/<n>.
// losingBackend is a backend on a fake slurmrestd that loses the answers
// to the submits lose numbers (1 = the first), in the way it names.
func losingBackend(t *testing.T, lose map[int]string) (*fakeRest, *Backend) {
	f := &fakeRest{lose: lose}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	b := testBackend(t, srv.URL)
	b.lostSubmitWait = time.Millisecond
	return f, b
}

func submitReq(t *testing.T) backends.JobRequest {
	const run = "run-20261201T120000-abcdef"
	dir := filepath.Join(t.TempDir(), "runs", run, "attempts", "1")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "job.sh"), []byte("#!/bin/bash\n"), 0o755)
	return backends.JobRequest{Name: "t", Script: filepath.Join(dir, "job.sh"), Dir: dir, NTasks: 1, Walltime: time.Minute, Tag: "tether:" + run + ":1"}
}

// A submit whose answer is lost after slurmctld took the job is not sent
// again: the job is found by its tag. Before, go-retryablehttp resent the
// POST and each 504 left one more copy of the job running.
func TestLostSubmitAnswerFindsTheJob(t *testing.T) {
	f, b := losingBackend(t, map[int]string{1: "504"})
	id, err := b.Submit(context.Background(), submitReq(t))
	if err != nil || id != "100" {
		t.Fatalf("Submit = %q, %v; want the job the lost answer created (100)", id, err)
	}
	if f.submits != 1 || len(f.jobs) != 1 {
		t.Errorf("%d submits, %d jobs: want 1 and 1", f.submits, len(f.jobs))
	}
}

// A submit whose connection was reset before an answer is not sent again:
// the request may have reached slurmctld (here it did not). Submit looks
// for the job once and returns ErrUnavailable; the launcher keeps the
// attempt and submits again only after FindByTag has not found it.
// Before, Submit resent it after 1-3 s.
func TestResetSubmitIsNotSentAgain(t *testing.T) {
	f, b := losingBackend(t, map[int]string{1: "reset"})
	req := submitReq(t)
	id, err := b.Submit(context.Background(), req)
	if !errors.Is(err, backends.ErrUnavailable) || id != "" || f.posts.Load() != 1 || len(f.jobs) != 0 {
		t.Fatalf("Submit = %q, %v after %d submits, %d jobs; want ErrUnavailable after 1", id, err, f.posts.Load(), len(f.jobs))
	}
	// what the launcher's Recover does later
	if got, ok, err := b.FindByTag(context.Background(), req.Tag); err != nil || ok {
		t.Fatalf("FindByTag = %q %v %v", got, ok, err)
	}
	if id, err := b.Submit(context.Background(), req); err != nil || id != "100" || f.posts.Load() != 2 {
		t.Fatalf("second Submit = %q, %v after %d submits", id, err, f.posts.Load())
	}
	if got, ok, err := b.FindByTag(context.Background(), req.Tag); err != nil || !ok || got != "100" {
		t.Errorf("FindByTag = %q %v %v", got, ok, err)
	}
	if _, ok, _ := b.FindByTag(context.Background(), "tether:other:1"); ok {
		t.Error("FindByTag found a job for another tag")
	}
}

// Jobs that end in the same poll cost ONE follow-up request for their
// exit codes, not one each.
func TestEndedJobsOneFollowUp(t *testing.T) {
	f := &fakeRest{}
	for i := 0; i < 5; i++ {
		f.jobs = append(f.jobs, map[string]any{"job_id": 100 + i, "job_state": []string{"COMPLETED"},
			"exit_code": map[string]any{"status": []string{"SUCCESS"}, "return_code": map[string]any{"set": true, "infinite": false, "number": i}}})
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	b := testBackend(t, srv.URL)
	ids := []backends.JobID{"100", "101", "102", "103", "104"}
	got, err := b.Query(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got[id].State != backends.Completed || got[id].ExitCode == nil || *got[id].ExitCode != i {
			t.Errorf("job %s: %+v", id, got[id])
		}
	}
	if n := len(f.requests); n != 2 || f.count("GET /slurm/v0.0.42/jobs/?update_time=now-15minutes") != 1 {
		t.Errorf("requests %v: want jobs/state and one jobs?update_time", f.requests)
	}
}

// 22.05 answers a token slurmctld refuses like an outage (5005, -1): the
// error says that the token may be the cause.
func TestRefusedTokenHint22(t *testing.T) {
	b := testBackend(t, "http://127.0.0.1:1")
	err := b.t.answerError("submit job", 500, []byte(`{"errors":[{"error_number":5005,"error":"Zero Bytes were transmitted or received"}]}`), true)
	if !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "refuses the token") {
		t.Errorf("%v", err)
	}
	noSecret(t, err)
}

// Requests counts what goes on the wire, retries included.
func TestRequestsCountsRetries(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	b.Query(context.Background(), []backends.JobID{"1"})
	if b.Requests() != n.Load() || n.Load() != 4 {
		t.Errorf("Requests() = %d, the server saw %d", b.Requests(), n.Load())
	}
}

// A version cached before slurmrestd was upgraded (its paths now answer a
// plain-text 404) is negotiated again instead of failing every call.
func TestStaleVersionIsNegotiatedAgain(t *testing.T) {
	var gone atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/openapi/v3":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"openapi":"3.0.3","paths":{"/slurm/v0.0.42/jobs/state/":{}}}`))
		case strings.HasPrefix(r.URL.Path, "/slurm/v0.0.42/jobs/state"):
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"jobs":[{"job_id":"7","state":["RUNNING"]}]}`))
		default:
			gone.Add(1)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte("Unable find requested URL. Please view /openapi/v3 for API reference."))
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	b, err := New(Config{URL: srv.URL, APIVersion: "auto", User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second, Retries: 1, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// the choice cached a minute ago, before the upgrade
	os.MkdirAll(filepath.Dir(b.cachePath()), 0o755)
	os.WriteFile(b.cachePath(), []byte(fmt.Sprintf(`{"v":1,"url":%q,"version":"v0.0.40","offered":["v0.0.40"],"at":%q}`,
		srv.URL, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))), 0o644)
	got, err := b.Query(context.Background(), []backends.JobID{"7"})
	if err != nil || got["7"].State != backends.Running {
		t.Fatalf("Query = %v, %v", got, err)
	}
	if v, _ := b.Version(context.Background()); v != "v0.0.42" || gone.Load() != 1 {
		t.Errorf("version %s after %d stale requests", v, gone.Load())
	}
	var c versionCache
	if raw, _ := os.ReadFile(b.cachePath()); json.Unmarshal(raw, &c) != nil || c.Version != "v0.0.42" {
		t.Errorf("cache not renewed: %s", raw)
	}
	// an unknown job's JSON 404 is still just an unknown job
	if !unknownJob(404, []byte(`{"errors":[{"error_number":2017}]}`)) || unknownJob(404, []byte("Unable find requested URL")) {
		t.Error("unknownJob")
	}
}
