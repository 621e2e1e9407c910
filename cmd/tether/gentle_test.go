package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-hpc/tether/schema"
)

// statusRPCs reads slurmctld's count of the job-status RPCs (squeue's
// REQUEST_JOB_INFO, scontrol's REQUEST_JOB_INFO_SINGLE, jobs/state's
// REQUEST_JOB_STATE) from sdiag.
func statusRPCs(t *testing.T, c *testCluster) int {
	t.Helper()
	out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sdiag")).Output()
	if err != nil {
		t.Fatalf("sdiag: %v", err)
	}
	re := regexp.MustCompile(`(?m)^\s*(REQUEST_JOB_INFO|REQUEST_JOB_INFO_SINGLE|REQUEST_JOB_STATE)\s+\(\s*\d+\)\s+count:(\d+)`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		k, _ := strconv.Atoi(m[2])
		n += k
	}
	return n
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestGentlePoll is issue 17's measurement at a smaller scale, on each
// Slurm cluster with the sbatch backend and the default query budget: 20
// jobs of staggered length (3 to 60 s), 20 concurrent `tether wait`. The
// status RPCs slurmctld counts (sdiag, the cluster held exclusively so
// that they are all ours) stay within the budget of 10 in any minute, and each
// wait returns soon after its job's exit file was written: a clean exit
// is decided from the file, not from the next allowed query.
func TestGentlePoll(t *testing.T) {
	t.Parallel()
	const jobs = 20
	for _, c := range needClusters(t) {
		t.Run(c.key, func(t *testing.T) {
			t.Parallel()
			release, err := c.hold(true)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			bin := sharedTether(t, c.get("TESTCLUSTER_SHARED_DIR"))
			specs := map[string]string{}
			for i := range jobs {
				specs[fmt.Sprintf("job%02d.toml", i)] = fmt.Sprintf("name='gentle%02d'\ncommand=['sleep','%d']\n[resources]\nwalltime='2m'\n", i, 3+3*i)
			}
			dir := workDir(t, c, specs)
			// the cluster's site without the tests' own budget: the default
			base, err := os.ReadFile(c.site["sbatch"])
			if err != nil {
				t.Fatal(err)
			}
			site := filepath.Join(dir, "site.toml")
			body := regexp.MustCompile(`(?m)^max_queries_per_minute = .*$`).ReplaceAllString(string(base), "")
			if err := os.WriteFile(site, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			before, t0 := statusRPCs(t, c), time.Now()
			runs := make([]string, jobs)
			for i := range jobs {
				o, code, err := tetherCLI(ctx, bin, dir, site, io.Discard, "submit", fmt.Sprintf("job%02d.toml", i))
				if err != nil || code != 0 {
					t.Fatalf("submit %d: exit %d, %v %v", i, code, o, err)
				}
				runs[i] = o["run_id"].(string)
			}
			returned, started := make([]time.Time, jobs), make([]time.Time, jobs)
			outcomes := make([]map[string]any, jobs)
			var wg sync.WaitGroup
			for i, run := range runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					started[i] = time.Now()
					o, _, err := tetherCLI(ctx, bin, dir, site, io.Discard, "wait", run)
					returned[i] = time.Now()
					if err != nil {
						t.Errorf("wait %s: %v", run, err) // Errorf: not the test's goroutine
						return
					}
					outcomes[i] = o
				}()
			}
			wg.Wait()
			after, elapsed := statusRPCs(t, c), time.Since(t0)
			if t.Failed() {
				t.FailNow()
			}

			var lags []time.Duration
			for i, run := range runs {
				if outcomes[i]["outcome"] != "succeeded" {
					t.Errorf("%s: %v", run, outcomes[i])
					continue
				}
				raw, err := os.ReadFile(filepath.Join(dir, "state", "runs", run, "attempts", "1", "exitcode"))
				if err != nil {
					t.Fatal(err)
				}
				var ex schema.ExitFile
				if err := json.Unmarshal(raw, &ex); err != nil {
					t.Fatal(err)
				}
				// the first, shortest jobs may end while the others are
				// still being submitted, before their wait starts
				lags = append(lags, returned[i].Sub(later(ex.Time, started[i])))
			}
			slices.Sort(lags)
			rpcs := after - before
			perMin := float64(rpcs) / elapsed.Minutes()
			// the budget caps the queries of any 60 s: over the whole
			// measurement, at most the budget for each minute it began
			allowed := schema.DefaultMaxQueriesPerMinute * int(math.Ceil(elapsed.Minutes()))
			t.Logf("%s: %d jobs in %s: %d status RPCs (%.1f a minute, %d allowed); exit file (or the wait's start, if later) -> wait returned: min %s, median %s, max %s",
				c.key, jobs, elapsed.Round(100*time.Millisecond), rpcs, perMin, allowed,
				lags[0].Round(time.Millisecond), lags[len(lags)/2].Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
			if rpcs > allowed {
				t.Errorf("%d status RPCs in %s, over the budget's %d", rpcs, elapsed, allowed)
			}
			// 200 ms stat ticks; 20 waits and their process start on 2
			// loaded cores: 3 s is a bound well below a query interval's 6 s
			if max := lags[len(lags)-1]; max > 3*time.Second {
				t.Errorf("a wait returned %s after its exit file", max)
			}
		})
	}
}

// TestRateLimitedWaits: on Slurm 24.11 with slurmctld's RPC rate limiting
// on (the test cluster's rl_enable, a bucket of 3 refilled by one every
// 10 s; root is exempt), 50 concurrent `tether wait` whose queries go as
// another user (a REST token for nobody) are throttled: slurmctld answers
// them late rather than with an error (a throttled client sleeps 1, 2,
// 3 ... s between tries until a token is free). The bucket is per user;
// a chatty client of the same user (another tool polling in a loop) keeps
// it empty, so that throttling is certain, not a matter of how the waits'
// few queries fall. No wait fails.
func TestRateLimitedWaits(t *testing.T) {
	t.Parallel()
	const jobs = 50
	for _, c := range needClusters(t) {
		if c.get("TESTCLUSTER_SLURM_VERSION") == "22.05" {
			continue // rl_enable came with Slurm 23.02
		}
		t.Run(c.key, func(t *testing.T) {
			t.Parallel()
			c.holdShared(t)
			bin := sharedTether(t, c.get("TESTCLUSTER_SHARED_DIR"))
			specs := map[string]string{"job.toml": "name='throttled'\ncommand=['sleep','8']\n[resources]\nwalltime='2m'\n"}
			dir := workDir(t, c, specs)
			out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scontrol"), "token", "username=nobody", "lifespan=900").Output()
			if err != nil {
				t.Fatalf("scontrol token: %v", err)
			}
			token := filepath.Join(dir, "nobody.jwt")
			if err := os.WriteFile(token, []byte(strings.TrimPrefix(strings.TrimSpace(string(out)), "SLURM_JWT=")), 0o600); err != nil {
				t.Fatal(err)
			}
			// the same site, its queries as nobody: same name, same state dir
			base, err := os.ReadFile(c.site["rest"])
			if err != nil {
				t.Fatal(err)
			}
			body := regexp.MustCompile(`(?m)^user = .*$`).ReplaceAllString(string(base), `user = "nobody"`)
			body = regexp.MustCompile(`(?m)^token_file = .*$`).ReplaceAllString(body, fmt.Sprintf("token_file = %q", token))
			throttled := filepath.Join(dir, "nobody.toml")
			if err := os.WriteFile(throttled, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			runs := make([]string, jobs)
			for i := range jobs {
				o, code, err := tetherCLI(ctx, bin, dir, c.site["rest"], io.Discard, "submit", "job.toml")
				if err != nil || code != 0 {
					t.Fatalf("submit %d: exit %d, %v %v", i, code, o, err)
				}
				runs[i] = o["run_id"].(string)
			}
			limitedBefore := rateLimitLines(c)
			chatty, stopChatty := context.WithCancel(ctx)
			var chatter sync.WaitGroup
			for range 3 {
				chatter.Add(1)
				go func() {
					defer chatter.Done()
					chatterUntil(chatty, c, strings.TrimPrefix(strings.TrimSpace(string(out)), "SLURM_JWT="))
				}()
			}
			logs := make([]syncBuffer, jobs)
			var wg sync.WaitGroup
			for i, run := range runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					o, code, err := tetherCLI(ctx, bin, dir, throttled, &logs[i], "wait", run)
					if err != nil || code != 0 || o["outcome"] != "succeeded" {
						t.Errorf("wait %s: exit %d, %v, %v", run, code, o, err) // Errorf: not the test's goroutine
					}
				}()
			}
			wg.Wait()
			stopChatty()
			chatter.Wait()
			var all strings.Builder
			for i := range logs {
				all.WriteString(logs[i].String())
			}
			said := strings.Count(all.String(), "slow to answer")
			t.Logf("%d waits; told to back off %d times; slurmctld log: %d rate-limit lines", jobs, said, rateLimitLines(c)-limitedBefore)
			if rateLimitLines(c) == limitedBefore {
				t.Errorf("slurmctld throttled nobody's RPCs not once: the test did not test throttling")
			}
			// Open (issue 18's notes): with the bucket kept empty, no
			// wait has yet measured an answer of 5 s or more, so whether
			// tether's own queries are throttled is not shown here.
			if said == 0 {
				t.Logf("no wait said it backed off")
			}
		})
	}
}

// chatterUntil lists the cluster's jobs through slurmrestd as the token's
// user, back to back, until ctx ends: the chatty client whose RPCs keep
// that user's rate-limit bucket empty. Errors are ignored (a throttled
// request may be cut short by ctx).
func chatterUntil(ctx context.Context, c *testCluster, token string) {
	url := c.get("TESTCLUSTER_REST_URL") + "/slurm/" + c.get("TESTCLUSTER_REST_API_VERSION") + "/jobs"
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		req.Header.Set("X-SLURM-USER-NAME", "nobody")
		req.Header.Set("X-SLURM-USER-TOKEN", token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// rateLimitLines counts slurmctld's "RPC rate limit exceeded" log lines.
func rateLimitLines(c *testCluster) int {
	b, _ := os.ReadFile(filepath.Join(c.get("TESTCLUSTER_LOG_DIR"), "slurmctld.log"))
	return strings.Count(string(b), "RPC rate limit exceeded")
}
