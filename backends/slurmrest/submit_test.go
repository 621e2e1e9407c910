package slurmrest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/txtar"
	"github.com/tether-hpc/tether/backends"
)

// A slow controller: the submit's answer does not come within the
// timeout, and slurmctld creates the job only after tether has looked for
// it. The submit is not sent again (that would run the attempt twice): the
// caller gets ErrUnavailable and finds the job by its tag later. Before,
// Submit looked after 1 s, did not find the job and sent it again.
func TestSlowControllerSubmitIsNotSentAgain(t *testing.T) {
	f := &fakeRest{hold: make(chan struct{}), created: make(chan int, 4)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	released := false
	release := func() {
		if !released {
			released = true
			close(f.hold)
		}
	}
	defer release() // before srv.Close, which waits for the held handler
	b := testBackend(t, srv.URL)
	b.cfg.Timeout = 300 * time.Millisecond
	b.lostSubmitWait = time.Millisecond
	req := submitReq(t)
	id, err := b.Submit(context.Background(), req)
	if !errors.Is(err, backends.ErrUnavailable) || id != "" {
		t.Fatalf("Submit = %q, %v; want ErrUnavailable", id, err)
	}
	if !strings.Contains(err.Error(), "not sent again") || !strings.Contains(err.Error(), req.Tag) {
		t.Errorf("the error does not say what happened: %v", err)
	}
	release()
	var created int
	select {
	case created = <-f.created:
	case <-time.After(10 * time.Second):
		t.Fatal("the held submit never created its job")
	}
	if n := f.posts.Load(); n != 1 {
		t.Fatalf("%d submits reached slurmrestd, want 1", n)
	}
	got, ok, err := b.FindByTag(context.Background(), req.Tag)
	if err != nil || !ok || got != backends.JobID(fmt.Sprint(created)) {
		t.Errorf("FindByTag = %q %v %v, want %d", got, ok, err, created)
	}
}

// A submit slurmctld certainly did not take (slurmrestd could not connect
// to it: error 1800) is sent again; one it may have taken (socket timed
// out inside Slurm: 5004) is not.
func TestSubmitSentAgainOnlyWhenCertain(t *testing.T) {
	f, b := losingBackend(t, map[int]string{1: "1800"})
	if id, err := b.Submit(context.Background(), submitReq(t)); err != nil || id != "100" || f.posts.Load() != 2 {
		t.Errorf("after 1800: Submit = %q, %v after %d submits; want the second one's job", id, err, f.posts.Load())
	}

	f2 := &fakeRest{lose: map[int]string{1: "5004"}}
	srv2 := httptest.NewServer(f2)
	defer srv2.Close()
	b2 := testBackend(t, srv2.URL)
	b2.lostSubmitWait = time.Millisecond
	f2.mu.Lock()
	f2.noDB = true
	f2.mu.Unlock()
	req := submitReq(t)
	req.Tag = "" // the job cannot be found by a tag: no lookup either
	if id, err := b2.Submit(context.Background(), req); !errors.Is(err, backends.ErrUnavailable) || id != "" || f2.posts.Load() != 1 {
		t.Errorf("after 5004: Submit = %q, %v after %d submits; want ErrUnavailable after 1", id, err, f2.posts.Load())
	}
	// with a tag, the job the lost answer created is found
	f2.lose[2] = "5004"
	if id, err := b2.Submit(context.Background(), submitReq(t)); err != nil || id != "101" || f2.posts.Load() != 2 {
		t.Errorf("after 5004 with a tag: Submit = %q, %v after %d submits", id, err, f2.posts.Load())
	}
	// slurmctld keeps refusing to take it: bounded, then ErrUnavailable
	f3 := &fakeRest{lose: map[int]string{1: "1800", 2: "1800", 3: "1800", 4: "1800", 5: "1800"}}
	srv3 := httptest.NewServer(f3)
	defer srv3.Close()
	b3 := testBackend(t, srv3.URL)
	b3.lostSubmitWait = time.Millisecond
	if _, err := b3.Submit(context.Background(), submitReq(t)); !errors.Is(err, backends.ErrUnavailable) || f3.posts.Load() != 4 {
		t.Errorf("1800 every time: %v after %d submits, want ErrUnavailable after 4", err, f3.posts.Load())
	}
}

// restCase is one answer capture-submit-errors.sh recorded.
type restCase struct {
	name   string
	status int
	body   []byte
}

func restErrors(t *testing.T, version string) []restCase {
	t.Helper()
	ar, err := txtar.ParseFile("testdata/submit-errors-" + version + ".txtar")
	if err != nil {
		t.Fatal(err)
	}
	var out []restCase
	for _, f := range ar.Files {
		var c restCase
		line, body, _ := bytes.Cut(f.Data, []byte("\n"))
		if _, err := fmt.Sscanf(string(line), "HTTP %d", &c.status); err != nil {
			t.Fatalf("%s: %q", f.Name, line)
		}
		c.name, c.body = f.Name, body
		out = append(out, c)
	}
	return out
}

// refusal words per captured case; "" means transient (ErrUnavailable)
var restWant = map[string]string{
	"partition":   "Invalid partition name specified",
	"timelimit":   "Requested time limit is invalid",
	"ntasks":      "More processors requested than permitted",
	"feature":     "Invalid feature specification",
	"nodes":       "Node count specification invalid",
	"reservation": "Requested reservation is invalid",
	"memory":      "Requested node configuration is not available",
	// 22.05: "environment must be set" (2127) and 9001; 24.11: 2019, an
	// I/O error of slurmctld's, which may pass (tether always sends one)
	"noenv/v0.0.38": "environment must be set",
	"noenv/v0.0.42": "",
	// 22.05: 9202 parse failure; 24.11: HTTP 200, a warning and no job id
	"badtype/v0.0.38": "Unable to read integer value",
	"badtype/v0.0.42": "",
}

// What slurmrestd answers that the clusters cannot be made to say on
// demand.
var restLiteral = []struct {
	name    string
	status  int
	body    string
	refusal string // "" transient, "auth" ErrAuth
}{
	{"token refused 24.11", 511, `{"errors":[{"error_number":1007,"error":"Protocol authentication error"}]}`, "auth"},
	{"credential", 500, `{"errors":[{"error_number":6000,"error":"Invalid authentication credential"}]}`, "auth"},
	{"socket timeout", 500, `{"errors":[{"error_number":5004,"error":"Socket timed out on send/recv operation"}]}`, ""},
	{"zero bytes 22.05", 500, `{"errors":[{"error_code":5005,"error":"Zero Bytes were transmitted or received"}]}`, ""},
	{"receive failure", 500, `{"errors":[{"error_number":1802,"error":"Unable to contact slurm controller (receive failure)"}]}`, ""},
	{"transport", 500, `{"errors":[{"error_number":107,"error":"Transport endpoint is not connected"}]}`, ""},
	{"database", 500, `{"errors":[{"error_number":7000,"error":"Unable to connect to database"}]}`, ""},
	{"unspecified", 500, `{"errors":[{"error_number":-1,"error":"Unspecified error"}]}`, ""},
	{"unknown number", 500, `{"errors":[{"error_number":4242,"error":"Something new"}]}`, ""},
	{"partition down", 500, `{"errors":[{"error_number":2101,"error":"Partition in DOWN state"}]}`, ""},
	{"submit limit", 500, `{"errors":[{"description":"QOSMaxSubmitJobPerUserLimit","error_number":2050,"error":"Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"}]}`, ""},
	{"size limit", 500, `{"errors":[{"description":"QOSMaxWallDurationPerJobLimit","error_number":2050,"error":"Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"}]}`, "Job violates accounting/QOS policy"},
	{"account", 500, `{"errors":[{"error_number":2045,"error":"Invalid account or account/partition combination specified"}]}`, "Invalid account"},
	{"qos", 500, `{"errors":[{"error_number":2066,"error":"Invalid qos specification"}]}`, "Invalid qos specification"},
	{"gres", 500, `{"errors":[{"error_number":2072,"error":"Invalid generic resource (gres) specification"}]}`, "Invalid generic resource"},
	{"proxy 502", 502, `<html>bad gateway</html>`, ""},
	{"bare 400", 400, ``, ""},
}

// Only definite Slurm refusals of a submit are ErrRejected; every other
// answer, known or not, is ErrUnavailable (or ErrAuth). Before, every
// Slurm error outside 1000-1999 and 5000-5999 was a refusal.
func TestSubmitErrorClassification(t *testing.T) {
	type tc struct {
		name    string
		status  int
		body    []byte
		refusal string
	}
	var cases []tc
	for _, v := range []string{"v0.0.38", "v0.0.42"} {
		for _, c := range restErrors(t, v) {
			want, ok := restWant[c.name+"/"+v]
			if !ok {
				want, ok = restWant[c.name]
			}
			if !ok {
				t.Errorf("%s: captured case %s has no expectation", v, c.name)
				continue
			}
			cases = append(cases, tc{v + "/" + c.name, c.status, c.body, want})
		}
	}
	for _, c := range restLiteral {
		cases = append(cases, tc{c.name, c.status, []byte(c.body), c.refusal})
	}
	for _, c := range cases {
		var posts int
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if r.Method == http.MethodPost {
				mu.Lock()
				posts++
				mu.Unlock()
				w.WriteHeader(c.status)
				w.Write(c.body)
				return
			}
			w.Write([]byte(`{"jobs":[]}`)) // the lookup after a lost answer
		}))
		b := testBackend(t, srv.URL)
		b.lostSubmitWait = time.Millisecond
		_, err := b.Submit(context.Background(), submitReq(t))
		srv.Close()
		switch {
		case c.refusal == "auth":
			if !errors.Is(err, backends.ErrAuth) {
				t.Errorf("%s: want ErrAuth, got %v", c.name, err)
			}
		case c.refusal == "":
			if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrRejected) {
				t.Errorf("%s: want ErrUnavailable, got %v", c.name, err)
			}
		default:
			if !errors.Is(err, backends.ErrRejected) || errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), c.refusal) {
				t.Errorf("%s: want ErrRejected with %q, got %v", c.name, c.refusal, err)
			}
		}
		noSecret(t, err)
		// a refused token is read again and sent once more (slurmctld
		// refused the request, so it created nothing)
		if want := map[bool]int{true: 2, false: 1}[isAuthStatus(c.status)]; posts != want {
			t.Errorf("%s: %d submits, want %d", c.name, posts, want)
		}
	}
}

// Slurm 22.05's API (v0.0.38) cannot exclude nodes: a retry with
// retry.exclude_failed_nodes is submitted without the exclusion, with one
// warning, instead of being refused (which failed every NODE_FAIL retry).
// v0.0.40+ sends the exclusion.
func TestExcludeOnV0038(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		bodies = append(bodies, body)
		n := len(bodies)
		mu.Unlock()
		fmt.Fprintf(w, `{"job_id":%d}`, 40+n)
	}))
	defer srv.Close()
	var logged bytes.Buffer
	for _, version := range []string{"v0.0.38", "v0.0.42"} {
		logged.Reset()
		b, err := New(Config{URL: srv.URL, APIVersion: version, User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second,
			Log: slog.New(slog.NewTextHandler(&logged, nil))})
		if err != nil {
			t.Fatal(err)
		}
		req := submitReq(t)
		req.Exclude = []string{"node07", "node09"}
		for i := 0; i < 2; i++ {
			if _, err := b.Submit(context.Background(), req); err != nil {
				t.Fatalf("%s: Submit with Exclude: %v", version, err)
			}
		}
		mu.Lock()
		last := bodies[len(bodies)-1]
		mu.Unlock()
		job, _ := last["job"].(map[string]any)
		warnings := strings.Count(logged.String(), "cannot exclude nodes")
		switch version {
		case "v0.0.38":
			if _, ok := job["excluded_nodes"]; ok {
				t.Errorf("v0.0.38 body has excluded_nodes: %v", job)
			}
			if warnings != 1 || !strings.Contains(logged.String(), "node07,node09") {
				t.Errorf("want one warning naming the nodes, log:\n%s", logged.String())
			}
		default:
			if ex, _ := json.Marshal(job["excluded_nodes"]); string(ex) != `["node07","node09"]` {
				t.Errorf("%s: excluded_nodes %s", version, ex)
			}
			if warnings != 0 {
				t.Errorf("%s warns: %s", version, logged.String())
			}
		}
	}
}

// Cancel is idempotent (a job Slurm does not know or that has ended needs
// no cancel) on every API version, and a cancel that fails because slurmctld
// or slurmrestd cannot be reached wraps ErrUnavailable, so that the engine
// issues it again.
func TestCancelAnswers(t *testing.T) {
	notFound42 := capture(t, "v0042", "2411-v0.0.42-cancel-notfound.txt")
	notFound38 := capture(t, "v0038", "2205-cancel-notfound.txt")
	perJob := func(code int, text string) string {
		return fmt.Sprintf(`{"status":[{"error":{"string":%q,"code":%d,"message":%q},"step_id":"7","job_id":{"set":true,"infinite":false,"number":7}}],"errors":[],"warnings":[]}`, text, code, text)
	}
	cases := []struct {
		name, version string
		status        int
		body          string
		want          string // "" nil, "unavailable", "error" (any other error)
	}{
		{"captured unknown job", "v0.0.42", 200, string(notFound42[indexJSON(notFound42):]), ""},
		{"captured unknown job", "v0.0.38", 500, string(notFound38[indexJSON(notFound38):]), ""},
		{"ended", "v0.0.38", 500, `{"errors":[{"error_number":2021,"error":"Job/step already completing or completed"}]}`, ""},
		{"ended", "v0.0.42", 200, perJob(2021, "Job/step already completing or completed"), ""},
		{"ended", "v0.0.40", 200, `{"errors":[],"warnings":[]}`, ""},
		{"ended", "v0.0.41", 200, `{"errors":[],"warnings":[]}`, ""},
		{"unknown job 404", "v0.0.41", 404, `{"errors":[{"error_number":2017,"error":"Invalid job id specified"}]}`, ""},
		{"unknown job 500", "v0.0.40", 500, `{"errors":[{"error_number":2017,"error":"Invalid job id specified"}]}`, ""},
		{"ctld down", "v0.0.38", 500, `{"errors":[{"error_number":1800,"error":"Unable to contact slurm controller (connect failure)"}]}`, "unavailable"},
		{"ctld down", "v0.0.42", 500, `{"errors":[{"error_number":1800,"error":"Unable to contact slurm controller (connect failure)"}]}`, "unavailable"},
		{"ctld down per job", "v0.0.42", 200, perJob(1800, "Unable to contact slurm controller (connect failure)"), "unavailable"},
		{"timeout per job", "v0.0.42", 200, perJob(5004, "Socket timed out on send/recv operation"), "unavailable"},
		{"unknown per job", "v0.0.42", 200, perJob(4242, "Something new"), "unavailable"},
		{"denied per job", "v0.0.42", 200, perJob(2002, "Access/permission denied"), "error"},
		{"proxy", "v0.0.41", 502, `<html>bad gateway</html>`, "unavailable"},
	}
	for _, c := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodDelete || !strings.HasSuffix(r.URL.Path, "/job/7") {
				t.Errorf("%s %s", r.Method, r.URL.Path)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.status)
			w.Write([]byte(c.body))
		}))
		b, err := New(Config{URL: srv.URL, APIVersion: c.version, User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second, Retries: 1})
		if err != nil {
			t.Fatal(err)
		}
		b.t.client.RetryWaitMin, b.t.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
		err = b.Cancel(context.Background(), "7")
		srv.Close()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %s: %v, want nil", c.version, c.name, err)
		case c.want == "unavailable" && !errors.Is(err, backends.ErrUnavailable):
			t.Errorf("%s %s: %v, want ErrUnavailable", c.version, c.name, err)
		case c.want == "error" && (err == nil || errors.Is(err, backends.ErrUnavailable)):
			t.Errorf("%s %s: %v, want a definite error", c.version, c.name, err)
		}
	}
	// slurmrestd not listening at all
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	b, _ := New(Config{URL: srv.URL, APIVersion: "v0.0.42", Token: tokenFile(t), Timeout: 5 * time.Second, Retries: 1})
	b.t.client.RetryWaitMin, b.t.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	if err := b.Cancel(context.Background(), "7"); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("slurmrestd down: %v", err)
	}
}

// dbFixture reads a captured accounting answer and the run of the
// tether-style jobs in it (backends/sbatch/testdata/capture-find.sh).
func dbFixture(t *testing.T, version string) (body []byte, run string, jobs map[int]int64) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "slurmdb-jobs-"+version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dbJobs
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	jobs = map[int]int64{}
	re := regexp.MustCompile(`/runs/(capture-[^/]+)/attempts/(\d)$`)
	for _, j := range d.Jobs {
		if m := re.FindStringSubmatch(j.WorkingDirectory); m != nil {
			run = m[1]
			jobs[int(m[2][0]-'0')] = j.JobID
		}
	}
	if run == "" || len(jobs) != 2 {
		t.Fatalf("%s: no capture-find run in the fixture (%v)", version, jobs)
	}
	return body, run, jobs
}

// A job the controller has purged is found in accounting, by its working
// directory (slurmdbd keeps no comment without
// AccountingStoreFlags=job_comment), with ONE /slurmdb request since the
// run was created. Before, FindByTag read only the controller's job list
// and the launcher submitted such an attempt a second time.
func TestFindByTagInAccounting(t *testing.T) {
	for _, version := range []string{"v0.0.38", "v0.0.40", "v0.0.41", "v0.0.42"} {
		body, run, jobs := dbFixture(t, version)
		var mu sync.Mutex
		var dbQueries []string
		dbAnswer := func(w http.ResponseWriter) { w.Write(body) }
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			switch {
			case r.URL.Path == dbJobsPath(version):
				mu.Lock()
				dbQueries = append(dbQueries, r.URL.RawQuery)
				answer := dbAnswer
				mu.Unlock()
				answer(w)
			case strings.HasPrefix(r.URL.Path, "/slurm/"+version+"/jobs"):
				w.Write([]byte(`{"jobs":[]}`)) // purged from the controller
			default:
				t.Errorf("%s: unexpected %s", version, r.URL.Path)
				w.WriteHeader(http.StatusTeapot)
			}
		}))
		var logged bytes.Buffer
		b, err := New(Config{URL: srv.URL, APIVersion: version, User: "root", Token: tokenFile(t), Timeout: 10 * time.Second, Retries: 1,
			Log: slog.New(slog.NewTextHandler(&logged, nil))})
		if err != nil {
			t.Fatal(err)
		}
		b.t.client.RetryWaitMin, b.t.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
		for n, want := range jobs {
			got, ok, err := b.FindByTag(context.Background(), fmt.Sprintf("tether:%s:%d", run, n))
			if err != nil || !ok || got != backends.JobID(fmt.Sprint(want)) {
				t.Errorf("%s: attempt %d: FindByTag = %q %v %v, want %d", version, n, got, ok, err, want)
			}
		}
		if _, ok, err := b.FindByTag(context.Background(), "tether:"+run+":3"); ok || err != nil {
			t.Errorf("%s: attempt 3 was never submitted: found=%v err=%v", version, ok, err)
		}
		mu.Lock()
		if len(dbQueries) != 3 {
			t.Errorf("%s: accounting queries %q, want one per FindByTag", version, dbQueries)
		}
		wantQuery := regexp.MustCompile(`^skip_steps=true&start_time=now-\d+hours(&users=root)?$`)
		if len(dbQueries) > 0 && (!wantQuery.MatchString(dbQueries[0]) || (version != "v0.0.38") != strings.Contains(dbQueries[0], "users=root")) {
			t.Errorf("%s: query %s", version, dbQueries[0])
		}
		// slurmdbd down: an error, never "not found"
		dbAnswer = func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"errors":[{"error_number":7000,"error":"Unable to connect to database"}],"jobs":[]}`))
		}
		mu.Unlock()
		if _, ok, err := b.FindByTag(context.Background(), fmt.Sprintf("tether:%s:1", run)); ok || !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("%s: slurmdbd down: found=%v err=%v", version, ok, err)
		}
		// slurmrestd without openapi/slurmdbd: not found, one warning
		mu.Lock()
		dbAnswer = func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte("Unable find requested URL. Please view /openapi/v3 for API reference."))
		}
		mu.Unlock()
		for i := 0; i < 2; i++ {
			if _, ok, err := b.FindByTag(context.Background(), fmt.Sprintf("tether:%s:1", run)); ok || err != nil {
				t.Errorf("%s: no slurmdbd plugin: found=%v err=%v", version, ok, err)
			}
		}
		if n := strings.Count(logged.String(), "does not serve"); n != 1 {
			t.Errorf("%s: %d warnings about the missing plugin:\n%s", version, n, logged.String())
		}
		if v, _ := b.Version(context.Background()); v != version {
			t.Errorf("the plugin's 404 changed the API version to %s", v)
		}
		srv.Close()
	}
	// 22.05 answers an empty window with error 9003 and no jobs
	empty, err := os.ReadFile("testdata/slurmdb-jobs-empty-v0.0.38.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.URL.Path, "/slurmdb/") {
			w.Write(empty)
			return
		}
		w.Write([]byte(`{"jobs":[]}`))
	}))
	defer srv.Close()
	b, _ := New(Config{URL: srv.URL, APIVersion: "v0.0.38", Token: tokenFile(t), Timeout: 10 * time.Second})
	if _, ok, err := b.FindByTag(context.Background(), "tether:x-20261201T000000-abcdef:1"); ok || err != nil {
		t.Errorf("9003: found=%v err=%v", ok, err)
	}
}

// The launcher's recovery after a purge: the attempt whose submit answer
// was lost is found in accounting, not submitted again.
func TestPurgedJobIsNotSubmittedAgain(t *testing.T) {
	f := &fakeRest{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	b := testBackend(t, srv.URL)
	req := submitReq(t)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	f.purge()
	got, ok, err := b.FindByTag(context.Background(), req.Tag)
	if err != nil || !ok || got != id {
		t.Errorf("FindByTag after the purge = %q %v %v, want %s", got, ok, err, id)
	}
}
