package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/registry"
	"github.com/tether-hpc/tether/backends/sbatch"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// sdiagJobInfoRPCs reads slurmctld's count of job-info RPCs from sdiag.
func sdiagJobInfoRPCs(b *testing.B, c *testCluster) int {
	out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sdiag")).Output()
	if err != nil {
		b.Fatalf("sdiag: %v", err)
	}
	total := 0
	re := regexp.MustCompile(`(?m)^\s*(REQUEST_JOB_INFO\S*|REQUEST_PARTITION_INFO|REQUEST_FED_INFO)\s+\(\s*\d+\)\s+count:(\d+)`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[2])
		total += n
	}
	return total
}

// BenchmarkPollCalls200: scheduler calls per poll cycle with 200 live runs
// on the real cluster (target 1). It counts the backend's Slurm commands
// and, from slurmctld's own sdiag statistics, the job-info RPCs.
func BenchmarkPollCalls200(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			be := sbatch.New(c.get("TESTCLUSTER_BIN_DIR"), nil, true)
			store, err := rundir.Open(filepath.Join(c.get("TESTCLUSTER_SHARED_DIR"), "bench", fmt.Sprintf("poll-%d", time.Now().UnixNano())))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var ids []backends.JobID
			for i := 0; i < 200; i++ {
				id, err := be.Submit(ctx, backends.JobRequest{Name: "bench", Dir: store.Dir, Stdout: "/dev/null", Stderr: "/dev/null",
					Script: writeScript(b, store.Dir), Walltime: time.Minute, ExtraArgs: []string{"--hold"}, Tag: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
				store.SetActive(fmt.Sprintf("run-%03d", i), string(id), "")
			}
			defer exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel"), toStrings(ids)...).Run()
			p := &monitor.Poller{Store: store, Backend: be, Now: time.Now}
			calls0, rpc0 := be.Calls(), sdiagJobInfoRPCs(b, c)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pollCycle(b, p, ids)
			}
			b.StopTimer()
			cycles := float64(b.N)
			b.ReportMetric(float64(be.Calls()-calls0)/cycles, "slurm-commands/poll")
			b.ReportMetric(float64(sdiagJobInfoRPCs(b, c)-rpc0)/cycles, "ctld-job-RPCs/poll")
		})
	}
}

// pollCycle is one poll interval of 200 waiters: the first asks for a
// fresh answer, the others take the shared one.
func pollCycle(b *testing.B, p *monitor.Poller, ids []backends.JobID) {
	ctx := context.Background()
	if _, err := p.Status(ctx, ids[:1], 0); err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		snap, err := p.Status(ctx, []backends.JobID{id}, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := snap.Jobs[id]; !ok {
			b.Fatalf("job %s not in the shared answer", id)
		}
	}
}

func writeScript(b *testing.B, dir string) string {
	p := filepath.Join(dir, "job.sh")
	if _, err := os.Stat(p); err != nil {
		if err := os.WriteFile(p, []byte("#!/bin/bash\ntrue\n"), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

func toStrings(ids []backends.JobID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

// BenchmarkSubmitVsSbatch: `tether submit` wall time against raw
// `sbatch --parsable` of the same wrapper on the same cluster, measured
// alternately in one run (target ratio <= 1.3). Jobs are held, then
// cancelled.
func BenchmarkSubmitVsSbatch(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			shared := c.get("TESTCLUSTER_SHARED_DIR")
			bin := sharedTether(b, shared)
			dir := benchDir(b, shared, "submit")
			os.WriteFile(filepath.Join(dir, "t.toml"), []byte("name='bench'\ncommand=['true']\n[resources]\nwalltime='1m'\n[scheduler]\nextra_args=['--hold']\n"), 0o644)
			env := tetherEnv("TETHER_SITE="+c.site["sbatch"], "TETHER_STATE_DIR="+filepath.Join(dir, "state"))
			var tetherT, rawT time.Duration
			var jobs []string
			var script string
			sb := filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sbatch")
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(bin, "submit", "t.toml")
				cmd.Dir, cmd.Env = dir, env
				t0 := time.Now()
				out, err := cmd.Output()
				tetherT += time.Since(t0)
				if err != nil {
					b.Fatalf("tether submit: %v %s", err, out)
				}
				o := lastLineJSON(b, out)
				jobs = append(jobs, o["job_id"].(string))
				script = filepath.Join(o["run_dir"].(string), "attempts", "1", "job.sh")
				raw := exec.Command(sb, "--parsable", "--hold", "--output=/dev/null", "--error=/dev/null", script)
				raw.Dir = dir
				t0 = time.Now()
				rout, err := raw.Output()
				rawT += time.Since(t0)
				if err != nil {
					b.Fatalf("sbatch: %v", err)
				}
				jobs = append(jobs, strings.TrimSpace(strings.Split(string(rout), ";")[0]))
			}
			exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel"), jobs...).Run()
			n := float64(b.N)
			b.ReportMetric(float64(tetherT.Milliseconds())/n, "ms/tether-submit")
			b.ReportMetric(float64(rawT.Milliseconds())/n, "ms/raw-sbatch")
			b.ReportMetric(float64(tetherT)/float64(rawT), "ratio")
		})
	}
}

// BenchmarkJobEndToWait: time from the job's end to `tether wait`
// returning (target <= 2 s plus one poll interval; the test sites poll
// every 1-5 s).
func BenchmarkJobEndToWait(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			shared := c.get("TESTCLUSTER_SHARED_DIR")
			bin := sharedTether(b, shared)
			dir := benchDir(b, shared, "end")
			os.WriteFile(filepath.Join(dir, "t.toml"), []byte("name='end'\ncommand=['bash','-c','sleep 3; date +%s%N > ended']\n[resources]\nwalltime='2m'\n"), 0o644)
			env := tetherEnv("TETHER_SITE="+c.site["sbatch"], "TETHER_STATE_DIR="+filepath.Join(dir, "state"))
			var total, worst time.Duration
			for i := 0; i < b.N; i++ {
				os.Remove(filepath.Join(dir, "ended"))
				cmd := exec.Command(bin, "run", "t.toml")
				cmd.Dir, cmd.Env = dir, env
				if out, err := cmd.Output(); err != nil {
					b.Fatalf("tether run: %v %s", err, out)
				}
				returned := time.Now()
				raw, err := os.ReadFile(filepath.Join(dir, "ended"))
				if err != nil {
					b.Fatal(err)
				}
				ns, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
				d := returned.Sub(time.Unix(0, ns))
				total += d
				worst = max(worst, d)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-end-to-return")
			b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
		})
	}
}

func lastLineJSON(b *testing.B, out []byte) map[string]any {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		b.Fatalf("no JSON line in %q", out)
	}
	return m
}

// BenchmarkSubmit200: 200 submissions through slurmrest and through
// sbatch, side by side in one run, as jobs/second (target: REST at least
// 2x the CLI). Both go through tether's backends in one process, the way a
// gateway or the monitor submits (REST reuses its connection). Jobs are
// held, then cancelled.
func BenchmarkSubmit200(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			shared := c.get("TESTCLUSTER_SHARED_DIR")
			dir := benchDir(b, shared, "submit200")
			script := writeScript(b, dir)
			rates := map[string]float64{}
			for _, kind := range []string{"sbatch", "rest"} {
				site, err := schema.LoadSite(c.site[kind])
				if err != nil {
					b.Fatal(err)
				}
				be, err := registry.Open(site, registry.Options{StateDir: dir})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				if p, ok := be.(backends.Pinger); ok {
					p.Ping(ctx) // negotiate the API version outside the timing
				}
				var ids []string
				var total time.Duration
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					for j := 0; j < 200; j++ {
						id, err := be.Submit(ctx, backends.JobRequest{Name: "bench", Dir: dir, Stdout: "/dev/null", Stderr: "/dev/null",
							Script: script, Walltime: time.Minute, ExtraArgs: []string{"--hold"}, NTasks: 1})
						if err != nil {
							b.Fatalf("%s submit: %v", kind, err)
						}
						ids = append(ids, string(id))
					}
					total += time.Since(t0)
				}
				exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel"), ids...).Run()
				rates[kind] = float64(200*b.N) / total.Seconds()
				b.ReportMetric(rates[kind], kind+"-jobs/s")
			}
			b.ReportMetric(rates["rest"]/rates["sbatch"], "rest/sbatch")
		})
	}
}

// BenchmarkRESTPollRequests200: HTTP requests per poll cycle for 200 live
// runs through slurmrest (target 1).
func BenchmarkRESTPollRequests200(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			shared := c.get("TESTCLUSTER_SHARED_DIR")
			store, err := rundir.Open(benchDir(b, shared, "restpoll"))
			if err != nil {
				b.Fatal(err)
			}
			site, err := schema.LoadSite(c.site["rest"])
			if err != nil {
				b.Fatal(err)
			}
			be, err := registry.Open(site, registry.Options{StateDir: store.Dir})
			if err != nil {
				b.Fatal(err)
			}
			rest := be.(interface{ Requests() int64 })
			ctx := context.Background()
			script := writeScript(b, store.Dir)
			var ids []backends.JobID
			for i := 0; i < 200; i++ {
				id, err := be.Submit(ctx, backends.JobRequest{Name: "bench", Dir: store.Dir, Stdout: "/dev/null", Stderr: "/dev/null",
					Script: script, Walltime: time.Minute, ExtraArgs: []string{"--hold"}})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
				store.SetActive(fmt.Sprintf("run-%03d", i), string(id), "")
			}
			defer exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel"), toStrings(ids)...).Run()
			p := &monitor.Poller{Store: store, Backend: be, Now: time.Now}
			r0 := rest.Requests()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pollCycle(b, p, ids)
			}
			b.StopTimer()
			b.ReportMetric(float64(rest.Requests()-r0)/float64(b.N), "http-requests/poll")
		})
	}
}

// sdiagCount reads one RPC type's count from sdiag.
func sdiagCount(b *testing.B, c *testCluster, rpc string) int {
	out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sdiag")).Output()
	if err != nil {
		b.Fatalf("sdiag: %v", err)
	}
	re := regexp.MustCompile(`(?m)^\s*` + rpc + `\s+\(\s*\d+\)\s+count:(\d+)`)
	m := re.FindStringSubmatch(string(out))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// BenchmarkWait50: 50 concurrent `tether wait` processes on one site cost
// one scheduler query per poll interval (target 1), counted by slurmctld
// itself (sdiag's REQUEST_JOB_INFO).
func BenchmarkWait50(b *testing.B) {
	c := needClusters(b)[0]
	shared := c.get("TESTCLUSTER_SHARED_DIR")
	bin := sharedTether(b, shared)
	for i := 0; i < b.N; i++ {
		dir := benchDir(b, shared, "wait50")
		os.WriteFile(filepath.Join(dir, "t.toml"), []byte("name='w'\ncommand=['sleep','20']\n[resources]\nwalltime='2m'\n"), 0o644)
		env := tetherEnv("TETHER_SITE="+c.site["sbatch"], "TETHER_STATE_DIR="+filepath.Join(dir, "state"))
		var runs []string
		for j := 0; j < 50; j++ {
			cmd := exec.Command(bin, "submit", "t.toml")
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.Output()
			if err != nil {
				b.Fatal(err)
			}
			runs = append(runs, lastLineJSON(b, out)["run_id"].(string))
		}
		rpc0 := sdiagCount(b, c, "REQUEST_JOB_INFO")
		t0 := time.Now()
		var waits []*exec.Cmd
		for _, r := range runs {
			cmd := exec.Command(bin, "wait", r)
			cmd.Dir, cmd.Env = dir, env
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			waits = append(waits, cmd)
		}
		for _, w := range waits {
			if err := w.Wait(); err != nil {
				b.Fatalf("tether wait: %v", err)
			}
		}
		elapsed := time.Since(t0)
		rpcs := sdiagCount(b, c, "REQUEST_JOB_INFO") - rpc0
		site, _ := schema.LoadSite(c.site["sbatch"])
		intervals := elapsed.Seconds() / site.Poll.MinInterval.D().Seconds()
		b.ReportMetric(float64(rpcs)/intervals, "job-info-RPCs/interval")
		b.ReportMetric(float64(rpcs), "job-info-RPCs")
		b.ReportMetric(elapsed.Seconds(), "s-waited")
	}
}

// benchDir makes a fresh directory under the shared dir's bench/ (the
// chroot cluster sees only the shared dir), removed when the benchmark
// ends unless it failed.
func benchDir(b *testing.B, shared, prefix string) string {
	b.Helper()
	if err := os.MkdirAll(filepath.Join(shared, "bench"), 0o755); err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Join(shared, "bench"), prefix+"-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	b.Cleanup(func() {
		if !b.Failed() {
			os.RemoveAll(dir)
		}
	})
	return dir
}

// BenchmarkRESTLiveDetail5000: one poll of 5,000 held jobs on 24.11's
// REST API (v0.0.42), with the live detail (jobs/state plus one pending
// job's full record) and without it (jobs/state only), alternately in one
// run. Target: at most 2 requests and 0.5 MB per poll with the detail.
// The jobs are submitted with sbatch (about a minute) and cancelled after.
func BenchmarkRESTLiveDetail5000(b *testing.B) {
	for _, c := range needClusters(b) {
		if c.get("TESTCLUSTER_SLURM_VERSION") != "24.11" {
			continue
		}
		b.Run(c.key, func(b *testing.B) {
			bin := c.get("TESTCLUSTER_BIN_DIR")
			dir := benchDir(b, c.get("TESTCLUSTER_SHARED_DIR"), "livedetail")
			script := fmt.Sprintf(`seq %d | xargs -P 4 -I{} %s/sbatch --parsable --hold -J tether-bench-detail -t 1 -D %s -o /dev/null --wrap true`, 5000, bin, dir)
			out, err := exec.Command("sh", "-c", script).Output()
			defer exec.Command(filepath.Join(bin, "scancel"), "-n", "tether-bench-detail").Run()
			if err != nil {
				b.Fatalf("submit: %v", err)
			}
			var ids []backends.JobID
			for _, f := range strings.Fields(string(out)) {
				ids = append(ids, backends.JobID(f))
			}
			open := func(detail bool) backends.Backend {
				site, err := schema.LoadSite(c.site["rest"])
				if err != nil {
					b.Fatal(err)
				}
				site.SlurmREST.APIVersion = "v0.0.42"
				site.SlurmREST.LiveDetail = &detail
				be, err := registry.Open(site, registry.Options{StateDir: dir})
				if err != nil {
					b.Fatal(err)
				}
				return be
			}
			type counted interface {
				Requests() int64
				ReceivedBytes() int64
			}
			with, without := open(true), open(false)
			ctx := context.Background()
			var reqs, bytes [2]int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k, be := range []backends.Backend{with, without} {
					cb := be.(counted)
					r0, b0 := cb.Requests(), cb.ReceivedBytes()
					got, err := be.Query(ctx, ids)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) != len(ids) {
						b.Fatalf("%d of %d jobs in the answer", len(got), len(ids))
					}
					reqs[k] += cb.Requests() - r0
					bytes[k] += cb.ReceivedBytes() - b0
				}
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(reqs[0])/n, "requests/poll-detail")
			b.ReportMetric(float64(bytes[0])/n/1e3, "kB/poll-detail")
			b.ReportMetric(float64(reqs[1])/n, "requests/poll-state-only")
			b.ReportMetric(float64(bytes[1])/n/1e3, "kB/poll-state-only")
		})
	}
}

// BenchmarkArray1000 compares, side by side in one run on the first test
// cluster (sbatch backend, held jobs, cancelled after): one array Task of
// 1,000 elements through `tether submit`, 1,000 `tether submit` of single
// Tasks, and 1,000 raw `sbatch --parsable`: wall time and slurmctld's
// REQUEST_SUBMIT_BATCH_JOB count (sdiag) of each. Targets: the array is at
// least 20x faster than 1,000 tether submits, and one submit RPC (two
// with [submit] max_array_size = 500, the split case). The arrays' times
// are the median of three submits, their RPCs the most of one. About
// 6,000 held jobs in all: below the test clusters' MaxJobCount of 10,000
// (past it tether rightly waits), and cancelled at the end. About two minutes:
// scripts/bench.sh runs it with -benchtime 1x; other runs skip it.
func BenchmarkArray1000(b *testing.B) {
	if b.N > 1 {
		b.Skip("one comparison takes minutes: run with -benchtime 1x (scripts/bench.sh does)")
	}
	c := needClusters(b)[0]
	shared := c.get("TESTCLUSTER_SHARED_DIR")
	bin := sharedTether(b, shared)
	dir := benchDir(b, shared, "array1000")
	held := "[scheduler]\nextra_args=['--hold']\n"
	os.WriteFile(filepath.Join(dir, "one.toml"), []byte("name='one'\ncommand=['true']\n[resources]\nwalltime='1m'\n"+held), 0o644)
	os.WriteFile(filepath.Join(dir, "arr.toml"), []byte("name='arr'\ncommand=['true']\n[resources]\nwalltime='1m'\n[array]\ncount=1000\n"+held), 0o644)
	split := filepath.Join(dir, "split-site.toml")
	base, err := os.ReadFile(c.site["sbatch"])
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(split, append(base, []byte("\n[submit]\nmax_array_size = 500\n")...), 0o644)
	env := tetherEnv("TETHER_SITE="+c.site["sbatch"], "TETHER_STATE_DIR="+filepath.Join(dir, "state"))
	scancel := filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel")
	var jobs []string
	defer func() {
		for len(jobs) > 0 {
			n := min(len(jobs), 500)
			exec.Command(scancel, jobs[:n]...).Run()
			jobs = jobs[n:]
		}
	}()
	submit := func(args ...string) map[string]any {
		cmd := exec.Command(bin, append([]string{"submit"}, args...)...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("tether submit %v: %v %s", args, err, out)
		}
		return lastLineJSON(b, out)
	}
	rpcs := func() int { return sdiagCount(b, c, "REQUEST_SUBMIT_BATCH_JOB") }
	measure := func(f func()) (time.Duration, int) {
		r0, t0 := rpcs(), time.Now()
		f()
		return time.Since(t0), rpcs() - r0
	}
	// warm up the state dir (poll cache, partition limits) for all three
	jobs = append(jobs, submit("one.toml")["job_id"].(string))
	// the arrays: the median of three submits each (one submit is a
	// fraction of a second, at the mercy of the disk and slurmctld)
	median3 := func(args ...string) (time.Duration, int) {
		var ts []time.Duration
		rpc := 0
		for range 3 {
			t, r := measure(func() {
				o := submit(args...)
				jobs = append(jobs, strings.Split(strings.Fields(o["job_id"].(string))[0], ",")...)
			})
			ts, rpc = append(ts, t), max(rpc, r)
		}
		slices.Sort(ts)
		return ts[1], rpc
	}
	arrayT, arrayR := median3("arr.toml")
	splitT, splitR := measure(func() {
		o := submit("--site", split, "arr.toml")
		jobs = append(jobs, strings.Split(strings.Fields(o["job_id"].(string))[0], ",")...)
	})
	var script string
	singleT, singleR := measure(func() {
		for i := 0; i < 1000; i++ {
			o := submit("one.toml")
			jobs = append(jobs, o["job_id"].(string))
			script = filepath.Join(o["run_dir"].(string), "attempts", "1", "job.sh")
		}
	})
	sb := filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sbatch")
	rawT, rawR := measure(func() {
		for i := 0; i < 1000; i++ {
			out, err := exec.Command(sb, "--parsable", "--hold", "--output=/dev/null", "--error=/dev/null", script).Output()
			if err != nil {
				b.Fatalf("sbatch: %v", err)
			}
			jobs = append(jobs, strings.TrimSpace(strings.Split(string(out), ";")[0]))
		}
	})
	b.ReportMetric(arrayT.Seconds(), "s/array-1000")
	b.ReportMetric(float64(arrayR), "submit-RPCs/array-1000")
	b.ReportMetric(splitT.Seconds(), "s/array-1000-split-500")
	b.ReportMetric(float64(splitR), "submit-RPCs/array-split-500")
	b.ReportMetric(singleT.Seconds(), "s/1000-tether-submit")
	b.ReportMetric(float64(singleR), "submit-RPCs/1000-tether-submit")
	b.ReportMetric(rawT.Seconds(), "s/1000-raw-sbatch")
	b.ReportMetric(float64(rawR), "submit-RPCs/1000-raw-sbatch")
	b.ReportMetric(float64(singleT)/float64(arrayT), "x-faster-than-1000-submits")
}

// BenchmarkArrayPoll1000: one poll of an array of 1,000 live (held)
// elements, through the sbatch backend (slurm commands and slurmctld's
// job-info RPCs per poll; target 2 commands, squeue and, only for ids it
// no longer knows, sacct) and the REST backend (HTTP requests and bytes
// per poll; target 1 request), on every test cluster.
func BenchmarkArrayPoll1000(b *testing.B) {
	for _, c := range needClusters(b) {
		b.Run(c.key, func(b *testing.B) {
			shared := c.get("TESTCLUSTER_SHARED_DIR")
			dir := benchDir(b, shared, "arraypoll")
			ctx := context.Background()
			sb := sbatch.New(c.get("TESTCLUSTER_BIN_DIR"), nil, true)
			arr, err := sb.SubmitArray(ctx, backends.JobRequest{Name: "bench", Dir: dir, Stdout: "/dev/null", Stderr: "/dev/null",
				Script: writeScript(b, dir), Walltime: time.Minute, ExtraArgs: []string{"--hold"}}, backends.ArraySpec{Size: 1000})
			if err != nil {
				b.Fatal(err)
			}
			defer exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scancel"), string(arr)).Run()
			ids := make([]backends.JobID, 1000)
			for i := range ids {
				ids[i] = sb.ElementID(arr, i)
			}
			site, err := schema.LoadSite(c.site["rest"])
			if err != nil {
				b.Fatal(err)
			}
			rb, err := registry.Open(site, registry.Options{StateDir: dir})
			if err != nil {
				b.Fatal(err)
			}
			rest := rb.(interface {
				Requests() int64
				ReceivedBytes() int64
			})
			check := func(got map[backends.JobID]backends.JobStatus, err error, what string) {
				if err != nil {
					b.Fatalf("%s: %v", what, err)
				}
				if len(got) != len(ids) {
					b.Fatalf("%s reported %d of %d elements", what, len(got), len(ids))
				}
			}
			calls0, rpc0 := sb.Calls(), sdiagJobInfoRPCs(b, c)
			var sbT, restT time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				got, err := sb.Query(ctx, ids)
				sbT += time.Since(t0)
				check(got, err, "squeue")
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(sb.Calls()-calls0)/n, "sbatch-slurm-commands/poll")
			b.ReportMetric(float64(sdiagJobInfoRPCs(b, c)-rpc0)/n, "sbatch-ctld-job-RPCs/poll")
			b.ReportMetric(float64(sbT.Milliseconds())/n, "sbatch-ms/poll")
			req0, bytes0, rpc1 := rest.Requests(), rest.ReceivedBytes(), sdiagJobInfoRPCs(b, c)
			b.StartTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				got, err := rb.Query(ctx, ids)
				restT += time.Since(t0)
				check(got, err, "REST")
			}
			b.StopTimer()
			b.ReportMetric(float64(sdiagJobInfoRPCs(b, c)-rpc1)/n, "rest-ctld-job-RPCs/poll")
			b.ReportMetric(float64(rest.Requests()-req0)/n, "rest-requests/poll")
			b.ReportMetric(float64(rest.ReceivedBytes()-bytes0)/n/1e3, "rest-kB/poll")
			b.ReportMetric(float64(restT.Milliseconds())/n, "rest-ms/poll")
		})
	}
}
