package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runCLI runs the shared tether binary in dir with a site and its own
// state dir, and returns the outcome JSON and the exit code. It fails the
// test: call it from the test's goroutine only (elsewhere, tetherCLI).
func runCLI(t *testing.T, bin, dir, site string, args ...string) (map[string]any, int, string) {
	t.Helper()
	var stderr strings.Builder
	o, code, err := tetherCLI(context.Background(), bin, dir, site, &stderr, args...)
	if err != nil {
		t.Fatal(err)
	}
	return o, code, stderr.String()
}

// tetherCLI is runCLI returning its failure (no JSON line, tether did not
// run) instead of failing the test, for goroutines; tether's stderr goes
// to stderr.
func tetherCLI(ctx context.Context, bin, dir, site string, stderr io.Writer, args ...string) (map[string]any, int, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = tetherEnv("TETHER_SITE="+site, "TETHER_STATE_DIR="+filepath.Join(dir, "state"),
		"PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	var errs strings.Builder
	cmd.Stderr = io.MultiWriter(stderr, &errs)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return nil, 0, fmt.Errorf("tether %v: %w", args, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var o map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil {
		return nil, code, fmt.Errorf("tether %v: no JSON line: %q\n%s", args, out, errs.String())
	}
	return o, code, nil
}

// syncBuffer is a bytes.Buffer that a running command may write while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// workDir makes a directory under the cluster's shared dir with files,
// removed when the test ends unless it failed. The shared tests directory
// is made here too: no test may count on another having made it.
func workDir(t *testing.T, c *testCluster, files map[string]string) string {
	t.Helper()
	tests := filepath.Join(c.get("TESTCLUSTER_SHARED_DIR"), "tests")
	if err := os.MkdirAll(tests, 0o777); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(tests, strings.ReplaceAll(t.Name(), "/", "_"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	os.Chmod(dir, 0o755)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var paritySpecs = map[string]string{
	"complete.toml": "name='complete'\ncommand=['bash','-c','echo ok']\n[resources]\nwalltime='2m'\n",
	"exit3.toml":    "name='exit3'\ncommand=['bash','-c','exit 3']\n[resources]\nwalltime='2m'\n",
	"killed.toml":   "name='killed'\ncommand=['bash','-c','kill -9 $$']\n[resources]\nwalltime='2m'\n",
	"notfound.toml": "name='notfound'\ncommand=['/no/such/program']\n[resources]\nwalltime='2m'\n",
	"partial.toml":  "name='partial'\ncommand=['bash','-c','tether report --checkpoint --fraction 0.9; exit 2']\n[proceed]\non_failure='checkpoint'\nmin_fraction=0.5\n[resources]\nwalltime='2m'\n",
}

// TestParitySbatchREST runs the same specs through sbatch and slurmrest
// on each cluster and compares the outcomes.
func TestParitySbatchREST(t *testing.T) {
	t.Parallel()
	for _, c := range needClusters(t) {
		t.Run(c.key, func(t *testing.T) {
			t.Parallel()
			c.holdShared(t)
			bin := sharedTether(t, c.get("TESTCLUSTER_SHARED_DIR"))
			type result struct {
				o    map[string]any
				code int
			}
			results := map[string]map[string]result{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, kind := range []string{"sbatch", "rest"} {
				dir := workDir(t, c, paritySpecs)
				for spec := range paritySpecs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// not runCLI: t.Fatal belongs to the test's goroutine
						o, code, err := tetherCLI(context.Background(), bin, dir, c.site[kind], io.Discard, "run", spec)
						if err != nil {
							t.Errorf("%s with %s: %v", spec, kind, err)
							return
						}
						mu.Lock()
						if results[spec] == nil {
							results[spec] = map[string]result{}
						}
						results[spec][kind] = result{o, code}
						mu.Unlock()
					}()
				}
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow() // a run is missing: nothing to compare it with
			}
			for spec, r := range results {
				s, rr := r["sbatch"], r["rest"]
				for _, k := range []string{"outcome", "proceed", "exit_code", "signal", "scheduler_state", "fraction", "reason", "cause"} {
					a, b := fmt.Sprint(s.o[k]), fmt.Sprint(rr.o[k])
					if early(s.o) || early(rr.o) {
						// a clean exit decided from the exit file before the
						// scheduler's report: when the scheduler answered
						// last is timing, not the backend
						if k == "scheduler_state" {
							continue
						}
						if k == "reason" {
							a, b = strings.Split(a, " (")[0], strings.Split(b, " (")[0]
						}
					}
					if a != b {
						t.Errorf("%s: %s differs: sbatch %v, slurmrest %v", spec, k, s.o[k], rr.o[k])
					}
				}
				if s.code != rr.code {
					t.Errorf("%s: exit %d vs %d", spec, s.code, rr.code)
				}
				t.Logf("%s: %v %v exit %d", spec, s.o["outcome"], s.o["reason"], s.code)
			}
		})
	}
}

// early: the outcome was decided from the wrapper's exit file before the
// scheduler reported the job's end (the outcome names no scheduler state).
func early(o map[string]any) bool {
	st, _ := o["scheduler_state"].(string)
	return st == "" && o["cause"] == "completed"
}

// faultProxy sits between tether and slurmrestd and injects 502s,
// connection resets and slow answers; in outage mode it fails everything.
type faultProxy struct {
	srv      *httptest.Server
	n        atomic.Int64
	faults   atomic.Int64
	outage   atomic.Bool
	inOutage atomic.Int64
	// loseSubmits: this many job submits reach slurmrestd, but their
	// answers are replaced by a 504 (the job exists; tether does not know)
	loseSubmits atomic.Int64
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := p.n.Add(1)
		switch {
		case p.outage.Load():
			p.inOutage.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/job/submit") && p.loseSubmits.Add(-1) >= 0:
			p.faults.Add(1)
			rp.ServeHTTP(httptest.NewRecorder(), r)
			w.WriteHeader(http.StatusGatewayTimeout)
		case n%4 == 1:
			p.faults.Add(1)
			w.WriteHeader(http.StatusBadGateway)
		case n%4 == 2:
			p.faults.Add(1)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		case n%9 == 3:
			time.Sleep(2 * time.Second) // a slow answer: injected latency, not a wait for anything
			rp.ServeHTTP(w, r)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestRESTFaultProxy: with 502s, resets and slow answers between tether
// and slurmrestd, outcomes stay correct; during a total outage tether keeps
// waiting and its requests stay bounded.
func TestRESTFaultProxy(t *testing.T) {
	t.Parallel()
	for _, c := range needClusters(t) {
		t.Run(c.key, func(t *testing.T) {
			t.Parallel()
			c.holdShared(t)
			bin := sharedTether(t, c.get("TESTCLUSTER_SHARED_DIR"))
			p := newFaultProxy(t, c.get("TESTCLUSTER_REST_URL"))
			base, _ := os.ReadFile(c.site["rest"])
			var lines []string
			for _, l := range strings.Split(string(base), "\n") {
				if strings.HasPrefix(l, "url = ") {
					l = `url = "` + p.srv.URL + `"`
				}
				lines = append(lines, l)
			}
			dir := workDir(t, c, map[string]string{
				"site.toml":   strings.Join(lines, "\n"),
				"direct.toml": string(base),
				"exit3.toml":  paritySpecs["exit3.toml"],
				"ok.toml":     "name='ok'\ncommand=['bash','-c','sleep 12']\n[resources]\nwalltime='2m'\n",
			})
			site := filepath.Join(dir, "site.toml")
			p.loseSubmits.Store(1)
			o, code, _ := runCLI(t, bin, dir, site, "run", "exit3.toml")
			if code != 1 || o["exit_code"] != 3.0 || o["outcome"] != "failed" {
				t.Errorf("exit3 through faults: exit %d, %v", code, o)
			}
			// The submit's answer was lost after Slurm took the job: there is
			// exactly one job with the attempt's tag, and it is the run's.
			out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "squeue"), "-h", "-t", "all", "-o", "%i %k").Output()
			if err != nil {
				t.Fatal(err)
			}
			var tagged []string
			for _, l := range strings.Split(string(out), "\n") {
				if id, tag, ok := strings.Cut(strings.TrimSpace(l), " "); ok && tag == fmt.Sprintf("tether:%s:1", o["run_id"]) {
					tagged = append(tagged, id)
				}
			}
			if len(tagged) != 1 || tagged[0] != o["job_id"] {
				t.Errorf("jobs tagged for run %v: %v, want exactly its job %v", o["run_id"], tagged, o["job_id"])
			}
			if p.faults.Load() == 0 {
				t.Fatal("no faults were injected")
			}
			// a total outage while a run waits
			// submitted straight to slurmrestd: a submit answer the proxy
			// loses would hold the job back until recover_after (tested
			// above), and this part is about waiting through an outage
			o, _, _ = runCLI(t, bin, dir, filepath.Join(dir, "direct.toml"), "submit", "ok.toml")
			id := o["run_id"].(string)
			type waited struct {
				o    map[string]any
				code int
				err  error
			}
			done := make(chan waited, 1)
			var wstderr syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel() // a waiter left behind by a failure is killed
			asked := p.n.Load()
			go func() {
				// not runCLI: t.Fatal belongs to the test's goroutine
				o, code, err := tetherCLI(ctx, bin, dir, site, &wstderr, "wait", id)
				done <- waited{o, code, err}
			}()
			// The outage begins once the waiter asks slurmrestd, and lasts
			// at least 15 s, until the waiter has warned about it and the
			// job has ended (its exit file) while slurmrestd is unreachable.
			if !waitFor(time.Minute, func() bool { return p.n.Load() > asked }) {
				t.Fatalf("tether wait sent no request within a minute\n%s", wstderr.String())
			}
			p.outage.Store(true)
			began := time.Now()
			const minOutage = 15 * time.Second
			exitFile := filepath.Join(dir, "state", "runs", id, "attempts", "1", "exitcode")
			ended := waitFor(minOutage+2*time.Minute, func() bool {
				_, err := os.Stat(exitFile)
				return time.Since(began) >= minOutage && err == nil &&
					strings.Contains(wstderr.String(), "; still waiting, nothing is decided on this")
			})
			outage := time.Since(began)
			p.outage.Store(false)
			if !ended {
				t.Errorf("after %s of outage: the warning or the job's exit file is missing", outage.Round(time.Second))
			}
			var w waited
			select {
			case w = <-done:
			case <-time.After(3 * time.Minute):
				t.Fatalf("tether wait still waiting 3 minutes after the outage\n%s", wstderr.String())
			}
			if w.err != nil {
				t.Fatal(w.err)
			}
			if w.code != 0 || w.o["outcome"] != "succeeded" {
				t.Errorf("after the outage: exit %d %v\n%s", w.code, w.o, wstderr.String())
			}
			if !strings.Contains(wstderr.String(), "; still waiting, nothing is decided on this") {
				t.Errorf("no warning during the outage:\n%s", wstderr.String())
			}
			// 15 s of outage, polls every 1-5 s with backoff, 1+4 tries
			// each: at most 40 requests, as many more for each further 15 s
			// (the outage lasts longer only on a slow machine)
			limit := 40 + int64(40*(outage-minOutage).Seconds()/minOutage.Seconds())
			if n := p.inOutage.Load(); n > limit {
				t.Errorf("%d requests during a %s outage (at most %d): retries are not bounded", n, outage.Round(time.Second), limit)
			}
			t.Logf("requests %d, faults injected %d, requests during the %s outage %d", p.n.Load(), p.faults.Load(), outage.Round(100*time.Millisecond), p.inOutage.Load())
		})
	}
}

// workDir needs no other test to have run first: on a fresh machine the
// shared tests directory does not exist yet. Its directory goes with a
// passing test.
func TestWorkDirOnFreshSharedDir(t *testing.T) {
	t.Parallel()
	c := &testCluster{env: map[string]string{"TESTCLUSTER_SHARED_DIR": filepath.Join(t.TempDir(), "shared")}}
	var dir string
	t.Run("make", func(t *testing.T) {
		dir = workDir(t, c, map[string]string{"a.toml": "x"})
		if b, err := os.ReadFile(filepath.Join(dir, "a.toml")); err != nil || string(b) != "x" {
			t.Errorf("a.toml: %q %v", b, err)
		}
	})
	if _, err := os.Stat(dir); dir == "" || !os.IsNotExist(err) {
		t.Errorf("work dir %q left behind by a passing test: %v", dir, err)
	}
}
